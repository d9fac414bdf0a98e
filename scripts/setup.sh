#!/usr/bin/env bash
# One command from a fresh machine to a traced container in a VM: installs what is missing,
# builds Shoji and the guest image, installs the containerd shim (containerd-shim-shoji-v2, on
# PATH: docs/containerd.md), runs a demo container with tracing on and shows its trace.
# Idempotent; fast when everything is already there.
#
# usage: scripts/setup.sh [--no-demo]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_host_deps
build_shoji release
install_shim release
[ "${1:-}" = "--no-demo" ] && exit 0

shoji=target/release/shoji
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
say "running a container in a microVM, traced: $shoji run --rm --trace $image -- ..."
"$shoji" run --rm --trace "$image" -- sh -c 'echo "hello from $(uname -r) in a microVM, $(nproc) vCPU"'
say "its trace: $shoji trace show latest"
"$shoji" trace show latest
cat >&2 <<MSG

Next: export PATH=\$PWD/target/release:\$PATH, then try
  shoji run --rm -i $image -- sh        # a shell in a VM
  shoji trace summary latest            # where the time went
  shoji trace serve                     # OTLP receivers + Jaeger-compatible API on :16686
  ctr run --runtime io.containerd.shoji.v2 ...   # under containerd 2.x: docs/containerd.md
MSG
