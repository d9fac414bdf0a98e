#!/usr/bin/env bash
# Builds Shoji's guest kernel twice from scratch, in two directories of different depth (so the
# build paths differ), and compares the two vmlinux files' sha256: the same digest means the
# build is reproducible (ADR 014). Two full kernel builds, so not part of CI.
#
# usage: scripts/check-kernel-reproducible.sh     (after scripts/setup.sh or build_shoji)
set -euo pipefail
cd "$(dirname "$0")/.."
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
work=$(mktemp -d /tmp/shoji-kernel-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
sums=()
for dir in "$work/one" "$work/two/deeper/still"; do
  echo "==> building in $dir" >&2
  start=$(date +%s)
  XDG_CACHE_HOME="$dir/cache" "$shoji" image build --out "$dir/guest"
  echo "    $(( $(date +%s) - start )) s" >&2
  sums+=("$(sha256sum "$dir/guest/vmlinux" | cut -d' ' -f1)")
done
echo "vmlinux sha256: ${sums[0]} (build 1)"
echo "vmlinux sha256: ${sums[1]} (build 2)"
if [ "${sums[0]}" != "${sums[1]}" ]; then
  echo "NOT reproducible: the two builds differ" >&2
  exit 1
fi
echo "reproducible: both builds give the same vmlinux"
