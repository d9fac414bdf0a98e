#!/usr/bin/env bash
# N traced runs in a row (default 100): every run must produce exactly one trace, and every trace
# the same set of agent span names (the agent flushes before power-off, the runtime before exit).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
data=$(mktemp -d); trap 'rm -rf "$data"' EXIT
agent_names() { # trace id -> sorted, de-duplicated agent span names
  "$shoji" --data-dir "$data" trace export "$1" --format otlp-json | python3 -c '
import json, sys
names = set()
for line in sys.stdin:
    for rs in json.loads(line)["resourceSpans"]:
        svc = [a["value"].get("stringValue") for a in rs["resource"]["attributes"] if a["key"] == "service.name"]
        if svc == ["shoji-agent"]:
            for ss in rs["scopeSpans"]:
                names.update(s["name"] for s in ss["spans"])
print(" ".join(sorted(names)))'
}
reference= bad=0
for i in $(seq 1 "$n"); do
  "$shoji" --data-dir "$data" run --rm --trace "$image" -- true >/dev/null
  id=$("$shoji" --data-dir "$data" trace ls --limit 1 --json | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["trace_id"])')
  names=$(agent_names "$id")
  if [ -z "$reference" ]; then reference=$names; fi
  if [ "$names" != "$reference" ]; then bad=$((bad + 1)); echo "run $i: trace $id differs: $names" >&2; fi
done
traces=$("$shoji" --data-dir "$data" trace ls --limit 100000 --json | wc -l)
echo "trace completeness: $n traced runs, $traces traces, $bad incomplete; agent spans: $reference"
[ "$bad" -eq 0 ] && [ "$traces" -eq "$n" ]
