#!/usr/bin/env bash
# bench/idle_mem.sh [N]: memory of N idle proxied connections (default 5000),
# sheaf proxy against HAProxy in tcp mode, on loopback.
#
# For each proxy: an upstream that accepts and holds every connection, the
# proxy (one thread each: sheaf's default, HAProxy with nbthread 1), its RSS
# once started, then N clients opened one after the other and held idle
# until the upstream has accepted all N (every client is proxied), its RSS
# again. Prints one line per proxy: RSS before and after, and the growth per
# connection (a client connection plus its upstream connection).
# RSS is user-space memory only: socket buffers and io_uring rings are the
# kernel's, in neither figure. Each process stays under its own open-file
# limit (the proxy holds 2N sockets, the client and the upstream N each).
#
# Env: SHEAF (binary, default build/sheaf), SHEAF_ARGS (extra proxy
# options), HAPROXY (default haproxy; "" to skip it).
set -u
cd "$(dirname "$0")/.." || exit 1
N=${1:-5000}
SHEAF=${SHEAF:-build/sheaf}
HAPROXY=${HAPROXY-haproxy}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-idle-mem.XXXXXX") || exit 1
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need=$((2 * N + 100))
if [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || { echo "idle_mem: need $need open files (ulimit -n)" >&2; exit 1; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# holder PORTFILE COUNTFILE: accepts and holds connections on 127.0.0.1,
# writing how many it holds to COUNTFILE
holder() {
	python3 - "$1" "$2" <<'PY' &
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4096); s.settimeout(0.2)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
held, end = [], time.time() + 600
while time.time() < end:
    try:
        held.append(s.accept()[0])
    except socket.timeout:
        pass
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(len(held)))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
PY
	pids="$pids $!"
}

# clients PORT N: opens N connections, prints "held N", holds them (600 s at most)
clients() {
	python3 - "$1" "$2" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
print("held", len(held), flush=True)
time.sleep(600)
PY
	pids="$pids $!"
}

# wait_for FILE PATTERN SECONDS
wait_for() {
	local i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		[ "$i" -ge $(($3 * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# measure NAME PROXY_PID PROXY_PORT COUNTFILE [WANT]: the line for one proxy;
# the upstream must hold WANT connections (default N) once the clients are in
measure() {
	local name=$1 pid=$2 port=$3 count=$4 want=${5:-$N} before after
	sleep 1
	before=$(rss_kib "$pid")
	clients "$port" "$N" >"$tmp/clients.$name" 2>&1
	wait_for "$tmp/clients.$name" "^held $N" 120 || { echo "$name: clients did not connect: $(cat "$tmp/clients.$name")"; return 1; }
	local i=0
	while [ "$(cat "$count" 2>/dev/null || echo 0)" -lt "$want" ] && [ "$i" -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ "$(cat "$count")" -ge "$want" ] || { echo "$name: the upstream holds $(cat "$count") of $want"; return 1; }
	sleep 1
	after=$(rss_kib "$pid")
	awk -v n="$name" -v b="$before" -v a="$after" -v c="$N" 'BEGIN {
		printf "%-8s %6d conns  RSS %7.1f MiB idle -> %7.1f MiB  +%6.0f bytes per proxied connection (%.0f bytes total / conn)\n",
			n, c, b / 1024, a / 1024, (a - b) * 1024 / c, a * 1024 / c }'
}

run_sheaf() {
	holder "$tmp/up.sheaf" "$tmp/count.sheaf"
	wait_for "$tmp/up.sheaf" . 20 || { echo "sheaf: upstream did not start"; return 1; }
	# shellcheck disable=SC2086
	"$SHEAF" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$(cat "$tmp/up.sheaf")" \
		--max-conns "$N" ${SHEAF_ARGS:-} >"$tmp/sheaf.out" 2>&1 &
	local pid=$!
	pids="$pids $pid"
	wait_for "$tmp/sheaf.out" "listening on" 10 || { echo "sheaf: $(cat "$tmp/sheaf.out")"; return 1; }
	local port
	port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$tmp/sheaf.out")
	echo "# sheaf: $(head -1 "$tmp/sheaf.out")"
	measure sheaf "$pid" "$port" "$tmp/count.sheaf"
	kill "$pid"
}

run_haproxy() {
	local port pid
	holder "$tmp/up.haproxy" "$tmp/count.haproxy"
	wait_for "$tmp/up.haproxy" . 20 || { echo "haproxy: upstream did not start"; return 1; }
	port=$(free_port)
	cat >"$tmp/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((N + 100))
defaults
    mode tcp
    maxconn $((N + 100))
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    server up 127.0.0.1:$(cat "$tmp/up.haproxy")
EOF
	"$HAPROXY" -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.out" 2>&1 &
	pid=$!
	pids="$pids $pid"
	local i=0
	while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		[ "$i" -ge 100 ] && { echo "haproxy did not start: $(cat "$tmp/haproxy.out")"; return 1; }
		sleep 0.1
		i=$((i + 1))
	done
	echo "# haproxy: $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3), tcp mode, nbthread 1," \
		"maxconn $((N + 100)), buffers at their defaults"
	# the readiness check above made one upstream connection more
	measure haproxy "$pid" "$port" "$tmp/count.haproxy" "$((N + 1))"
	kill "$pid"
}

echo "# idle_mem: $N idle clients through each proxy, loopback, $(uname -r), $(nproc) CPUs"
run_sheaf
[ -n "$HAPROXY" ] && command -v "$HAPROXY" >/dev/null && run_haproxy
exit 0
