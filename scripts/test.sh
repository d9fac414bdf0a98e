#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): installs what is missing, then
# format and lint checks, the Rust tests (VM tests boot real QEMU guests, one at a time), critest
# (CRI conformance through containerd, scripts/critest.sh), and the viewer's tests: its model
# under node --test, its pages in headless Chromium.
# Runs every stage, fails if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
failed=()
timings=()
since() { # name start : records the wall time of a set-up step that began at SECONDS=start
  timings+=("$(printf '%5ds  %s' $((SECONDS - $2)) "set-up: $1")")
}
set -e
t=$SECONDS; ensure_host_deps; ensure_test_deps; since "dependencies" "$t"
# The whole workspace with its tests: dependencies are resolved with the tests' features once,
# here, rather than built for shoji-cli alone and again for the tests (113 crates twice).
t=$SECONDS; build_shoji_binaries debug --workspace --all-targets; since "build shoji, its tests and the agent" "$t"
# Shoji's kernel: compiled here on a fresh machine, else taken from ~/.cache/shoji/kernel.
t=$SECONDS; build_guest_image debug; since "guest image (kernel built or cached)" "$t"
set +e

stage() { # name cmd... : runs one stage, records its wall time and whether it failed
  local name=$1 start=$SECONDS rc=0; shift
  say "$name"
  "$@" || rc=$?
  timings+=("$(printf '%5ds  %s%s' $((SECONDS - start)) "$name" "$([ $rc = 0 ] || echo '  FAILED')")")
  [ $rc = 0 ] || failed+=("$name")
}
stage "cargo fmt --check" cargo fmt --all --check
stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
stage "rust tests" cargo nextest run --workspace --no-tests=fail
# CRI conformance: critest against containerd with the shoji handler (prints its counts).
stage "critest (CRI conformance)" scripts/critest.sh
stage "viewer unit tests" node --test crates/shoji-viewer/tests/unit/
if [ -x crates/shoji-viewer/tests/browser/run.sh ]; then
  stage "viewer browser tests" crates/shoji-viewer/tests/browser/run.sh
else
  say "no viewer browser tests in this tree yet (issue: Trace viewer in the browser)"
fi

say "stage times (total ${SECONDS}s, set-up included)"
printf '%s\n' "${timings[@]}" >&2

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all stages passed"
