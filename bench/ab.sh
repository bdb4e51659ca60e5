#!/bin/bash
# bench/ab.sh RUNS CONNS SECS A B: two proxies side by side, each between its
# own source and the one sink, at the same time (so that what the machine's
# other load does falls on both alike), rr 64-byte requests, closed loop.
# A and B: a sheaf binary (optionally :MODE, default bundle) or "haproxy".
# Per run: each proxy's CPU-s per 100k requests over the source's
# measurement window (/proc/PID/stat) and the ratio B/A; then the medians.
# This is how the levers in bench/notes.md were measured. Env: SHEAF (the
# binary for source and sink, default build/sheaf), MSG (request size, 64),
# A_ARGS and B_ARGS (more options for that sheaf proxy, e.g. --sqpoll).
set -u
cd "$(dirname "$0")/.."
S=${SHEAF:-build/sheaf}
[ $# -eq 5 ] || { echo "usage: bench/ab.sh RUNS CONNS SECS A B" >&2; exit 2; }
runs=$1 conns=$2 secs=$3 A=$4 B=$5
MSG=${MSG:-64}
T=$(mktemp -d /tmp/sheaf-ab.XXXXXX)
PIDS=""
trap 'kill $PIDS 2>/dev/null; rm -rf "$T"' EXIT

cpu() { awk '{ s=$0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
port_of() { # FILE: the port of its "listening on HOST:PORT" line (waits 5 s)
	for _ in $(seq 100); do
		p=$(grep -o 'listening on [0-9.:]*' "$1" 2>/dev/null | sed 's/.*://')
		[ -n "$p" ] && { echo "$p"; return; }
		sleep 0.05
	done
}
start_proxy() { # VARIANT TAG: sets PX and PP
	local v=$1 o=$T/$2
	if [ "$v" = haproxy ]; then
		PP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		printf 'global\n    nbthread 1\n    maxconn 9000\ndefaults\n    mode tcp\n    maxconn 9000\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\nfrontend fe\n    bind 127.0.0.1:%s\n    default_backend be\nbackend be\n    server up 127.0.0.1:%s\n' \
			"$PP" "$SP" >"$o.cfg"
		haproxy -db -f "$o.cfg" >/dev/null 2>&1 &
		PX=$!
		sleep 0.5
	else
		local bin=${v%%:*} mode=${v#*:}
		[ "$mode" = "$v" ] && mode=bundle
		local extra=${A_ARGS:-}
		[ "$2" = b ] && extra=${B_ARGS:-}
		# shellcheck disable=SC2086
		"$bin" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SP" --io "$mode" --nodelay \
			--max-conns 9000 $extra >"$o.out" 2>&1 &
		PX=$!
		PP=$(port_of "$o.out")
	fi
	PIDS="$PIDS $PX"
}
per_100k() { awk -v a="$1" -v b="$2" -v t="$3" -v s="$secs" 'BEGIN { printf "%.3f", (b - a) / 100 / (t * s) * 1e5 }'; }
tps_of() { sed -n 's/.*"tps":\([0-9.]*\).*/\1/p' "$1"; }
med() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

"$S" sink --listen 127.0.0.1:0 --echo --buf-size 4096 --bufs 16384 >/dev/null 2>"$T/sink.err" &
PIDS="$PIDS $!"
SP=$(port_of "$T/sink.err")
CA="" CB="" RR=""
for r in $(seq "$runs"); do
	start_proxy "$A" a; PXA=$PX PPA=$PP
	start_proxy "$B" b; PXB=$PX PPB=$PP
	for x in a b; do
		p=$PPA; [ $x = b ] && p=$PPB
		"$S" source --connect "127.0.0.1:$p" --rr "$MSG" --conns "$conns" --bytes 1099511627776 \
			--duration "$secs" --warmup 1 --marks --json >"$T/src.$x" 2>"$T/src.$x.err" &
		eval "SRC_$x=\$!"
	done
	# each proxy's CPU at its own source's window edges (a proxy whose
	# source ended first is busy closing its connections meanwhile)
	a0="" b0="" a1="" b1=""
	for _ in $(seq 30000); do
		[ -z "$a0" ] && grep -q measuring "$T/src.a.err" && a0=$(cpu "$PXA")
		[ -z "$b0" ] && grep -q measuring "$T/src.b.err" && b0=$(cpu "$PXB")
		[ -z "$a1" ] && grep -q measured "$T/src.a.err" && a1=$(cpu "$PXA")
		[ -z "$b1" ] && grep -q measured "$T/src.b.err" && b1=$(cpu "$PXB")
		[ -n "$a1" ] && [ -n "$b1" ] && break
		sleep 0.005
	done
	wait "$SRC_a" "$SRC_b"
	kill "$PXA" "$PXB"; wait "$PXA" "$PXB" 2>/dev/null
	ta=$(tps_of "$T/src.a") tb=$(tps_of "$T/src.b")
	ca=$(per_100k "$a0" "$a1" "$ta") cb=$(per_100k "$b0" "$b1" "$tb")
	rt=$(awk -v a="$ca" -v b="$cb" 'BEGIN { printf "%.3f", b / a }')
	echo "run $r: A $ta req/s, $ca CPU-s/100k | B $tb req/s, $cb CPU-s/100k | B/A $rt"
	CA="$CA $ca" CB="$CB $cb" RR="$RR $rt"
done
# shellcheck disable=SC2086
echo "median: A $(med $CA) B $(med $CB) CPU-s/100k, B/A $(med $RR) (runs:$RR )"
