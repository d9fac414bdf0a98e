#!/usr/bin/env bash
# Image-store benchmark (issue 14, ADR 018), in one run:
#  - first use: `shoji image load` of a synthetic image (busybox plus a layer of MIB MiB in FILES
#    files, default 120 MiB / 10,000) into an empty store, N1 times (default 3), the store
#    emptied between them: the one-time unpack;
#  - second runs: `shoji run --rm IMAGE -- true` of that image (b) and of busybox (a),
#    alternating N times (default 10), both already in the store.
# Prints medians and the ratio b/a (target <= 1.2). Needs root (the store is overlayfs).
#
# usage: scripts/bench-image-store.sh [N] [N1] [MIB:FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
n1=${2:-3}
size=${3:-120:10000}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
[ "$(id -u)" = 0 ] || { echo "error: the image store needs root (overlayfs)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/shoji-bench-store.XXXXXX")
trap 'rm -rf "$work"' EXIT
scripts/make-busybox-image.sh "$work/busybox" >/dev/null
scripts/make-busybox-image.sh "$work/big" --data "$size" >/dev/null
data=$work/data
store() { "$shoji" --data-dir "$data" "$@"; }

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
first=()
for _ in $(seq 1 "$n1"); do
  store image prune --all >/dev/null
  first+=("$(ms store image load "$work/big")")
done
store image load "$work/busybox" >/dev/null
a=() b=()
for _ in $(seq 1 "$n"); do
  a+=("$(ms store run --rm "$work/busybox" -- true)")
  b+=("$(ms store run --rm "$work/big" -- true)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mf=$(median "${first[@]}"); ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
echo "shoji: $shoji; image: busybox + ${size%%:*} MiB in ${size##*:} files"
store image ls 2>&1 | sed 's/^/  /'
echo "first use (unpack into the store): median ${mf} ms   (n=$n1: ${first[*]})"
echo "(a) second run, busybox:           median ${ma} ms   (n=$n: ${a[*]})"
echo "(b) second run, synthetic image:   median ${mb} ms   (n=$n: ${b[*]})"
echo "ratio b/a (target <= 1.2): $(echo "scale=3; $mb / $ma" | bc)"
