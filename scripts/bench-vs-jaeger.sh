#!/usr/bin/env bash
# The trace store side by side with Jaeger: the same OTLP load (spans/s, loss counted by reading
# every trace back, peak memory, disk) and the same queries (a 10,000-span trace, a search of 20
# traces) against `shoji trace serve` and Jaeger v1.76.0's all-in-one with Badger and with memory
# storage, each started fresh, alternating round by round. Prints a Markdown table.
#
# usage: scripts/bench-vs-jaeger.sh [--seconds 10] [--rounds 2] [--connections 4]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
jaeger=$(ensure_jaeger)
cargo build --release -p shoji-cli -p shoji-trace --bin shoji --example bench_vs_jaeger
exec target/release/examples/bench_vs_jaeger --shoji target/release/shoji --jaeger "$jaeger" "$@"
