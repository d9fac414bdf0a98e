#!/usr/bin/env bash
# Tracing overhead: `shoji run --rm IMAGE -- true` with all tracing on (--trace, embedded store)
# and off, alternated N times each (default 10). Prints medians and the ratio on/off.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
data=$(mktemp -d); trap 'rm -rf "$data"' EXIT
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
on=() off=()
for i in $(seq 1 "$n"); do
  off+=("$(ms "$shoji" run --rm "$image" -- true)")
  on+=("$(ms "$shoji" --data-dir "$data" run --rm --trace "$image" -- true)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mon=$(median "${on[@]}"); moff=$(median "${off[@]}")
echo "tracing off: median ${moff} ms   (n=$n: ${off[*]})"
echo "tracing on:  median ${mon} ms   (n=$n: ${on[*]})"
echo "ratio on/off: $(echo "scale=3; $mon / $moff" | bc)"
echo "spans stored: $("$shoji" --data-dir "$data" trace ls --json | wc -l) traces, latest $("$shoji" --data-dir "$data" trace ls --limit 1)"
