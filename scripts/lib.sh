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
    libseccomp-dev libcap-ng-dev pkg-config protobuf-compiler ca-certificates
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

ensure_test_deps() {
  # The Rust test runner: not part of a fresh machine's toolchain.
  ensure_cargo_tool cargo-nextest cargo-nextest
  # containerd 2.x and ctr for the shim's VM tests.
  ensure_containerd || return 1
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

# build_shoji PROFILE : the shoji binary and the static guest agent next to it, then the guest image.
build_shoji() {
  local profile=$1 flag=()
  [ "$profile" = release ] && flag=(--release)
  say "building shoji ($profile)"
  cargo build "${flag[@]}" -p shoji-cli
  say "building the static guest agent"
  PROFILE_DIR=$profile ./scripts/build-agent.sh
  say "building the guest image (kernel + initramfs)"
  "target/$profile/shoji" image build
}
