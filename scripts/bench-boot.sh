#!/usr/bin/env bash
# Boot benchmark, alternating N times (default 10):
#  (a) bare QEMU booting the same kernel with a minimal init that powers off at once,
#  (b) `shoji run --rm IMAGE -- true`.
# Prints medians, the ratio b/a, and the resident memory of Shoji's host-side processes per
# sandbox (shoji + vhost-device-vsock + virtiofsd; QEMU and guest RAM excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
guest=$("$shoji" env --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["guest_dir"])')
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"; cp /bin/busybox "$work/root/bin/"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$work/root/init"; chmod 755 "$work/root/init"
(cd "$work/root" && find . | cpio --quiet -o -H newc | gzip -1 > "$work/min.img")
khz=$(awk -F: '/cpu MHz/{printf "%d", $2*1000; exit}' /proc/cpuinfo)
bare() {
  qemu-system-x86_64 -M microvm,accel=tcg,isa-serial=on,rtc=on -cpu max -m 512M -nodefaults -no-user-config \
    -display none -monitor none -serial null -kernel "$guest/vmlinux" -initrd "$work/min.img" \
    -append "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=$khz lpj=$((khz * 4))" -no-reboot
}
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
a=() b=()
for i in $(seq 1 "$n"); do a+=("$(ms bare)"); b+=("$(ms "$shoji" run --rm "$image" -- true)"); done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
# Host-side memory of one sandbox: sample while a container sleeps.
"$shoji" run --rm "$image" -- sleep 4 >/dev/null 2>&1 & pid=$!
sleep 3
rss=0
for p in $pid $(pgrep -P $pid || true); do
  name=$(cat /proc/$p/comm 2>/dev/null || true)
  case "$name" in qemu-system*) continue ;; esac
  r=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0); rss=$((rss + ${r:-0}))
done
wait $pid || true
echo "accel: tcg (bare) / $("$shoji" env --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])') (shoji)"
echo "bare QEMU boot+poweroff: median ${ma} ms   (n=$n: ${a[*]})"
echo "shoji run --rm -- true:  median ${mb} ms   (n=$n: ${b[*]})"
echo "ratio b/a: $(echo "scale=3; $mb / $ma" | bc)"
echo "host-side RSS per sandbox (shoji + helpers, QEMU excluded): $((rss / 1024)) MiB"
