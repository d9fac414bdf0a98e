#!/usr/bin/env bash
# Boot benchmark, alternating N times (default 10) in one run:
#  (d) bare QEMU booting Debian's cloud kernel to a busybox /init that reboots at once (what a
#      user gets without Shoji; QEMU's -no-reboot turns the reboot into an exit),
#  (s) the same bare boot of Shoji's kernel,
#  (r) `shoji run --rm IMAGE -- true` (Shoji's guest image: its kernel and the agent).
# Prints medians and the ratios r/d (target <= 0.6) and r/s (target <= 1.10); then, for one
# sandbox, the resident memory of Shoji's host-side processes (shoji + vhost-device-vsock +
# virtiofsd) and of QEMU, and the guest's memory in use at idle (MemTotal - MemAvailable) with
# each kernel. Debian's kernel comes from `shoji image build --kernel debian` into a cache
# directory of its own ($XDG_CACHE_HOME/shoji/bench-debian-guest, made once).
#
# usage: scripts/bench-boot.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
guest=$("$shoji" env --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["guest_dir"])')
kind=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("kernel") or "debian")' "$guest/manifest.json")
[ "$kind" = shoji ] || { echo "error: $guest holds Debian's kernel; run \`$shoji image build\` (Shoji's kernel) first" >&2; exit 1; }
debian=${XDG_CACHE_HOME:-$HOME/.cache}/shoji/bench-debian-guest
"$shoji" image build --kernel debian --out "$debian" >/dev/null 2>&1 ||
  "$shoji" image build --kernel debian --out "$debian"

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"; cp /bin/busybox "$work/root/bin/"
printf '#!/bin/busybox sh\n/bin/busybox reboot -f\n' > "$work/root/init"; chmod 755 "$work/root/init"
# Uncompressed, like Shoji's initramfs (Shoji's kernel has no decompressors).
(cd "$work/root" && find . | cpio --quiet -o -H newc > "$work/min.img")
khz=$(awk -F: '/cpu MHz/{printf "%d", $2*1000; exit}' /proc/cpuinfo)
bare() { # vmlinux acpi(on|off): as `shoji run` boots each kernel (Shoji's has no ACPI, ADR 014)
  qemu-system-x86_64 -M "microvm,accel=tcg,isa-serial=on,rtc=on,acpi=$2" -cpu max -m 512M -nodefaults -no-user-config \
    -display none -monitor none -serial null -kernel "$1" -initrd "$work/min.img" \
    -append "console=ttyS0 quiet panic=-1 reboot=t no_timer_check tsc_early_khz=$khz lpj=$((khz * 4)) tsc=reliable" -no-reboot
}
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
d=() s=() r=()
for _ in $(seq 1 "$n"); do
  d+=("$(ms bare "$debian/vmlinux" on)")
  s+=("$(ms bare "$guest/vmlinux" off)")
  r+=("$(ms "$shoji" run --rm "$image" -- true)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
md=$(median "${d[@]}"); mshoji=$(median "${s[@]}"); mr=$(median "${r[@]}")

# Host memory of one sandbox, sampled while its container sleeps.
"$shoji" run --rm "$image" -- sleep 4 >/dev/null 2>&1 & pid=$!
sleep 3
rss=0 qrss=0
for p in $pid $(pgrep -P $pid || true); do
  name=$(cat /proc/$p/comm 2>/dev/null || true)
  r_kb=$(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0)
  case "$name" in qemu-system*) qrss=$((qrss + ${r_kb:-0})) ;; *) rss=$((rss + ${r_kb:-0})) ;; esac
done
wait $pid || true
# Guest memory in use at idle, with each kernel (the container's /proc/meminfo is the VM's).
used='sleep 1; awk "/MemTotal/{t=\$2} /MemAvailable/{a=\$2} END {print int((t-a)/1024)}" /proc/meminfo'
guest_shoji=$("$shoji" run --rm "$image" -- sh -c "$used")
guest_debian=$(SHOJI_GUEST_DIR=$debian "$shoji" run --rm "$image" -- sh -c "$used")

echo "accel: tcg (bare) / $("$shoji" env --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])') (shoji)"
echo "kernels: Debian $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_release"])' "$debian/manifest.json"), Shoji's $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_release"])' "$guest/manifest.json")"
echo "(d) bare QEMU, Debian's kernel:  median ${md} ms   (n=$n: ${d[*]})"
echo "(s) bare QEMU, Shoji's kernel:   median ${mshoji} ms   (n=$n: ${s[*]})"
echo "(r) shoji run --rm -- true:      median ${mr} ms   (n=$n: ${r[*]})"
echo "ratio r/d (target <= 0.6):  $(echo "scale=3; $mr / $md" | bc)"
echo "ratio r/s (target <= 1.10): $(echo "scale=3; $mr / $mshoji" | bc)"
echo "host RSS per sandbox: shoji + helpers $((rss / 1024)) MiB, QEMU $((qrss / 1024)) MiB"
echo "guest memory in use at idle: Shoji's kernel ${guest_shoji} MiB, Debian's kernel ${guest_debian} MiB"
