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
dest="target/${PROFILE_DIR:-debug}"
mkdir -p "$dest"

# The agent's profile (size first: fat LTO, one codegen unit) makes it the slowest part of a
# clean clone's build, about two minutes on two cores. A build is kept outside the clone, in
# ~/.cache/shoji/agent/KEY, and a clone whose agent would be built from the same inputs takes it
# from there. KEY hashes every input of the build: the sources of each workspace crate the agent
# depends on (found with cargo tree), Cargo.lock, the workspace's Cargo.toml (its profiles) and
# .cargo/config.toml, this script, the toolchain, protoc (the agent API's code is generated) and
# the static libraries linked in (libseccomp.a, libc.a). SHOJI_NO_AGENT_CACHE=1 always builds.
cache_dir=${SHOJI_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoji/agent}
agent_key() {
  local crates
  crates=$(cargo tree -p shoji-agent --target "$target" -e normal,build --prefix none \
    --format '{p}' | sed -n 's/^[^ ]* v[^ ]* (\(\/[^)]*\)).*/\1/p' | sort -u)
  [ -n "$crates" ] || { echo "error: cargo tree named none of the agent's crates" >&2; return 1; }
  {
    # Each crate's files, by path relative to the workspace and content.
    for dir in $crates; do
      rel=${dir#"$PWD"/}
      (cd "$dir" && find . -type f -not -path './target/*' -print0 | sort -z | xargs -0 sha256sum |
        sed "s|  \./|  $rel/|")
    done
    sha256sum Cargo.lock Cargo.toml .cargo/config.toml scripts/build-agent.sh \
      "$seccomp_dir/libseccomp.a" "$(gcc -print-file-name=libc.a)" | sed 's|  /.*/|  |'
    rustc -vV
    cargo -V
    protoc --version
  } | sha256sum | cut -c1-16
}
key=""
if [ -z "${SHOJI_NO_AGENT_CACHE:-}" ]; then
  # What is kept there becomes every guest's PID 1: a directory someone else owns or may write
  # in is not used.
  if [ -e "$cache_dir" ] && { [ ! -O "$cache_dir" ] || [ -n "$(find "$cache_dir" -maxdepth 0 -perm /022)" ]; }; then
    echo "warning: $cache_dir is not this user's alone (owner or group/other write): not used" >&2
  else
    key=$(agent_key) || key=""
  fi
fi
# A kept build pruned by another clone between the key and the copy is simply built again.
if [ -n "$key" ] && cp -f "$cache_dir/$key/shoji-agent" "$dest/shoji-agent" 2>/dev/null; then
  echo "static agent for these sources taken from $cache_dir/$key (SHOJI_NO_AGENT_CACHE=1 builds it)"
  echo "$dest/shoji-agent"
  exit 0
fi

LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_dir" \
  RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile agent -p shoji-agent --target "$target"
bin="target/$target/agent/shoji-agent"
file "$bin" | grep -q "static" || { echo "error: $bin is not statically linked" >&2; exit 1; }
cp -f "$bin" "$dest/shoji-agent"
if [ -n "$key" ]; then
  # Written under a temporary name and renamed: a build interrupted here, or another clone
  # storing the same key at once, never leaves a half-written agent under KEY.
  mkdir -p "$cache_dir" && chmod 700 "$cache_dir"
  tmp=$(mktemp -d "$cache_dir/.tmp.XXXXXX")
  cp "$bin" "$tmp/shoji-agent"
  mv -T "$tmp" "$cache_dir/$key" 2>/dev/null || rm -rf "$tmp"
  # The newest five builds are kept.
  ls -1dt "$cache_dir"/*/ 2>/dev/null | tail -n +6 | xargs -r rm -rf
fi
echo "$dest/shoji-agent"
