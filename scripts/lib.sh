# Shared by setup.sh and test.sh: install what is missing, fast when nothing is.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: '$*' needs root and sudo is not installed" >&2; return 1; fi
}

# ensure_debian_packages PKG... : installs the ones dpkg does not know as installed.
ensure_debian_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The apt lists are needed by `shoji image build` (apt-get download of the kernel package).
ensure_apt_lists() {
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 && \
     ! ls /var/lib/apt/lists/*_Packages.* >/dev/null 2>&1; then
    say "apt-get update (package lists are empty)"
    as_root apt-get update -qq
  fi
}

# ensure_cargo_tool BINARY CRATE : cargo install --locked CRATE unless BINARY is found.
ensure_cargo_tool() {
  if command -v "$1" >/dev/null || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$1" ]; then return 0; fi
  say "cargo install $2 (a few minutes, once)"
  cargo install --locked --quiet "$2"
}

ensure_host_deps() {
  ensure_debian_packages qemu-system-x86 busybox-static cpio lz4 zstd gzip file bc \
    libseccomp-dev libcap-ng-dev pkg-config protobuf-compiler ca-certificates libssl-dev mold
  # Shoji's guest kernel (`shoji image build`, ADR 014): Debian's kernel source, its tools, and
  # `patch` for crates/shoji-image/kernel/patches.
  ensure_debian_packages linux-source-6.1 make gcc libc6-dev bison flex libelf-dev xz-utils patch
  ensure_apt_lists
  ensure_cargo_tool vhost-device-vsock vhost-device-vsock
  ensure_cargo_tool virtiofsd virtiofsd
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
}

# ensure_go_tool NAME VERSION PACKAGE [BINARY [TAGS]] : prints the path of PACKAGE's binary, built
# once from the tools module scripts/go-tools/NAME (its go.mod pins VERSION; go.sum is committed)
# into ~/.cache/shoji/go-tools/BINARY-VERSION (BINARY defaults to NAME), outside the clone, with
# the Go build tags TAGS. Modules with `replace` lines (Jaeger) cannot be `go install`ed at a
# version, hence one small module per tool (one module may hold several tools: containerd, ctr).
ensure_go_tool() {
  local name=$1 version=$2 pkg=$3 bin=${4:-$1} tags=${5:-} dir go
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/shoji/go-tools"
  if [ -x "$dir/$bin-$version" ]; then echo "$dir/$bin-$version"; return 0; fi
  go=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go" ] || { echo "error: building $bin needs Go (https://go.dev/dl), not found" >&2; return 1; }
  grep -q "$version" "scripts/go-tools/$name/go.mod" || {
    echo "error: scripts/go-tools/$name/go.mod does not pin $version" >&2; return 1; }
  say "building $bin $version with Go (several minutes, once)"
  mkdir -p "$dir"
  (cd "scripts/go-tools/$name" && GOFLAGS=-mod=readonly nice "$go" build -trimpath -tags "$tags" \
    -o "$dir/$bin-$version.tmp" "$pkg") &&
    mv "$dir/$bin-$version.tmp" "$dir/$bin-$version" && echo "$dir/$bin-$version"
}

# The Jaeger all-in-one the tests compare Shoji's API with (version pinned in its tools module).
JAEGER_VERSION=v1.76.0
ensure_jaeger() {
  ensure_go_tool jaeger "$JAEGER_VERSION" github.com/jaegertracing/jaeger/cmd/jaeger
}

# containerd 2.x and ctr for the shim's VM tests (crates/shoji-shim/tests): Debian's containerd
# is 1.6, which passes no trace context to shims. The btrfs snapshotter needs cgo headers the
# tests do not use, hence `no_btrfs`. SHOJI_CONTAINERD and SHOJI_CTR tell the tests where they are.
CONTAINERD_VERSION=v2.4.2
ensure_containerd() {
  SHOJI_CONTAINERD=$(ensure_go_tool containerd "$CONTAINERD_VERSION" \
    github.com/containerd/containerd/v2/cmd/containerd containerd no_btrfs) &&
    SHOJI_CTR=$(ensure_go_tool containerd "$CONTAINERD_VERSION" \
      github.com/containerd/containerd/v2/cmd/ctr ctr no_btrfs) &&
    export SHOJI_CONTAINERD SHOJI_CTR
}

# Debian's containerd 1.6 and its ctr, for the shim's test with a containerd older than 2.0
# (crates/shoji-shim/tests/containerd_1_6_drives_the_shim.rs): the package is fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into ~/.cache/shoji/containerd-1.6, never
# installed (nothing in /usr/bin changes). SHOJI_CONTAINERD16 and SHOJI_CTR16 tell the tests
# where they are.
ensure_containerd16() {
  local dir tmp version out
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/shoji/containerd-1.6"
  if [ ! -x "$dir/usr/bin/containerd" ] || [ ! -x "$dir/usr/bin/ctr" ]; then
    ensure_apt_lists
    say "fetching Debian's containerd 1.6 (apt-get download, unpacked into $dir)"
    tmp=$(mktemp -d "${XDG_CACHE_HOME:-$HOME/.cache}/shoji/containerd-1.6.XXXXXX") || return 1
    out=$(cd "$tmp" && apt-get download -qq containerd 2>&1) &&
      version=$(dpkg-deb -f "$tmp"/containerd_*.deb Version) ||
      { echo "error: apt-get download containerd failed: $out" >&2; rm -rf "$tmp"; return 1; }
    case $version in
      1.6.*) ;;
      *) echo "error: Debian's containerd is $version here, not 1.6" >&2; rm -rf "$tmp"; return 1 ;;
    esac
    dpkg-deb -x "$tmp"/containerd_*.deb "$tmp/root" && rm -rf "$dir" && mv "$tmp/root" "$dir" &&
      rm -rf "$tmp" || { rm -rf "$tmp"; return 1; }
  fi
  SHOJI_CONTAINERD16="$dir/usr/bin/containerd" SHOJI_CTR16="$dir/usr/bin/ctr" &&
    export SHOJI_CONTAINERD16 SHOJI_CTR16
}

# runc and containerd's runc shim, for scripts/bench-cri.sh only (Shoji against runc through
# CRI); no test uses them. runc is built from the Go module proxy at a pinned version (its tools
# module), with seccomp (Debian's libseccomp-dev, from ensure_host_deps), as runc's Makefile
# builds it, so the benchmark compares against a current runc. (Pods failing with "can't get
# final child's PID from pipe: EOF" on machines whose root lacks CAP_SYS_RESOURCE come from
# CRI's oom_score_adj -998, not from runc's version: bench-cri.sh sets restrict_oom_score_adj.)
# SHOJI_RUNC and SHOJI_RUNC_SHIM tell where they are.
RUNC_VERSION=v1.4.4
ensure_runc() {
  SHOJI_RUNC=$(ensure_go_tool runc "$RUNC_VERSION" github.com/opencontainers/runc runc \
    "seccomp urfave_cli_no_docs") &&
    SHOJI_RUNC_SHIM=$(ensure_go_tool containerd "$CONTAINERD_VERSION" \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 containerd-shim-runc-v2 no_btrfs) &&
    export SHOJI_RUNC SHOJI_RUNC_SHIM
}

# crictl (cri-tools) for the shim's CRI VM tests: drives containerd's CRI plugin as the kubelet
# would. SHOJI_CRICTL tells the tests where it is.
CRI_TOOLS_VERSION=v1.37.0
ensure_crictl() {
  SHOJI_CRICTL=$(ensure_go_tool cri-tools "$CRI_TOOLS_VERSION" \
    sigs.k8s.io/cri-tools/cmd/crictl crictl) && export SHOJI_CRICTL
}

# critest (cri-tools' CRI validation suite, scripts/critest.sh) is a Go test binary: `go test -c`
# of its command package, as cri-tools' Makefile builds it, from the same pinned tools module as
# crictl. Prints its path (~/.cache/shoji/go-tools/critest-VERSION).
ensure_critest() {
  local dir go
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/shoji/go-tools"
  if [ -x "$dir/critest-$CRI_TOOLS_VERSION" ]; then echo "$dir/critest-$CRI_TOOLS_VERSION"; return 0; fi
  go=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go" ] || { echo "error: building critest needs Go (https://go.dev/dl), not found" >&2; return 1; }
  say "building critest $CRI_TOOLS_VERSION with Go (a few minutes, once)"
  mkdir -p "$dir"
  (cd scripts/go-tools/cri-tools && GOFLAGS=-mod=readonly nice "$go" test -c -trimpath \
    -o "$dir/critest-$CRI_TOOLS_VERSION.tmp" sigs.k8s.io/cri-tools/cmd/critest) &&
    mv "$dir/critest-$CRI_TOOLS_VERSION.tmp" "$dir/critest-$CRI_TOOLS_VERSION" &&
    echo "$dir/critest-$CRI_TOOLS_VERSION"
}

# CNI plugins for the shim's CRI VM tests, built into one directory (containerd finds a plugin by
# its type name there): loopback, tap and the static IPAM. containerd's CRI plugin insists on a
# pod IP from CNI; a TAP device eth0 with a static address inside the pod's network namespace
# gives it one without touching the host's network (no dummy or veth: the first is missing from
# some host kernels, the second needs a host end). The VM is not plugged into it: real CNI
# networking is not done yet. SHOJI_CNI_DIR tells the tests where they are.
CNI_PLUGINS_VERSION=v1.10.0
ensure_cni_plugins() {
  local dir go p pkgs=()
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/shoji/go-tools/cni-plugins-$CNI_PLUGINS_VERSION"
  if [ ! -x "$dir/portmap" ]; then
    go=$(command -v go || echo /usr/local/go/bin/go)
    [ -x "$go" ] || { echo "error: building the CNI plugins needs Go, not found" >&2; return 1; }
    grep -q "$CNI_PLUGINS_VERSION" scripts/go-tools/cni-plugins/go.mod || {
      echo "error: scripts/go-tools/cni-plugins/go.mod does not pin $CNI_PLUGINS_VERSION" >&2; return 1; }
    say "building the CNI plugins $CNI_PLUGINS_VERSION with Go (a minute, once)"
    for p in main/loopback main/tap ipam/static main/bridge ipam/host-local meta/portmap; do
      pkgs+=("github.com/containernetworking/plugins/plugins/$p")
    done
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" &&
      (cd scripts/go-tools/cni-plugins && GOFLAGS=-mod=readonly nice "$go" build -trimpath \
        -o "$dir.tmp/" "${pkgs[@]}") &&
      rm -rf "$dir" && mv "$dir.tmp" "$dir" || return 1
  fi
  SHOJI_CNI_DIR=$dir && export SHOJI_CNI_DIR
}

ensure_test_deps() {
  # The Rust test runner: not part of a fresh machine's toolchain.
  ensure_cargo_tool cargo-nextest cargo-nextest
  # containerd 2.x, ctr and crictl for the shim's VM tests.
  ensure_containerd || return 1
  # Debian's containerd 1.6, which the shim must work with too.
  ensure_containerd16 || return 1
  ensure_crictl || return 1
  ensure_cni_plugins || return 1
  # The pod network test: portmap's iptables backend, tc and nsenter to look into the pod's
  # network namespace, ip for the test's bridge.
  ensure_debian_packages iptables iproute2 util-linux
  # The registry tests (ADR 021) and critest (CRI conformance, scripts/critest.sh): a real
  # registry on loopback, images pushed into it, and htpasswd (bcrypt) for the one that wants
  # credentials.
  ensure_debian_packages docker-registry skopeo apache2-utils
  # A real Jaeger for the interop test (built once with Go, cached outside the clone).
  SHOJI_JAEGER=$(ensure_jaeger) || return 1
  export SHOJI_JAEGER
  # The viewer's browser tests: Debian's Chromium, driven by playwright-core from npm (installed by
  # the test script from its lockfile). Node.js and npm are the machine's; Debian's npm package
  # is older than the one here, so it is only installed when there is no npm at all.
  ensure_debian_packages chromium
  command -v node >/dev/null || ensure_debian_packages nodejs
  command -v npm >/dev/null || ensure_debian_packages npm
  if ! python3 -c 'import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
    say "pip install the OpenTelemetry Python SDK (test client)"
    python3 -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
  fi
}

# install_shim PROFILE : builds containerd-shim-shoji-v2 and installs it where containerd finds
# it: on containerd's PATH, /usr/local/bin unless SHOJI_SHIM_DIR names another directory
# (docs/containerd.md).
install_shim() {
  local profile=$1 flag=() dir=${SHOJI_SHIM_DIR:-/usr/local/bin}
  [ "$profile" = release ] && flag=(--release)
  say "building containerd-shim-shoji-v2 ($profile), installing it in $dir"
  cargo build "${flag[@]}" -p shoji-shim
  as_root install -D -m 0755 "target/$profile/containerd-shim-shoji-v2" "$dir/containerd-shim-shoji-v2"
}

# build_shoji_binaries PROFILE [CARGO-ARGS...] : shoji (or what CARGO-ARGS name, e.g. the whole
# workspace with its tests) and the static agent.
build_shoji_binaries() {
  local profile=$1 flag=() what=(-p shoji-cli); shift
  [ "$profile" = release ] && flag=(--release)
  [ $# -gt 0 ] && what=("$@")
  say "building shoji ($profile)"
  cargo build "${flag[@]}" "${what[@]}"
  say "building the static guest agent"
  PROFILE_DIR=$profile ./scripts/build-agent.sh
}

# build_guest_image PROFILE : the guest image. The first time on a machine this compiles Shoji's
# kernel (several minutes on 2 cores), cached in ~/.cache/shoji/kernel/<key> outside the clone.
build_guest_image() {
  say "building the guest image (kernel + initramfs; the first time, Shoji's kernel is compiled: several minutes)"
  "target/$1/shoji" image build
}

# build_shoji PROFILE : both of the above.
build_shoji() {
  build_shoji_binaries "$1"
  build_guest_image "$1"
}

# write_cri_config WORK PAUSE-IMAGE [RUNTIME-KEYS] : containerd 2.x's configuration for a CRI run
# of its own in WORK (scripts/critest.sh, scripts/bench-cri.sh): root, state and sockets under
# WORK, CNI plugins from SHOJI_CNI_DIR with the configurations in WORK/cni, network namespaces
# under the state directory, the pinned pause image, and Shoji's shim as runtime handler `shoji`
# on the pause-container sandbox. RUNTIME-KEYS are more lines of the CRI runtime plugin's own
# table; callers append further tables to WORK/config.toml.
write_cri_config() {
  local work=$1 pause=$2 keys=${3:-}
  cat > "$work/config.toml" <<EOF
version = 3
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$pause"
[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
$keys
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$SHOJI_CNI_DIR"]
    conf_dir = "$work/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.shoji]
    runtime_type = "io.containerd.shoji.v2"
    sandboxer = "podsandbox"
EOF
}
