#!/usr/bin/env bash
# Makes a small OCI image (image-layout directory, and optionally an OCI archive tarball) from
# Debian's busybox-static. There is no registry access on these machines; this is the demo and
# test image. With --pause it makes the pod sandbox image instead: only /pause, scripts/pause.c
# built static (gcc), named pause:3.10 (the name containerd's CRI plugin is configured with).
#
# With --data MIB:FILES a second (uncompressed) layer adds FILES files of random bytes, MIB MiB
# in all, under /data: the synthetic "real-size" image of the image-store benchmark.
#
# Variants of the busybox image (critest's test images, scripts/critest.sh): --name REF names it
# in the layout (default busybox:latest), --extra DIR copies DIR's tree over the root filesystem
# (files replace busybox's, e.g. etc/passwd; with --pause too), --user, --entrypoint JSON and --cmd JSON set the
# image configuration's User, Entrypoint and Cmd (JSON arrays; the default Cmd is ["sh"]).
#
# usage: scripts/make-busybox-image.sh OUT_DIR [--tar OUT.tar] [--data MIB:FILES] [--pause]
#          [--name REF] [--extra DIR] [--user USER] [--entrypoint JSON] [--cmd JSON]
set -euo pipefail
usage="usage: make-busybox-image.sh OUT_DIR [--tar OUT.tar] [--data MIB:FILES] [--pause] [--name REF] [--extra DIR] [--user USER] [--entrypoint JSON] [--cmd JSON]"
out=${1:?$usage}
shift
tarball= data= pause= ref= extra= user= entrypoint= cmd_json=
while [ $# -gt 0 ]; do
  case $1 in
    --tar) tarball=${2:?--tar needs a file name}; shift 2 ;;
    --data) data=${2:?--data needs MIB:FILES}; shift 2 ;;
    --pause) pause=1; shift ;;
    --name) ref=${2:?--name needs an image reference}; shift 2 ;;
    --extra) extra=${2:?--extra needs a directory}; shift 2 ;;
    --user) user=${2:?--user needs a user}; shift 2 ;;
    --entrypoint) entrypoint=${2:?--entrypoint needs a JSON array}; shift 2 ;;
    --cmd) cmd_json=${2:?--cmd needs a JSON array}; shift 2 ;;
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
    # Hard links, as in the busybox images of registries: a bind mount over one applet (CRI masked
    # paths: /dev/null on /bin/ls) hides that applet alone.
    [ "$applet" = busybox ] || ln -f "$root/bin/busybox" "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nuser:x:1000:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"
  name=busybox:latest cmd="\"Cmd\":${cmd_json:-[\"sh\"]}"
  [ -z "$entrypoint" ] || cmd="\"Entrypoint\":$entrypoint,$cmd"
  [ -z "$user" ] || cmd="\"User\":\"$user\",$cmd"
fi
if [ -n "$extra" ]; then
  [ -d "$extra" ] || { echo "error: --extra $extra is not a directory" >&2; exit 1; }
  cp -a "$extra/." "$root/"
fi
[ -z "$ref" ] || name=$ref

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
diff_ids="\"sha256:$diff_id\""
layers="{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer_digest\",\"size\":$layer_size}"
if [ -n "$data" ]; then
  mib=${data%%:*}; files=${data##*:}
  mkdir -p "$work/data/data"
  # split writes every file from one stream: 10,000 files in a second, not 10,000 processes.
  head -c $((mib * 1024 * 1024)) /dev/urandom |
    (cd "$work/data/data" && split -a 6 -d -b $(( (mib * 1024 * 1024 + files - 1) / files )) - f)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/data" -cf "$work/data.tar" .
  rm -rf "$work/data"
  data_digest=$(put_blob "$work/data.tar")
  data_size=$(stat -c %s "$work/data.tar")
  rm "$work/data.tar"
  diff_ids="$diff_ids,\"sha256:$data_digest\""
  layers="$layers,{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$data_digest\",\"size\":$data_size}"
fi
cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],$cmd,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[$diff_ids]},"history":[{"created_by":"scripts/make-busybox-image.sh"}]}
JSON
config_digest=$(put_blob "$work/config.json")
config_size=$(stat -c %s "$work/config.json")
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[$layers]}
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
