#!/usr/bin/env bash
# CRI benchmark: pod start to first container running (crictl runp + create + start), Shoji
# (handler `shoji`, a microVM per pod) against runc (handler `runc`: a pinned runc under
# containerd's runc shim, scripts/lib.sh's ensure_runc) on the same machine, alternating, N
# rounds (default 5), through one containerd 2.x of the script's own (root, state, sockets, CNI:
# a TAP device alone in each pod's network namespace, as the shim's tests use). containerd's
# tracing is on for both, exporting to a `shoji trace serve` of the script's own; from those
# traces, the share of Shoji's pod start each layer takes (containerd, the shim, the VM's start,
# the guest's boot, the agent).
# While each Shoji pod's container runs: the host memory (PSS and RSS, /proc/PID/smaps_rollup)
# of its shim, QEMU, virtiofsd and vhost-device-vsock, and of runc's shim for runc's pod.
#
# Needs root, Shoji built (`scripts/build-agent.sh`, `shoji image build`; the release build if
# there is one, else the debug one) and what scripts/lib.sh's ensure_* install. A benchmark,
# not a test: scripts/test.sh does not run it. Figures and how to read them: docs/benchmarks.md.
#
# usage: scripts/bench-cri.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
n=${1:-5}
ensure_containerd
ensure_crictl
ensure_cni_plugins
ensure_runc
profile=release
[ -x target/release/containerd-shim-shoji-v2 ] && [ -x target/release/shoji ] || profile=debug
shim=$PWD/target/$profile/containerd-shim-shoji-v2
shoji=$PWD/target/$profile/shoji
for b in "$shim" "$shoji"; do
  [ -x "$b" ] || { echo "error: $b missing: cargo build -p shoji-shim -p shoji-cli" >&2; exit 1; }
done

# Short: the sandbox directories hold Unix sockets (108 bytes at most), named by 64-hex pod ids.
work=$(mktemp -d /tmp/sbc.XXXXXX)
containerd_pid= serve_pid=
cleanup() {
  set +e
  if [ -n "$containerd_pid" ]; then
    crictl rmp --force --all >/dev/null 2>&1
    kill "$containerd_pid"; wait "$containerd_pid" 2>/dev/null
  fi
  [ -n "$serve_pid" ] && { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null; }
  grep -F "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bin" "$work/cni" "$work/logs"
ln -s "$shim" "$work/bin/containerd-shim-shoji-v2"
ln -s "$SHOJI_RUNC_SHIM" "$work/bin/containerd-shim-runc-v2"
# runc's shim runs the `runc` it finds on PATH: the pinned one, not Debian's.
ln -s "$SHOJI_RUNC" "$work/bin/runc"
scripts/make-busybox-image.sh "$work/busybox" --tar "$work/busybox.tar" >/dev/null
scripts/make-busybox-image.sh "$work/pause" --tar "$work/pause.tar" --pause >/dev/null
printf '[runtime]\nsandbox_root = "%s/s"\n' "$work" > "$work/shoji.toml"
cat > "$work/cni/10-tap.conflist" <<EOF
{"cniVersion":"1.0.0","name":"bench-tap","plugins":[{"type":"tap","ipam":{"type":"static","addresses":[{"address":"192.0.2.2/24"}]}}]}
EOF
# CRI gives a pod's sandbox (pause) container oom_score_adj -998; lowering a score needs
# CAP_SYS_RESOURCE, which some hosts (this project's build machines) do not give even root, and
# runc then fails every pod ("can't get final child's PID from pipe: EOF", nsexec: "failed to
# update /proc/self/oom_score_adj: Permission denied"). Restricted, no score goes below
# containerd's own. Shoji's shim sets no score on the host.
write_cri_config "$work" docker.io/library/pause:3.10 "  restrict_oom_score_adj = true"
cat >> "$work/config.toml" <<EOF
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    sandboxer = "podsandbox"
EOF

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
otlp=$(port) query=$(port)
"$shoji" trace serve --data-dir "$work/traces" --grpc-port 0 --http-port "$otlp" \
  --zipkin-port 0 --query-port "$query" >"$work/serve.log" 2>&1 &
serve_pid=$!
PATH="$work/bin:$PATH" SHOJI_CONFIG="$work/shoji.toml" \
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_SERVICE_NAME=containerd \
  "$SHOJI_CONTAINERD" --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
ctr() { "$SHOJI_CTR" --address "$work/containerd.sock" --namespace k8s.io "$@"; }
endpoint="unix://$work/containerd.sock"
printf 'runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 120\n' "$endpoint" "$endpoint" > "$work/crictl.yaml"
crictl() { "$SHOJI_CRICTL" --config "$work/crictl.yaml" "$@"; }
for _ in $(seq 300); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr images import "$work/pause.tar" >/dev/null
ctr images tag --force pause:3.10 docker.io/library/pause:3.10 >/dev/null
ctr images import "$work/busybox.tar" >/dev/null
ctr images tag --force busybox:latest docker.io/library/busybox:latest >/dev/null
for _ in $(seq 300); do crictl inspecti docker.io/library/pause:3.10 >/dev/null 2>&1 && break; sleep 0.1; done

# pod.json NAME, container.json: as a kubelet would send them (no pull).
pod_json() {
  printf '{"metadata":{"name":"%s","namespace":"default","uid":"%s-uid","attempt":0},"log_directory":"%s/logs","linux":{}}' \
    "$1" "$1" "$work" > "$work/$1.json"
}
printf '{"metadata":{"name":"app"},"image":{"image":"docker.io/library/busybox:latest"},"command":["sleep","1000"],"log_path":"app.log","linux":{}}' \
  > "$work/app.json"

# mem PID... : PSS and RSS in KiB, summed.
mem() {
  local pid pss=0 rss=0
  for pid in "$@"; do
    pss=$((pss + $(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup")))
    rss=$((rss + $(awk '/^Rss:/{print $2}' "/proc/$pid/smaps_rollup")))
  done
  echo "$pss $rss"
}
# pids_naming NEEDLE PATTERN : processes whose command line has both.
pids_naming() { pgrep -f "$2" | while read -r p; do
  tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$1" && echo "$p"; done; true; }

echo "$(date -u +%FT%TZ): $profile build, load average $(cut -d' ' -f1-3 /proc/loadavg) before"
: > "$work/times" ; : > "$work/mem"
for i in $(seq "$n"); do
  for h in shoji runc; do
    pod_json "$h-$i"
    s=$(date +%s%N)
    pod=$(crictl runp --runtime "$h" "$work/$h-$i.json")
    c=$(crictl create --no-pull "$pod" "$work/app.json" "$work/$h-$i.json")
    crictl start "$c" >/dev/null
    e=$(date +%s%N)
    echo "$h $(((e - s) / 1000000)) $pod" >> "$work/times"
    if [ "$h" = shoji ]; then
      sb=$work/s/$pod
      echo "shim $(mem $(pids_naming "$pod" containerd-shim-shoji-v2))" >> "$work/mem"
      echo "qemu $(mem $(pids_naming "$sb" qemu-system))" >> "$work/mem"
      echo "virtiofsd $(mem $(pids_naming "$sb" virtiofsd))" >> "$work/mem"
      echo "vhost-device-vsock $(mem $(pids_naming "$sb" vhost-device-vsock))" >> "$work/mem"
    else
      echo "runc-shim $(mem $(pids_naming "$pod" containerd-shim-runc-v2))" >> "$work/mem"
    fi
    crictl stopp "$pod" >/dev/null
    crictl rmp "$pod" >/dev/null
  done
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) after"
# The shims export their last spans as they exit; give the store a moment.
sleep 3

python3 - "$work/times" "$work/mem" "http://127.0.0.1:$query" "$n" <<'EOF'
import json, statistics, sys, urllib.request
times, mem, api, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [l.split() for l in open(times)]
by = {h: [int(ms) for hh, ms, _ in rows if hh == h] for h in ("shoji", "runc")}
med = {h: statistics.median(v) for h, v in by.items()}
print(f"pod start to first container running (crictl runp + create + start), {n} rounds, alternating")
for h in ("shoji", "runc"):
    print(f"  {h:6} median {med[h]:7.0f} ms  (min {min(by[h])}, max {max(by[h])})")
print(f"  shoji / runc: {med['shoji'] / med['runc']:.2f}x, +{med['shoji'] - med['runc']:.0f} ms")

m = {}
for l in open(mem):
    what, pss, rss = l.split()
    m.setdefault(what, []).append((int(pss), int(rss)))
print("host memory while the pod's container runs (median over pods, MiB)")
for what, v in m.items():
    pss = statistics.median(p for p, _ in v) / 1024
    rss = statistics.median(r for _, r in v) / 1024
    print(f"  {what:19} PSS {pss:6.1f}  RSS {rss:6.1f}")

def get(path):
    with urllib.request.urlopen(api + path) as r:
        return json.load(r)["data"]

# Each CRI request is one trace: containerd's CRI span at its root, the shim's task requests
# below it, vm.start and the guest's boot in the shim's Create, the agent's spans below those.
# Each instant of a request (its root's span) goes to the deepest layer at work then:
# containerd < the shim < the VM's start (helpers, QEMU) < the guest's boot (guest.boot and
# what it holds: the firmware, the kernel, the agent's start) < the agent's requests. The
# container's wait (`container.wait`, from create until the init exits, and everything under
# it) is left out: it waits for the workload, it does not start it.
pods = {pod for h, _, pod in rows if h == "shoji"}
traces = get("/api/traces?service=containerd&limit=1000")
LAYERS = ("containerd", "shim", "vm.start", "guest boot", "agent")
VM = {"vm.start", "helper.start", "qemu.launch"}
BOOT = {"guest.boot", "vm.firmware", "agent.boot", "kernel.boot", "agent.setup", "modules.load", "agent.start"}
def layer(s, svc):
    name = s["operationName"]
    if name in BOOT:
        return 3
    if name in VM:
        return 2
    return {"containerd": 0, "shoji-shim": 1, "shoji-agent": 4}.get(svc, 0)
per_op = {}
for t in traces:
    spans = t["spans"]
    svc = {p: v["serviceName"] for p, v in t["processes"].items()}
    by_id = {s["spanID"]: s for s in spans}
    parent = {}
    for s in spans:
        for r in s.get("references", []):
            if r["refType"] == "CHILD_OF" and r["spanID"] in by_id:
                parent[s["spanID"]] = r["spanID"]
                break
    roots = [s for s in spans if s["spanID"] not in parent]
    if len(roots) != 1:
        continue
    root = roots[0]
    op = root["operationName"].rsplit("/", 1)[-1]
    if op not in ("RunPodSandbox", "CreateContainer", "StartContainer"):
        continue
    if not any(p in json.dumps(spans) for p in pods):
        continue
    def waiting(s):
        while s is not None:
            if s["operationName"] == "container.wait":
                return True
            s = by_id.get(parent.get(s["spanID"]))
        return False
    a, b = root["startTime"], root["startTime"] + root["duration"]
    iv = [(max(a, s["startTime"]), min(b, s["startTime"] + s["duration"]), layer(s, svc[s["processID"]]))
          for s in spans if not waiting(s)]
    cuts = sorted({x for lo, hi, _ in iv for x in (lo, hi) if a <= x <= b} | {a, b})
    share = [0.0] * len(LAYERS)
    for lo, hi in zip(cuts, cuts[1:]):
        deepest = max((l for x, y, l in iv if x <= lo and hi <= y), default=0)
        share[deepest] += (hi - lo) / 1000
    per_op.setdefault(op, []).append([root["duration"] / 1000] + share)
print("Shoji's pod start by layer, from the traces: each instant of a CRI request to the deepest")
print("layer at work (median ms over pods; the container's wait left out)")
print(f"  {'request':16} {'n':>2} {'total':>7} " + " ".join(f"{l:>10}" for l in LAYERS))
sums = None
for op in ("RunPodSandbox", "CreateContainer", "StartContainer"):
    v = per_op.get(op)
    if not v:
        continue
    cols = [statistics.median(x[k] for x in v) for k in range(1 + len(LAYERS))]
    sums = cols if sums is None else [p + q for p, q in zip(sums, cols)]
    print(f"  {op:16} {len(v):2} {cols[0]:7.0f} " + " ".join(f"{c:10.0f}" for c in cols[1:]))
if sums:
    print(f"  {'the three':16} {'':2} {sums[0]:7.0f} " + " ".join(f"{c:10.0f}" for c in sums[1:]))
    print("  share           " + "    " + f"{'':7} " + " ".join(f"{100 * c / sums[0]:9.0f}%" for c in sums[1:]))
    print(f"  outside the three requests' traces (crictl's own start-up, between calls): "
          f"{med['shoji'] - sums[0]:.0f} ms of the {med['shoji']:.0f} ms median")
EOF
