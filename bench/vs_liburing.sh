#!/usr/bin/env bash
# One connection through `sheaf proxy --io bundle` and through liburing's
# examples/proxy.c in its bundle mode, interleaved, at the same buffer size
# and buffer count (issue 7's target: sheaf at least 1.25x at 32 B and 1 KiB).
#
#   LIBURING_PROXY=/path/to/proxy bench/vs_liburing.sh
#
# A manual benchmark, not part of `make test`: without LIBURING_PROXY (a
# proxy built from liburing's public source, outside this repository; see
# bench/notes.md) it says so and exits 0.
#
# Each run: `sheaf sink --verify --conns 1`, the proxy under test, and
# `sheaf source --verify` through it, all on 127.0.0.1. The sink checks every
# byte of the stream (the header names it; proxy.c forwards bytes unchanged),
# and the byte counts of source and sink must agree. Throughput is the
# sink's (first byte to last); proxy CPU is utime+stime of the whole proxy
# process (all threads; proxy.c runs one thread per connection) from
# /proc/PID/stat, from just before the source starts to just after the sink
# has the last byte, per GiB of the stream.
#
# Environment (defaults in brackets):
#   LIBURING_PROXY  the liburing example binary (required, else skip)
#   SHEAF           the sheaf binary [build/sheaf]
#   ROUNDS          rounds; each round runs both proxies at each size, the
#                   order alternating from round to round [5]
#   SIZES           buffer sizes in bytes [32 1024]
#   BYTES           bytes per run [256M]: proxy.c sets up its ring and buffers
#                   for each connection, inside the measured window (sheaf at
#                   start): at 1 KiB its CPU-s/GiB was 1.60 at 64M, 0.68 at 256M
#   BUFS            buffers for both proxies; empty: sheaf's default for the
#                   size (read from its banner) and the same -n for proxy.c
#                   (a power of two, as proxy.c needs) []
#   LIBURING_BUFS   proxy.c's -n instead of the same count (e.g. 256, its
#                   own default) []
#   LIBURING_FLAGS  proxy.c's mode flags [-m1 -u1 -C1 -c1]: multishot recv,
#                   ring-provided send buffers, send and recv bundles; its
#                   defaults add DEFER_TASKRUN, fixed files and a registered
#                   ring fd
#   SHEAF_FLAGS     [--io bundle]
#   SHEAF_B, SHEAF_B_FLAGS  either set: a third proxy in every round, "sheaf-b"
#                   (another binary and/or other flags, for before/after; the
#                   ratio column stays sheaf / liburing, sheaf-b's in its own)
#   RUN_TIMEOUT     seconds a run may take before it fails [60]
#   OUT             also write every run (tab-separated) to this file
# proxy.c listens on INADDR_ANY (it has no option for the address); the
# traffic itself is loopback only.
set -u

LP=${LIBURING_PROXY:-}
if [ -z "$LP" ] || [ ! -x "$LP" ]; then
	echo "vs_liburing: skipped: set LIBURING_PROXY to liburing's examples/proxy binary" \
	     "(built outside this repository; see bench/notes.md)${LP:+ ($LP is not an executable)}"
	exit 0
fi
SHEAF=${SHEAF:-build/sheaf}
ROUNDS=${ROUNDS:-5}
SIZES=${SIZES:-32 1024}
BYTES=${BYTES:-256M}
BUFS=${BUFS:-}
LIBURING_BUFS=${LIBURING_BUFS:-}
LIBURING_FLAGS=${LIBURING_FLAGS:--m1 -u1 -C1 -c1}
SHEAF_FLAGS=${SHEAF_FLAGS:---io bundle}
SHEAF_B=${SHEAF_B:-}
SHEAF_B_FLAGS=${SHEAF_B_FLAGS:-}
KINDS="sheaf liburing"
if [ -n "$SHEAF_B$SHEAF_B_FLAGS" ]; then
	KINDS="sheaf sheaf-b liburing"
	SHEAF_B=${SHEAF_B:-$SHEAF}
	SHEAF_B_FLAGS=${SHEAF_B_FLAGS:-$SHEAF_FLAGS}
fi
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
OUT=${OUT:-}
[ -x "$SHEAF" ] || { echo "vs_liburing: $SHEAF not built (make)" >&2; exit 2; }
TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d /tmp/vs_liburing.XXXXXX)
PIDS=()
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# utime + stime of a whole process, in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# wait until FILE has a line with "listening on HOST:PORT"; print PORT
wait_port() {
	local f=$1 _i port
	for _i in $(seq 100); do
		port=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$f" 2>/dev/null | head -1)
		[ -n "$port" ] && { echo "${port##*:}"; return 0; }
		sleep 0.05
	done
	return 1
}

# a TCP port no socket uses, below the ephemeral range, for proxy.c (which
# takes a fixed -r PORT)
free_port() {
	local p lo
	lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
	[ "$lo" -gt 12000 ] || lo=32768
	while :; do
		p=$((10000 + RANDOM % (lo - 10000)))
		ss -Htan "( sport = :$p or dport = :$p )" | grep -q . || { echo "$p"; return; }
	done
}

# wait (up to RUN_TIMEOUT) for PID to exit; its status, or 124 on timeout
wait_pid() {
	local pid=$1 _i
	for _i in $(seq $((RUN_TIMEOUT * 20))); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
		sleep 0.05
	done
	return 124
}

json_num() { grep -o "\"$2\":[0-9.]*" "$1" | head -1 | cut -d: -f2; }

# sheaf's default --bufs for a buffer size, from its banner
sheaf_default_bufs() {
	"$SHEAF" proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:9 --buf-size "$1" \
		> "$TMP/b.out" 2>&1 &
	local p=$!
	PIDS+=("$p")
	wait_port "$TMP/b.out" > /dev/null
	kill -TERM "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	grep -o 'bufs=[0-9]*' "$TMP/b.out" | head -1 | cut -d= -f2
}

# run KIND (sheaf|liburing) SIZE NBUFS ROUND: prints one result line
run() {
	local kind=$1 size=$2 nbufs=$3 round=$4 d="$TMP/run"
	local sink px sport pport c0 c1 src_rc sink_rc sb kb mbps ok extra=""
	rm -rf "$d"; mkdir -p "$d"
	"$SHEAF" sink --listen 127.0.0.1:0 --conns 1 --verify --json \
		> "$d/sink.out" 2> "$d/sink.err" &
	sink=$!; PIDS+=("$sink")
	sport=$(wait_port "$d/sink.err") || { echo "vs_liburing: sink did not start" >&2; return 1; }
	if [ "$kind" != liburing ]; then
		local bin=$SHEAF flags=$SHEAF_FLAGS
		[ "$kind" = sheaf-b ] && { bin=$SHEAF_B; flags=$SHEAF_B_FLAGS; }
		# shellcheck disable=SC2086
		"$bin" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$sport" $flags \
			--buf-size "$size" --bufs "$nbufs" > "$d/px.out" 2> "$d/px.err" &
		px=$!; PIDS+=("$px")
		pport=$(wait_port "$d/px.out") || { echo "vs_liburing: sheaf proxy did not start" >&2; kill -KILL "$sink" "$px"; return 1; }
	else
		local _i _try
		for _try in 1 2 3 4 5; do # another process may take the port first
			pport=$(free_port)
			# shellcheck disable=SC2086
			"$LP" $LIBURING_FLAGS -b "$size" -n "${LIBURING_BUFS:-$nbufs}" -r "$pport" -H 127.0.0.1 \
				-p "$sport" > "$d/px.out" 2> "$d/px.err" &
			px=$!; PIDS+=("$px")
			for _i in $(seq 100); do
				ss -Htln "sport = :$pport" | grep -q . && break 2
				kill -0 "$px" 2>/dev/null || break
				sleep 0.05
			done
			kill -KILL "$px" 2>/dev/null; wait "$px" 2>/dev/null
		done
		ss -Htln "sport = :$pport" | grep -q . ||
			{ echo "vs_liburing: $LP did not listen" >&2; cat "$d/px.err" >&2; kill -KILL "$sink"; return 1; }
	fi
	c0=$(cpu_ticks "$px")
	timeout "$RUN_TIMEOUT" "$SHEAF" source --connect "127.0.0.1:$pport" --bytes "$BYTES" \
		--verify --json > "$d/src.out" 2> "$d/src.err"
	src_rc=$?
	wait_pid "$sink"; sink_rc=$?
	c1=$(cpu_ticks "$px")
	if [ "$kind" != liburing ]; then kill -TERM "$px" 2>/dev/null; else kill -INT "$px" 2>/dev/null; fi
	wait_pid "$px" > /dev/null || kill -KILL "$px" 2>/dev/null
	kill -KILL "$sink" 2>/dev/null
	sb=$(json_num "$d/src.out" bytes); kb=$(json_num "$d/sink.out" bytes)
	mbps=$(json_num "$d/sink.out" mbps)
	ok=ok
	if [ "$src_rc" != 0 ] || [ "$sink_rc" != 0 ] || [ -z "$sb" ] || [ "$sb" != "$kb" ] ||
	   ! grep -q '"verified":true' "$d/sink.out"; then
		ok="FAILED(source=$src_rc sink=$sink_rc bytes=${sb:-?}/${kb:-?})"
		cat "$d/src.err" "$d/sink.err" "$d/px.err" >&2
	fi
	if [ "$kind" != liburing ]; then
		extra="bufs/recv=$(json_num "$d/px.out" bufs_per_recv) bufs/send=$(json_num "$d/px.out" bufs_per_send) enters=$(json_num "$d/px.out" enters)"
	else
		extra="rcv=$(grep -o ' 0: rcv=[0-9]*' "$d/px.out" | cut -d= -f2) snd=$(grep -o ' 1: rcv=0 ([^)]*), snd=[0-9]*' "$d/px.out" | sed 's/.*snd=//') enobufs=$(grep -o ' 0: rcv=[0-9]* (short=[0-9]*, enobufs=[0-9]*' "$d/px.out" | sed 's/.*enobufs=//')"
	fi
	[ "$kind" = liburing ] && nbufs=${LIBURING_BUFS:-$nbufs}
	awk -v k="$kind" -v s="$size" -v n="$nbufs" -v r="$round" -v m="${mbps:-0}" \
	    -v c="$((c1 - c0))" -v t="$TCK" -v b="${kb:-0}" -v ok="$ok" -v x="$extra" \
	    'BEGIN { g = b / 1073741824; printf "%s\t%s\t%s\t%s\t%.1f\t%.3f\t%s\t%s\n",
		     k, s, n, r, m, (g > 0 ? c / t / g : 0), ok, x }'
}

declare -A NB
for s in $SIZES; do
	if [ -n "$BUFS" ]; then NB[$s]=$BUFS; else
		sheaf_default_bufs "$s" > "$TMP/nb"; NB[$s]=$(cat "$TMP/nb"); fi
	[ -n "${NB[$s]}" ] || { echo "vs_liburing: no default --bufs for $s" >&2; exit 2; }
done

echo "# vs_liburing: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# sheaf: $SHEAF proxy $SHEAF_FLAGS --buf-size SIZE --bufs N"
[ -n "$SHEAF_B" ] && echo "# sheaf-b: $SHEAF_B proxy $SHEAF_B_FLAGS --buf-size SIZE --bufs N"
echo "# liburing: $LP $LIBURING_FLAGS -b SIZE -n ${LIBURING_BUFS:-N} -r PORT -H 127.0.0.1 -p SINKPORT"
echo "# source --bytes $BYTES --verify; sink --conns 1 --verify; $ROUNDS rounds"
printf '# proxy\tsize\tbufs\tround\tMbit/s\tCPU-s/GiB\tcheck\tcounters\n'
RES="$TMP/results"
: > "$RES"
fail=0
for r in $(seq "$ROUNDS"); do
	for s in $SIZES; do
		order=$KINDS
		[ $((r % 2)) = 0 ] && order=$(echo "$KINDS" | tr ' ' '\n' | tac | tr '\n' ' ')
		for k in $order; do
			# not in $(...): the pids it starts must reach the cleanup
			run "$k" "$s" "${NB[$s]}" "$r" > "$TMP/line" || { fail=1; continue; }
			line=$(cat "$TMP/line")
			echo "$line"
			echo "$line" >> "$RES"
			[ -n "$OUT" ] && echo "$line" >> "$OUT"
			case "$line" in *FAILED*) fail=1 ;; esac
		done
	done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0;
	else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
col() { awk -F'\t' -v k="$1" -v s="$2" -v c="$3" '$1 == k && $2 == s && $7 == "ok" { print $c }' "$RES"; }

echo
echo "| size | bufs${LIBURING_BUFS:+ (proxy.c: $LIBURING_BUFS)} | sheaf Mbit/s | liburing Mbit/s | ratio | sheaf CPU-s/GiB | liburing CPU-s/GiB |${SHEAF_B:+ sheaf-b Mbit/s | sheaf-b CPU-s/GiB |}"
echo "|---|---|---|---|---|---|---|${SHEAF_B:+---|---|}"
for s in $SIZES; do
	sm=$(col sheaf "$s" 5 | median); lm=$(col liburing "$s" 5 | median)
	sc=$(col sheaf "$s" 6 | median); lc=$(col liburing "$s" 6 | median)
	awk -v s="$s" -v n="${NB[$s]}" -v sm="$sm" -v lm="$lm" -v sc="$sc" -v lc="$lc" \
	    -v sr="$(col sheaf "$s" 5 | range)" -v lr="$(col liburing "$s" 5 | range)" \
	    -v b="$SHEAF_B" -v bm="$(col sheaf-b "$s" 5 | median)" -v bc="$(col sheaf-b "$s" 6 | median)" \
	    -v br="$(col sheaf-b "$s" 5 | range)" \
	    'BEGIN { printf "| %s B | %s | %.0f (%s) | %.0f (%s) | %.2fx | %.3f | %.3f |",
		     s, n, sm, sr, lm, lr, (lm > 0 ? sm / lm : 0), sc, lc
		     if (b != "") printf " %.0f (%s) | %.3f |", bm, br, bc
		     printf "\n" }'
done
echo "(medians of the intact runs; ranges in brackets; ratio = sheaf / liburing)"
exit $fail
