#!/usr/bin/env bash
# Viewer benchmark: time to first render of a 10,000-span trace (and a 100-span one, alternated)
# in Debian's headless Chromium, and frame times while scrolling it. Prints figures.
#
# usage: scripts/bench-viewer.sh [--spans N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_debian_packages chromium
cargo build --release -p shoji-cli
cd crates/shoji-viewer/tests/browser
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error
SHOJI_BIN=../../../../target/release/shoji exec node bench.js "$@"
