#!/usr/bin/env bash
# The viewer's browser tests: Debian's headless Chromium driven by playwright-core against a real
# `shoji trace serve` (scripts/test.sh runs this after building target/debug/shoji and the guest
# image). Installs the pinned playwright-core from the lockfile when it is missing.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p screenshots
exec node --test --test-concurrency=1 --test-reporter=spec viewer.test.js trace-tools.test.js
