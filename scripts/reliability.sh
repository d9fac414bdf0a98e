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
fail=0 hang=0
start=$(date +%s.%N)
for i in $(seq 1 "$n"); do
  timeout -k 5 60 "$shoji" run --rm "$image" -- true >/dev/null 2>/tmp/shoji-reliability.err
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then hang=$((hang + 1)); echo "run $i: HANG" >&2
  elif [ $rc -ne 0 ]; then fail=$((fail + 1)); echo "run $i: FAILED ($rc): $(tail -3 /tmp/shoji-reliability.err)" >&2
  fi
done
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "reliability: $n runs, $fail failed, $hang hung, $(echo "scale=2; $secs / $n" | bc) s per run"
[ $fail -eq 0 ] && [ $hang -eq 0 ]
