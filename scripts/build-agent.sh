#!/usr/bin/env bash
# Builds the guest agent as a static binary and puts it next to the shoji binary, where
# `shoji image build` looks for it. The agent is PID 1 in an initramfs with no libraries beside
# it, so it must be static: static glibc, through an explicit --target so that RUSTFLAGS reach
# only the agent's crates, not build scripts or proc-macros.
#
# usage: PROFILE_DIR=debug|release scripts/build-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# libseccomp (seccomp filters, ADR 010) is linked statically too: Debian's libseccomp-dev ships
# libseccomp.a.
LIBSECCOMP_LINK_TYPE=static RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile agent -p shoji-agent --target "$target"
bin="target/$target/agent/shoji-agent"
file "$bin" | grep -q "static" || { echo "error: $bin is not statically linked" >&2; exit 1; }
dest="target/${PROFILE_DIR:-debug}"
mkdir -p "$dest"
cp -f "$bin" "$dest/shoji-agent"
echo "$dest/shoji-agent"
