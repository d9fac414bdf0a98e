#!/usr/bin/env bash
# Viewer benchmark: time to first render of a 100-, a 10,000- and a 100,000-span trace
# (alternated) in Debian's headless Chromium, and frame times while scrolling the biggest.
# Prints figures (target: 100,000 spans under 1.5 s). With --baseline, the same traces are
# also served by another shoji binary (give an absolute path, e.g. a copy of an earlier release
# build) and every page load alternates between the two: before and after, same load.
#
# usage: scripts/bench-viewer.sh [--spans 10000,100000] [--runs 5] [--baseline /abs/path/shoji]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_debian_packages chromium
cargo build --release -p shoji-cli
cd crates/shoji-viewer/tests/browser
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error
SHOJI_BIN=../../../../target/release/shoji exec node bench.js "$@"
