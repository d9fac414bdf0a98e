#!/usr/bin/env bash
# CRI conformance: runs critest (cri-tools' CRI validation suite, pinned, scripts/lib.sh
# ensure_critest) against a real containerd 2.x whose CRI runtime handler `shoji` (its default)
# runs every pod in a Shoji microVM. Everything it needs is started here and removed on exit,
# failure included: a loopback registry (Debian's docker-registry) serving locally built stand-ins
# of the images critest pulls, containerd (own root, state, socket, registry mirrors), the CNI
# network (a bridge of its own, CNI's bridge + host-local + portmap + loopback, portmap's
# iptables chains if it made them), the sandboxes. Prints critest's pass/fail/skip counts; exits
# non-zero if a spec that is not skipped fails. What is skipped and why: docs/cri-conformance.md (keep in step).
#
# usage: scripts/critest.sh [--focus REGEX] [--keep]
#   PROFILE=debug|release (default debug): whose shim (target/PROFILE/containerd-shim-shoji-v2)
#   SHOJI_GUEST_DIR: the guest image the VMs boot (`shoji image build`), as for `shoji run`
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
usage="usage: scripts/critest.sh [--focus REGEX] [--keep]"
focus= keep=
while [ $# -gt 0 ]; do
  case $1 in
    --focus) focus=${2:?--focus needs a regular expression}; shift 2 ;;
    --keep) keep=1; shift ;; # leave the work directory (logs) behind; processes still stop
    *) echo "error: unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done
profile=${PROFILE:-debug}
shim=target/$profile/containerd-shim-shoji-v2
[ -x "$shim" ] || { echo "error: $shim missing: cargo build -p shoji-shim (--release for PROFILE=release)" >&2; exit 1; }
for t in docker-registry skopeo gcc iptables iptables-save ip; do
  command -v "$t" >/dev/null || { echo "error: $t missing: . scripts/lib.sh && ensure_test_deps" >&2; exit 1; }
done
ensure_containerd
ensure_crictl
ensure_cni_plugins
critest=$(ensure_critest)

# Specs a VM runtime cannot pass, or that need what this machine lacks; each with its reason in
# docs/cri-conformance.md. Matched against the spec's full text (a regular expression).
skips=(
  # The host's namespaces: a pod's processes are in the VM, whose kernel is not the host's.
  'HostNetwork is true'
  'HostIpc is true'
  'should support HostPID'
  'portforward in host network'
  # containerd's CRI plugin forwards ports itself, dialling localhost in the pod's network
  # namespace on the host, where nothing of the VM listens; it never asks the runtime.
  'should support portforward'
  # Mount propagation between the host and the VM: virtio-fs does not carry new mounts across.
  "mount with 'rshared'"
  "mount with 'rslave'"
  # AppArmor confines host processes; the guest kernel has no AppArmor.
  'AppArmor'
  # The stand-in busybox (Debian's busybox-static) runs its applets inside sh without an exec, so
  # /dev/null masking /bin/ls does not stop `sh -c ls` (the spec expects "Permission denied").
  'should support MaskedPaths'
  # Pulls by a digest of an image in Google's registry, which cannot be rebuilt bit for bit.
  'public image with digest should be pulled and removed'
)
skip_re=$(IFS='|'; echo "${skips[*]}")

# Specs that run and fail today although a VM runtime can pass them: work not done yet, each
# with its reason in docs/cri-conformance.md ("Failing"). They are run and counted as failures;
# only a failure outside this list fails the script, and one of them passing is reported so
# that the list shrinks. Regular expressions matched against the failed spec's line.
known_failures=(
)

# A short path: a sandbox's sockets are <sandbox root>/<64-hex pod id>/..., and a Unix socket's
# path has at most 107 bytes.
work=$(mktemp -d /tmp/cri.XXXXXX)
registry_pid= containerd_pid= bridge= made_chains=()
# portmap's top-level chains in the nat table, and the built-in chains that jump to them.
hostport_chains=(CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ)
# Removes the jumps to nat chain $1 (by rule number: the rules carry quoted comments) and the
# chain itself.
remove_nat_chain() {
  local hook n
  for hook in PREROUTING OUTPUT POSTROUTING; do
    while n=$(iptables -t nat -L "$hook" -n --line-numbers 2>/dev/null |
        awk -v c="$1" '$2 == c { print $1; exit }') && [ -n "$n" ]; do
      iptables -t nat -D "$hook" "$n" 2>/dev/null || break
    done
  done
  iptables -t nat -F "$1" 2>/dev/null || true
  iptables -t nat -X "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$? p m
  trap - EXIT INT TERM
  if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
    # Pods left by a failed spec: their VMs stop through containerd, as a kubelet would.
    timeout 120 "$SHOJI_CRICTL" --config "$work/crictl.yaml" rmp --force --all >/dev/null 2>&1 || true
    kill "$containerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$containerd_pid" 2>/dev/null || true
  fi
  [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
  # CNI's DEL (rmp above) removed each pod's veth and chains; the bridge and portmap's top-level
  # chains stay unless removed: only those this run made.
  [ -z "$bridge" ] || ip link del "$bridge" 2>/dev/null || true
  for c in "${made_chains[@]}"; do remove_nat_chain "$c"; done
  # Shims, QEMU and its helpers all name the work directory on their command lines.
  for p in $(pgrep -f "$work" || true); do
    [ "$p" = $$ ] || kill -9 "$p" 2>/dev/null || true
  done
  # Mounts (rootfs overlays, network namespaces, shm): innermost first.
  for m in $(awk -v w="$work" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  if [ -n "$keep" ]; then say "critest's work directory kept: $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- the registry ---------------------------------------------------------------------------
port=$(free_port)
registry=127.0.0.1:$port
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
EOF
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$registry/v2/" >/dev/null || { cat "$work/registry.log" >&2; echo "error: the registry did not start" >&2; exit 1; }

# --- the images critest pulls ---------------------------------------------------------------
# Stand-ins built from busybox-static with what cri-tools' recipes (images/ in its source) and
# the specs require of each. Pushed as REPO:TAG; containerd reaches them through the mirrors.
say "building critest's images and pushing them to the registry at $registry"
t0=$SECONDS
src=scripts/critest
push() { # layout repo:tag...
  local layout=$1 ref; shift
  for ref in "$@"; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout" "docker://$registry/$ref" >/dev/null
  done
}
image() { # name [make-busybox-image args...] : builds layout $work/images/name
  local name=$1; shift
  scripts/make-busybox-image.sh "$work/images/$name" "$@" >/dev/null
}
# busybox's usual users and groups (www-data, nobody: RunAsUserName, the image users), and what
# the specs run that Debian's busybox-static lacks: pgrep (a script) and util-linux's ipcs with
# the C library it links.
etc=$work/extra-etc
mkdir -p "$etc/etc" "$etc/usr/bin"
cp "$src/passwd" "$src/group" "$etc/etc/"
cp "$src/pgrep" "$etc/usr/bin/"
ipcs=$(command -v ipcs) || { echo "error: ipcs (util-linux) missing" >&2; exit 1; }
cp "$ipcs" "$etc/usr/bin/ipcs"
for lib in $(ldd "$ipcs" | grep -o '/[^ ]*'); do
  mkdir -p "$etc$(dirname "$lib")" && cp -L "$lib" "$etc$lib"
done
with_file() { # dir file : a copy of the users and groups plus an empty /file (cri-tools' image-test)
  mkdir -p "$1" && cp -a "$etc/." "$1/" && : > "$1/$2"
}
image pause --pause
push "$work/images/pause" pause:3.10
# pause:3.9 (pulled from two registry names by the image identity specs) must be an image of its
# own: one more tag on containerd's sandbox image would be counted among its tags.
mkdir -p "$work/extra-pause-3.9" && echo 3.9 > "$work/extra-pause-3.9/version"
image pause-3.9 --pause --extra "$work/extra-pause-3.9"
push "$work/images/pause-3.9" pause:3.9
image busybox --extra "$etc"
push "$work/images/busybox" e2e-test-images/busybox:1.29-2
for t in 1 2 3 latest; do
  with_file "$work/extra-$t" "test-image-$t"
  image "test-$t" --extra "$work/extra-$t"
  push "$work/images/test-$t" "k8s-staging-cri-tools/test-image-$t:latest"
done
with_file "$work/extra-same" same-image
image same --extra "$work/extra-same"
push "$work/images/same" k8s-staging-cri-tools/test-image-tags:{1,2,3}
for t in test all; do
  with_file "$work/extra-tag-$t" "$t"
  image "tag-$t" --extra "$work/extra-tag-$t"
  push "$work/images/tag-$t" "k8s-staging-cri-tools/test-image-tag:$t"
done
for u in uid:1002 username:www-data uid-group:1003:1004 username-group:www-data:1004; do
  image "user-${u%%:*}" --extra "$etc" --user "${u#*:}"
  push "$work/images/user-${u%%:*}" "k8s-staging-cri-tools/test-image-user-${u%%:*}:latest"
done
# image-predefined-group: user default-user (1000), also in group-defined-in-image (50000).
mkdir -p "$work/extra-group" && cp -a "$etc/." "$work/extra-group/"
echo 'default-user:x:1000:1000::/home/default-user:/bin/sh' >> "$work/extra-group/etc/passwd"
printf 'default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' >> "$work/extra-group/etc/group"
mkdir -p "$work/extra-group/home/default-user"
image predefined-group --extra "$work/extra-group" --user 1000
push "$work/images/predefined-group" k8s-staging-cri-tools/test-image-predefined-group:latest
# nginx and httpd: web servers on port 80; nginx as its container's PID 1 ("master process").
mkdir -p "$work/extra-web/usr/sbin" "$work/extra-web/var/run" "$work/extra-web/usr/share/nginx/html"
cp -a "$etc/." "$work/extra-web/"
cp "$src/nginx.sh" "$work/extra-web/usr/sbin/nginx"
echo '<h1>Shoji critest web server</h1>' > "$work/extra-web/usr/share/nginx/html/index.html"
image nginx --extra "$work/extra-web" \
  --entrypoint '["/bin/sh","/usr/sbin/nginx","master process","nginx -g daemon off;"]' --cmd '[]'
push "$work/images/nginx" e2e-test-images/nginx:1.14-2
# httpd: says "httpd" in its log at start (the multi-container log spec waits for it).
image httpd --extra "$work/extra-web" --cmd '[]' --entrypoint \
  '["/bin/sh","-c","echo httpd: serving HTTP on port 80 >&2; exec httpd -f -p 80 -h /usr/share/nginx/html"]'
push "$work/images/httpd" e2e-test-images/httpd:2.4.39-4
# nonewprivs: a set-user-ID root program printing its effective uid.
mkdir -p "$work/extra-nnp/usr/local/bin" && cp -a "$etc/." "$work/extra-nnp/"
gcc -static -Os -s -o "$work/extra-nnp/usr/local/bin/nnp" "$src/nonewprivs.c"
chmod 4755 "$work/extra-nnp/usr/local/bin/nnp"
image nnp --extra "$work/extra-nnp" --entrypoint '["/usr/local/bin/nnp"]' --cmd '[]'
push "$work/images/nnp" e2e-test-images/nonewprivs:1.3

say "images ready ($((SECONDS - t0))s)"

# Registry host configuration: every registry name critest pulls from is mirrored to the
# loopback registry (same repository paths), plain HTTP.
for host in registry.k8s.io k8s.gcr.io gcr.io; do
  mkdir -p "$work/certs.d/$host"
  cat > "$work/certs.d/$host/hosts.toml" <<EOF
server = "https://$host"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
EOF
done

# --- containerd -----------------------------------------------------------------------------
# CNI: the pods on a bridge of this run's own at 10.89.N.1/24 (N a subnet no address or route of
# the host uses), as a node's pod network: bridge (no gateway role: the host's IP forwarding is
# not switched on; no masquerading), host-local (a default route through the bridge), portmap
# (hostPort DNAT, and SNAT for connections from 127.0.0.1, which critest makes), loopback.
# Removed on exit, with portmap's top-level iptables chains if they were not there before.
mkdir -p "$work/cni" "$work/sb"
used="$(ip -4 -o addr) $(ip -4 route)"
subnet=
for i in $(seq 0 149); do
  n=$((100 + ($$ + i) % 150))
  case $used in *"10.89.$n."*) ;; *) subnet=$n; break ;; esac
done
[ -n "$subnet" ] || { echo "error: no free 10.89.N.0/24 subnet for critest's pod network" >&2; exit 1; }
nat=$(iptables-save -t nat)
for c in "${hostport_chains[@]}"; do
  case $nat in *":$c "*) ;; *) made_chains+=("$c") ;; esac
done
bridge=shojicri$(($$ % 1000000))
ip link add name "$bridge" type bridge
ip addr add "10.89.$subnet.1/24" dev "$bridge"
ip link set "$bridge" up
cat > "$work/cni/10-shoji-critest.conflist" <<EOF
{"cniVersion":"1.0.0","name":"shoji-critest-$subnet","plugins":[
 {"type":"bridge","bridge":"$bridge","isGateway":false,"ipMasq":false,
  "ipam":{"type":"host-local","dataDir":"$work/cni-ipam",
   "ranges":[[{"subnet":"10.89.$subnet.0/24","rangeStart":"10.89.$subnet.10","rangeEnd":"10.89.$subnet.250","gateway":"10.89.$subnet.1"}]],
   "routes":[{"dst":"0.0.0.0/0","gw":"10.89.$subnet.1"}]}},
 {"type":"portmap","backend":"iptables","snat":true,"capabilities":{"portMappings":true}},
 {"type":"loopback"}]}
EOF
printf '[runtime]\nsandbox_root = "%s/sb"\n' "$work" > "$work/shoji.toml"
write_cri_config "$work" registry.k8s.io/pause:3.10
cat >> "$work/config.toml" <<EOF
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "$work/certs.d"
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "shoji"
EOF
endpoint=unix://$work/containerd.sock
printf 'runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n' "$endpoint" "$endpoint" > "$work/crictl.yaml"
PATH="$PWD/target/$profile:$PATH" SHOJI_CONFIG=$work/shoji.toml \
  "$SHOJI_CONTAINERD" --config "$work/config.toml" > "$work/containerd.log" 2>&1 < /dev/null &
containerd_pid=$!
for _ in $(seq 300); do
  "$SHOJI_CRICTL" --config "$work/crictl.yaml" info >/dev/null 2>&1 && break; sleep 0.1
done
"$SHOJI_CRICTL" --config "$work/crictl.yaml" info >/dev/null || {
  tail -30 "$work/containerd.log" >&2; echo "error: containerd's CRI did not come up" >&2; exit 1; }

# --- critest --------------------------------------------------------------------------------
say "critest $CRI_TOOLS_VERSION against containerd $CONTAINERD_VERSION, runtime handler shoji"
args=(-runtime-endpoint "$endpoint" -image-endpoint "$endpoint" -runtime-handler shoji
  -ginkgo.no-color -ginkgo.skip "$skip_re" -ginkgo.junit-report "$work/junit.xml")
[ -z "$focus" ] || args+=(-ginkgo.focus "$focus")
start=$SECONDS
rc=0
(cd "$work" && "$critest" "${args[@]}") > "$work/critest.log" 2>&1 || rc=$?
took=$((SECONDS - start))
failed_lines=$(grep -a -E '^\s*\[(FAIL|PANICKED|TIMEDOUT)\]' "$work/critest.log" | sed 's/^ */    /' | sort -u || true)
[ -z "$failed_lines" ] || printf '%s\n' "$failed_lines" >&2
# Ginkgo's summary: "Ran N of M Specs in ...", then "... -- P Passed | F Failed | 0 Pending |
# S Skipped". grep -a: the log holds NUL bytes (a spec prints /proc/1/cmdline).
summary=$(grep -a -E 'Passed \| [0-9]+ Failed' "$work/critest.log" | tail -1 | sed 's/.*-- //' || true)
ran=$(grep -a -E '^Ran [0-9]+ of [0-9]+ Specs' "$work/critest.log" | tail -1 || true)
if [ -z "$summary" ]; then
  tail -50 "$work/critest.log" >&2
  echo "error: critest ended (status $rc) without a summary" >&2
  exit 1
fi
say "critest: $summary ($ran; ${took}s); skipped by name: ${#skips[@]} patterns (docs/cri-conformance.md)"
if [ "$rc" != 0 ] && [ -z "$focus" ]; then
  # Failures outside the known list fail the run; the known ones are reported. An empty list
  # must match nothing ('x^' cannot; grep -E '' would match every line).
  known_re='x^'
  [ ${#known_failures[@]} = 0 ] || known_re=$(IFS='|'; echo "${known_failures[*]}")
  unexpected=$(printf '%s\n' "$failed_lines" | grep -v -E "$known_re" | grep . || true)
  known=$(printf '%s\n' "$failed_lines" | grep -c -E "$known_re" || true)
  for k in "${known_failures[@]}"; do
    printf '%s\n' "$failed_lines" | grep -q -E "$k" ||
      say "known failure '$k' did not fail this time: remove it from known_failures and the docs"
  done
  if [ -z "$unexpected" ] && [ -n "$summary" ] && grep -a -q -E 'Ran [0-9]+ of' "$work/critest.log"; then
    say "critest: $known failed spec(s), all known (docs/cri-conformance.md, Failing); no other failure"
    rc=0
  else
    say "critest: failures outside the known list:"; printf '%s\n' "$unexpected" >&2
  fi
fi
[ "$rc" = 0 ] || [ -n "$keep" ] || say "the failures' details: scripts/critest.sh --keep --focus 'SPEC TEXT', then critest.log"
exit "$rc"
