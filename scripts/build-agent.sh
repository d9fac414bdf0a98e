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
# libseccomp (seccomp filters, ADR 010) is linked statically too: Debian's libseccomp-dev
# (scripts/lib.sh installs it) ships libseccomp.a. rustc looks for a static native library only
# in the -L paths it is given, so libseccomp-sys is told where the archive is.
seccomp_dir=$(pkg-config --variable=libdir libseccomp 2>/dev/null || true)
[ -f "$seccomp_dir/libseccomp.a" ] || {
  echo "error: libseccomp.a not found (install Debian's libseccomp-dev: scripts/setup.sh)" >&2
  exit 1
}
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_dir" \
  RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile agent -p shoji-agent --target "$target"
bin="target/$target/agent/shoji-agent"
file "$bin" | grep -q "static" || { echo "error: $bin is not statically linked" >&2; exit 1; }
dest="target/${PROFILE_DIR:-debug}"
mkdir -p "$dest"
cp -f "$bin" "$dest/shoji-agent"
echo "$dest/shoji-agent"
