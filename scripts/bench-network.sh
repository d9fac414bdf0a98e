#!/usr/bin/env bash
# Network benchmark: TCP throughput and connection latency between the host and a container on
# `shoji run`'s default user-mode network, against the same measured between two network
# namespaces on this host joined by a veth pair (the kernel's own path, no VM). Prints all
# figures in one run. Needs root for the namespaces. Traffic stays on this machine: the host's
# loopback and the two namespaces this script makes (and deletes).
#
# usage: scripts/bench-network.sh [MIB] [CONNECTIONS]   (defaults: 32 MiB, 50 connections)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-32}
conns=${2:-50}
shoji=${SHOJI:-target/release/shoji}
[ -x "$shoji" ] || shoji=target/debug/shoji
image=target/demo/busybox
[ -f "$image/index.json" ] || scripts/make-busybox-image.sh "$image" >/dev/null
[ "$(id -u)" = 0 ] || { echo "error: run as root (the namespace half needs it)" >&2; exit 1; }

work=$(mktemp -d)
ns_a=shoji-bench-a-$$ ns_b=shoji-bench-b-$$ veth=shb$(($$ % 100000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The measuring side, in Python (on the host, or in a namespace with `ip netns exec`).
#   sink PORT OUTFILE          accept one connection, read to EOF; write "bytes seconds"
#                              (first byte to EOF)
#   send HOST PORT MIB         connect (retrying until something answers), send MIB MiB, close;
#                              print "bytes seconds" (connect to the peer's close)
#   latency HOST PORT N        N sequential connections, each until the server's one line and
#                              close; print median and p90 in ms (after one warm-up connection)
cat > "$work/tcp.py" <<'PY'
import socket, statistics, sys, time
def connect(host, port, deadline=60):
    end = time.time() + deadline
    while True:
        try:
            s = socket.create_connection((host, port), timeout=10)
            return s
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.1)
cmd = sys.argv[1]
if cmd == "sink":
    port, out = int(sys.argv[2]), sys.argv[3]
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port)); ls.listen(1); ls.settimeout(120)
    c, _ = ls.accept(); n = 0; t0 = None
    while True:
        b = c.recv(1 << 16)
        if t0 is None: t0 = time.perf_counter()
        if not b: break
        n += len(b)
    open(out, "w").write(f"{n} {time.perf_counter() - t0:.6f}\n")
elif cmd == "send":
    host, port, mib = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # Until the receiver really reads: a user-mode forward accepts before the guest listens.
    chunk = b"\0" * (1 << 16)
    while True:
        s = connect(host, port)
        t0 = time.perf_counter()
        try:
            for _ in range(mib * 16):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(120)
            s.recv(1)  # the receiver's close
            break
        except OSError:
            s.close(); time.sleep(0.2)
    print(f"{mib << 20} {time.perf_counter() - t0:.6f}")
elif cmd == "latency":
    host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    def once():
        t0 = time.perf_counter()
        s = socket.create_connection((host, port), timeout=10)
        data = s.recv(16); s.close()
        return time.perf_counter() - t0, data
    end = time.time() + 60
    while True:  # warm up until the server answers
        try:
            if once()[1]: break
        except OSError:
            pass
        if time.time() > end: sys.exit("server never answered")
        time.sleep(0.1)
    ts = sorted(once()[0] * 1000 for _ in range(n))
    print(f"{statistics.median(ts):.2f} {ts[int(len(ts) * 0.9) - 1]:.2f}")
PY

mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1048576 }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A container-side server that answers each connection with one line and closes.
answer='printf "#!/bin/sh\necho x\n" > /tmp/a; chmod +x /tmp/a; exec nc -ll -p 7002 -e /tmp/a'

echo "accel: $("$shoji" env --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')"

# --- user mode: container -> host (guest sends to 10.0.2.2, the host's loopback)
p=$(free_port)
python3 "$work/tcp.py" sink "$p" "$work/u-up" & pids+=($!)
"$shoji" run --rm "$image" -- sh -c "dd if=/dev/zero bs=65536 count=$((mib * 16)) 2>/dev/null | nc 10.0.2.2 $p" >/dev/null
wait "${pids[-1]}"; read -r ub us < "$work/u-up"
# --- user mode: host -> container (through -p)
p=$(free_port)
"$shoji" run --rm -p "$p:7001" "$image" -- sh -c 'nc -l -p 7001 > /dev/null' >/dev/null 2>&1 & sp=$!
read -r db ds < <(python3 "$work/tcp.py" send 127.0.0.1 "$p" "$mib")
wait $sp || true
# --- user mode: connection latency host -> container
p=$(free_port)
"$shoji" run --rm -p "$p:7002" "$image" -- sh -c "$answer" >/dev/null 2>&1 & sp=$!
read -r lmed lp90 < <(python3 "$work/tcp.py" latency 127.0.0.1 "$p" "$conns")
kill -TERM $sp; wait $sp || true

# --- two namespaces joined by a veth: the same three measurements
ip netns add "$ns_a"; ip netns add "$ns_b"
ip link add "${veth}a" type veth peer name "${veth}b"
ip link set "${veth}a" netns "$ns_a"; ip link set "${veth}b" netns "$ns_b"
ip -n "$ns_a" addr add 10.202.0.2/24 dev "${veth}a"; ip -n "$ns_a" link set "${veth}a" up
ip -n "$ns_b" addr add 10.202.0.1/24 dev "${veth}b"; ip -n "$ns_b" link set "${veth}b" up
ip netns exec "$ns_b" python3 "$work/tcp.py" sink 7000 "$work/n-up" & pids+=($!)
sleep 0.3
ip netns exec "$ns_a" sh -c "dd if=/dev/zero bs=65536 count=$((mib * 16)) 2>/dev/null | busybox nc 10.202.0.1 7000"
wait "${pids[-1]}"; read -r nb ns < "$work/n-up"
ip netns exec "$ns_a" busybox sh -c 'busybox nc -l -p 7001 > /dev/null' & pids+=($!)
read -r ndb nds < <(ip netns exec "$ns_b" python3 "$work/tcp.py" send 10.202.0.2 7001 "$mib")
printf '#!/bin/sh\necho x\n' > "$work/a"; chmod +x "$work/a"
ip netns exec "$ns_a" busybox nc -ll -p 7002 -e "$work/a" & pids+=($!)
read -r nlmed nlp90 < <(ip netns exec "$ns_b" python3 "$work/tcp.py" latency 10.202.0.2 7002 "$conns")

printf '%-44s %14s %14s\n' "" "user mode" "netns + veth"
printf '%-44s %10s MiB/s %10s MiB/s\n' "throughput, container -> host ($mib MiB)" "$(mbps "$ub" "$us")" "$(mbps "$nb" "$ns")"
printf '%-44s %10s MiB/s %10s MiB/s\n' "throughput, host -> container ($mib MiB)" "$(mbps "$db" "$ds")" "$(mbps "$ndb" "$nds")"
printf '%-44s %11s ms %11s ms\n' "connect + first byte, median ($conns conns)" "$lmed" "$nlmed"
printf '%-44s %11s ms %11s ms\n' "connect + first byte, p90" "$lp90" "$nlp90"
