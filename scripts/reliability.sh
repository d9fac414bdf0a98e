#!/usr/bin/env bash
# N consecutive `shoji run --rm IMAGE -- true` (default 100), each with a deadline; counts
# failures and hangs. Exits non-zero if any run failed or hung.
#
# usage: scripts/reliability.sh [N] [IMAGE]
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
image=${2:-target/demo/busybox}
[ -f "$image/index.json" ] || [ -f "$image" ] || scripts/make-busybox-image.sh "$image" >/dev/null
# Each run keeps its sandbox directory (SHOJI_KEEP_SANDBOX) in a private root, so that a run
# that fails or hangs can be explained by its guest console; good runs' directories are removed.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf '[runtime]\nsandbox_root = "%s"\n' "$work/sb" > "$work/config.toml"
fail=0 hang=0
start=$(date +%s.%N)
for i in $(seq 1 "$n"); do
  SHOJI_LOG=${SHOJI_LOG:-info} SHOJI_KEEP_SANDBOX=1 timeout -k 5 60 "$shoji" --config "$work/config.toml" run --rm "$image" -- true \
    >/dev/null 2>"$work/err"
  rc=$?
  if [ $rc -ne 0 ]; then
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then hang=$((hang + 1)); what=HANG; else fail=$((fail + 1)); what="FAILED ($rc)"; fi
    echo "run $i: $what:" >&2; tail -8 "$work/err" | sed "s/^/    /" >&2
    for d in "$work"/sb/*/; do [ -f "$d/console.log" ] && { echo "  console tail:" >&2; tail -5 "$d/console.log" | sed 's/^/    /' >&2; }; done
  fi
  find "$work/sb" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} + 2>/dev/null
done
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "reliability: $n runs, $fail failed, $hang hung, $(echo "scale=2; $secs / $n" | bc) s per run"
[ $fail -eq 0 ] && [ $hang -eq 0 ]
