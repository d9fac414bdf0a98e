#!/usr/bin/env bash
# Network benchmark: TCP throughput and latency from the host to a server, for each way a
# container can be reached, measured in one run with the same client and the same servers
# (busybox nc):
#   host-netns : a second network namespace on the host, over a veth pair (the kernel's own path;
#                the baseline every VM mode is compared with)
#   user       : `shoji run -p` (QEMU's user-mode stack, published on the host's loopback)
#   netns      : `shoji run --network netns:PATH` (TAP + tc redirect from a veth, as under CNI)
# For each: MB/s of a 64 MiB stream (sent until the server has read it all), the median round
# trip of 1-byte messages on one connection, and the median time to connect and get a first
# echo on a new connection (the server forks a process per connection: both sides pay that).
# Needs root (namespaces, veth, TAP). usage: scripts/bench-network.sh [ROUNDS, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
# The data path never crosses the shoji binary (QEMU and the kernel carry every packet): the
# newest build of it will do.
# (`ls` fails when one of the two is missing: not fatal under pipefail.)
shoji=${SHOJI:-$( (ls -t target/release/shoji target/debug/shoji 2>/dev/null || true) | head -1)}
[ -x "$shoji" ] || { echo "error: no shoji binary: cargo build -p shoji-cli" >&2; exit 1; }
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
[ "$(id -u)" = 0 ] || { echo "error: the namespaces and veth pairs need root" >&2; exit 1; }

ns_base=shoji-bench-base ns_vm=shoji-bench-vm
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns pids "$ns_base" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip link del sbn-base0 2>/dev/null || true
  ip link del sbn-vm0 2>/dev/null || true
  ip netns del "$ns_base" 2>/dev/null || true
  ip netns del "$ns_vm" 2>/dev/null || true
  [ "${keep_logs:-}" ] || [ -z "${work:-}" ] || rm -rf "$work"
}
cleanup
work=$(mktemp -d)
trap cleanup EXIT
trap "exit 130" INT TERM

# ns PEER_IF HOST_IF HOST_ADDR NS_ADDR: a namespace joined to this one by a veth pair.
veth_ns() {
  local ns=$1 host_if=$2 host_addr=$3 ns_addr=$4
  ip netns add "$ns"
  ip link add "$host_if" type veth peer name eth0 netns "$ns"
  ip addr add "$host_addr/24" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$ns" addr add "$ns_addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "$host_addr"
}

# The servers, as a shell script busybox runs on the host (in a namespace) and in the guest;
# restarted when busybox's persistent listener gives up.
servers='printf "#!/bin/sh\nexec cat >/dev/null\n" >/tmp/sink; chmod +x /tmp/sink
while :; do nc -ll -p 5001 -e /tmp/sink; done &
while :; do nc -ll -p 5002 -e /bin/cat; done & wait'

client() { # MODE HOST SINK_PORT ECHO_PORT SERVER_PID
  python3 - "$@" <<'EOF'
import os, socket, statistics, sys, time
mode, host, sink, echo, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
deadline = time.time() + 300
while True:  # wait until the echo server answers
    try:
        with socket.create_connection((host, echo), timeout=5) as s:
            s.sendall(b"x")
            if s.recv(1) == b"x":
                break
    except OSError:
        pass
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit(f"{mode}: the server process exited (its log is kept)")
    if time.time() > deadline:
        sys.exit(f"{mode}: no echo from {host}:{echo} in 300 s")
    time.sleep(0.5)
size = 64 << 20
chunk = b"\0" * (1 << 16)
t0 = time.perf_counter()
with socket.create_connection((host, sink)) as s:
    for _ in range(size // len(chunk)):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the server closes once it has read everything
mbps = size / (time.perf_counter() - t0) / 1e6
rtts = []
with socket.create_connection((host, echo)) as s:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(1000):
        t = time.perf_counter(); s.sendall(b"p"); s.recv(1); rtts.append(time.perf_counter() - t)
conns = []
for _ in range(20):
    t = time.perf_counter()
    with socket.create_connection((host, echo)) as s:
        s.sendall(b"c"); s.recv(1)
    conns.append(time.perf_counter() - t)
print(f"{mode} {mbps:.1f} {statistics.median(rtts)*1e6:.0f} {statistics.median(conns)*1e3:.2f}")
EOF
}

veth_ns "$ns_base" sbn-base0 10.211.0.1 10.211.0.2
ip netns exec "$ns_base" busybox sh -c "$servers" >/dev/null 2>&1 & pids+=($!); base_pid=$!
veth_ns "$ns_vm" sbn-vm0 10.212.0.1 10.212.0.2
"$shoji" run --rm -p 127.0.0.1:15001:5001 -p 127.0.0.1:15002:5002 "$image" -- sh -c "$servers" \
  >"$work/user.log" 2>&1 & pids+=($!); user_pid=$!
"$shoji" run --rm --network "netns:/run/netns/$ns_vm" "$image" -- sh -c "$servers" \
  >"$work/netns.log" 2>&1 & pids+=($!); netns_pid=$!

results=$(mktemp)
for r in $(seq 1 "$rounds"); do
  client host-netns 10.211.0.2 5001 5002 "$base_pid"
  client user 127.0.0.1 15001 15002 "$user_pid"
  client netns 10.212.0.2 5001 5002 "$netns_pid"
done | tee "$results" >&2 || { keep_logs=1; echo "logs kept in $work" >&2; exit 1; }

echo "accel: $("$shoji" env --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])'), $rounds rounds, medians"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, *v = line.split()
    rows.setdefault(m, []).append([float(x) for x in v])
base = [statistics.median(c) for c in zip(*rows["host-netns"])]
print(f"{'mode':<11} {'MB/s':>8} {'x base':>7} {'RTT us':>8} {'x base':>7} {'connect+echo ms':>16} {'x base':>7}")
for m in ["host-netns", "user", "netns"]:
    v = [statistics.median(c) for c in zip(*rows[m])]
    print(f"{m:<11} {v[0]:>8.1f} {v[0]/base[0]:>7.3f} {v[1]:>8.0f} {v[1]/base[1]:>7.1f} {v[2]:>16.2f} {v[2]/base[2]:>7.1f}")
EOF
rm -f "$results"
