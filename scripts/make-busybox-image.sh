#!/usr/bin/env bash
# Makes a small OCI image (image-layout directory, and optionally an OCI archive tarball) from
# Debian's busybox-static. There is no registry access on these machines; this is the demo and
# test image. With --pause it makes the pod sandbox image instead: only /pause, scripts/pause.c
# built static (gcc), named pause:3.10 (the name containerd's CRI plugin is configured with).
#
# usage: scripts/make-busybox-image.sh OUT_DIR [--tar OUT.tar] [--pause]
set -euo pipefail
usage="usage: make-busybox-image.sh OUT_DIR [--tar OUT.tar] [--pause]"
out=${1:?$usage}
shift
tarball= pause=
while [ $# -gt 0 ]; do
  case $1 in
    --tar) tarball=${2:?--tar needs a file name}; shift 2 ;;
    --pause) pause=1; shift ;;
    *) echo "error: unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
if [ -n "$pause" ]; then
  mkdir -p "$root"
  gcc -static -Os -s -o "$root/pause" "$(dirname "$0")/pause.c"
  name=pause:3.10 cmd='"Entrypoint":["/pause"]'
else
  busybox=/bin/busybox
  [ -x "$busybox" ] || { echo "error: $busybox not found: apt-get install busybox-static" >&2; exit 1; }
  mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,home/user}
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nuser:x:1000:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"
  name=busybox:latest cmd='"Cmd":["sh"]'
fi

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
put_blob() { # file -> prints digest
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$out/blobs/sha256/$d"; echo "$d"
}
layer_digest=$(put_blob "$work/layer.tar.gz")
layer_size=$(stat -c %s "$work/layer.tar.gz")
cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],$cmd,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"scripts/make-busybox-image.sh"}]}
JSON
config_digest=$(put_blob "$work/config.json")
config_size=$(stat -c %s "$work/config.json")
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
manifest_digest=$(put_blob "$work/manifest.json")
manifest_size=$(stat -c %s "$work/manifest.json")
cat > "$out/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"$name"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
if [ -n "$tarball" ]; then
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$out" -cf "$tarball" .
fi
echo "$out"
