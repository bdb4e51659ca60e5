#!/usr/bin/env bash
# valgrind.sh: small end-to-end cases with one sheaf process under
# valgrind --tool=memcheck --leak-check=full --error-exitcode=99; each case
# passes only when its traffic verified, the process exited 0 (so memcheck
# found no error: 99 otherwise) and its log says "definitely lost" and
# "indirectly lost" 0 ("possibly lost" counts as an error too; "still
# reachable" is allowed but reported, and is 0 today: everything is freed).
#   proxy, per VALGRIND_MODES (default "epoll bundle"):
#     stream  4 verified streams, 4 MiB in all, into sink --verify
#     echo    4 verified echo streams (4 MiB) and 2 request/response
#             connections against sink --echo
#     reset   30 clients that send part of a stream and reset (SO_LINGER 0)
#             beside 2 verified echo streams (2 MiB)
#     and then SIGTERM: exit 0, every pool buffer returned
#   sink    --verify (epoll and bundle), 4 streams, 4 MiB from sheaf source
#   source  --verify --echo, 4 streams, 4 MiB through sink --verify --echo
# The peers run natively.  In the io_uring modes the proxy gets
# --idle-timeout 500: valgrind 3.19 runs one thread at a time and does not
# let go of that lock while a thread blocks in io_uring_enter (the syscall
# is not marked as blocking), so a SIGTERM woke the main thread's sigwait
# but that thread never ran while the loop slept: the proxy never stopped.
# The idle timer's sweep returns from io_uring_enter every 0.5 s.  Memcheck
# cannot see what the kernel writes through io_uring (received bytes land in
# the mmap'd pool, which it already counts as defined), so in those modes it
# checks the library's own memory use, not the definedness of data.
# Skips (77) when valgrind is missing or $SHEAF is built with ASan.
# Env: SHEAF, VALGRIND_MODES.
. "$(dirname "$0")/lib.sh"
require_sheaf
command -v valgrind >/dev/null 2>&1 || skip "valgrind missing (make deps installs it)"
command -v python3 >/dev/null 2>&1 || skip "python3 missing"
grep -q __asan_init "$SHEAF" 2>/dev/null && skip "$SHEAF is built with ASan: valgrind cannot run it"

MODES=${VALGRIND_MODES:-"epoll bundle"}
VG_SEQ=0

# vg VAR OUT ERR ARGS...: sheaf ARGS under memcheck in the background; VAR_PID, VAR_LOG.
vg() {
	local var=$1 out=$2 err=$3 log
	shift 3
	VG_SEQ=$((VG_SEQ + 1))
	log="$E2E_TMP/vg.$VG_SEQ.log"
	valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
		--error-exitcode=99 --log-file="$log" "$SHEAF" "$@" >"$out" 2>"$err" &
	track $!
	printf -v "${var}_PID" '%s' $!
	printf -v "${var}_LOG" '%s' "$log"
}

# vg_port FILE PID: the "listening on" port in FILE; memcheck may take a while to start (30 s).
vg_port() {
	local i=0 port
	while [ "$i" -lt 6 ]; do
		port=$(wait_port "$1" "$2") && { echo "$port"; return 0; }
		alive "$2" || return 1
		i=$((i + 1))
	done
	return 1
}

# vg_verdict LOG: "" when clean, else what memcheck found; prints the leak summary either way to fd 3.
vg_verdict() {
	local log=$1 errs def ind pos reach
	errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$log" | tail -n1 | tr -d ,)
	def=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1 | tr -d ,)
	ind=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1 | tr -d ,)
	pos=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1 | tr -d ,)
	reach=$(sed -n 's/.*still reachable: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1 | tr -d ,)
	# "All heap blocks were freed" replaces the leak summary when nothing is left
	grep -q 'All heap blocks were freed' "$log" && def=0 ind=0 pos=0 reach=0
	VG_NOTE="memcheck: ${errs:-?} errors, lost ${def:-?}/${ind:-?}/${pos:-?} B (definite/indirect/possible), reachable ${reach:-?} B"
	[ "${errs:-x}" = 0 ] && [ "${def:-x}" = 0 ] && [ "${ind:-x}" = 0 ] && [ "${pos:-x}" = 0 ] && return 0
	VG_NOTE="$VG_NOTE: $(grep -E '== +(Invalid|Conditional|Use of|Syscall param|[0-9,]+ bytes in)' "$log" | head -n 3 | tr '\n' ' ' | cut -c1-300)"
	return 1
}

# proxy_case NAME MODE SINK_ARGS -- CLIENT_FUNCTION: a proxy under memcheck in
# MODE in front of a native sink; CLIENT_FUNCTION PORT runs the traffic and
# sets WHY on failure.
proxy_case() {
	local name=$1 mode=$2 sargs=() rc port pool extra=()
	shift 2
	while [ "$1" != -- ]; do sargs+=("$1"); shift; done
	shift
	WHY=""
	start_sink --listen 127.0.0.1:0 "${sargs[@]}" ||
		{ report 1 "$name: sink did not start: $(one_line "$SINK_ERR")"; return; }
	[ "$mode" = epoll ] || extra=(--idle-timeout 500)
	local out="$E2E_TMP/proxy.$name.out" err="$E2E_TMP/proxy.$name.err"
	vg P "$out" "$err" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" \
		--io "$mode" "${extra[@]}"
	if ! port=$(vg_port "$out" "$P_PID"); then
		report 1 "$name: proxy did not start: $(one_line "$err") $(tail -n 5 "$P_LOG" | tr '\n' ' ')"
		stop "$SINK_PID" 5
		return
	fi
	"$1" "$port"
	stop "$P_PID" 60
	rc=$?
	[ "$rc" -eq 0 ] || WHY="$WHY; proxy exit $rc: $(one_line "$err")"
	pool=$(pool_balanced "$out") || WHY="$WHY; pool free/bufs $pool"
	vg_verdict "$P_LOG" || WHY="$WHY; $VG_NOTE"
	stop "$SINK_PID" 5
	if [ -z "$WHY" ]; then
		report 0 "proxy $name: traffic verified, exit 0, pool $pool; $VG_NOTE"
	else
		report 1 "proxy $name${WHY/#;/:}"
	fi
}

# src PORT OUTNAME ARGS...: sheaf source (native, bounded); WHY on failure.
src() {
	local port=$1 o="$E2E_TMP/src.$2" rc
	shift 2
	timeout 120 "$SHEAF" source --connect "127.0.0.1:$port" --json "$@" >"$o.out" 2>"$o.err"
	rc=$?
	[ "$rc" -eq 0 ] && grep -q '"ok":true' "$o.out" ||
		WHY="$WHY; source $* exit $rc: $(one_line "$o.err") $(one_line "$o.out")"
}

traffic_stream() {
	src "$1" stream --conns 4 --bytes 4M --verify
	local rc
	wait_pid "$SINK_PID" 60
	rc=$?
	[ "$rc" -eq 0 ] || WHY="$WHY; sink exit $rc: $(one_line "$SINK_ERR")"
	grep -q '4 streams, 4 intact' "$SINK_OUT" || WHY="$WHY; sink: $(one_line "$SINK_OUT")"
}

traffic_echo() {
	src "$1" echo --conns 4 --bytes 4M --verify --echo
	src "$1" rr --rr 100 --conns 2 --bytes 20K
}

traffic_reset() {
	local py=$E2E_TMP/reset.out
	timeout 60 python3 - "$1" 30 >"$py" 2>&1 <<'EOF' &
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
junk = bytes(range(256)) * 1024
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"SHEAFST1" + struct.pack("<QQQ", 1000 + i, 1, 1 << 30))
    s.setblocking(False)
    try:
        s.send(junk[: (i * 13 * 1024) % len(junk) + 1])
    except OSError:
        pass
    time.sleep(0.02 * (i % 3))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print("resets", n)
EOF
	local pid=$! rc
	track "$pid"
	src "$1" reset --conns 2 --bytes 2M --verify --echo
	wait_pid "$pid" 70
	rc=$?
	[ "$rc" -eq 0 ] || WHY="$WHY; reset client exit $rc: $(one_line "$py")"
	grep -q '^resets 30' "$py" || WHY="$WHY; reset client: $(one_line "$py")"
}

for m in $MODES; do
	proxy_case "$m-stream" "$m" --verify --conns 4 -- traffic_stream
	proxy_case "$m-echo" "$m" --echo -- traffic_echo
	proxy_case "$m-reset" "$m" --echo -- traffic_reset
done

# the sink under memcheck, in both backends
for m in epoll bundle; do
	WHY=""
	vg S "$E2E_TMP/sink.$m.out" "$E2E_TMP/sink.$m.err" sink --listen 127.0.0.1:0 --verify \
		--conns 4 --io "$m"
	if port=$(vg_port "$E2E_TMP/sink.$m.err" "$S_PID"); then
		src "$port" "sink-$m" --conns 4 --bytes 4M --verify
		wait_pid "$S_PID" 60
		rc=$?
		[ "$rc" -eq 0 ] || WHY="$WHY; sink exit $rc: $(one_line "$E2E_TMP/sink.$m.err")"
		grep -q '4 streams, 4 intact' "$E2E_TMP/sink.$m.out" ||
			WHY="$WHY; sink: $(one_line "$E2E_TMP/sink.$m.out")"
		vg_verdict "$S_LOG" || WHY="$WHY; $VG_NOTE"
	else
		WHY="; sink did not start: $(one_line "$E2E_TMP/sink.$m.err")"
	fi
	if [ -z "$WHY" ]; then report 0 "sink $m: 4 streams intact, exit 0; $VG_NOTE"; else report 1 "sink $m${WHY/#;/:}"; fi
done

# the source under memcheck, verifying the echo
WHY=""
if start_sink --listen 127.0.0.1:0 --verify --echo --conns 4; then
	vg C "$E2E_TMP/source.out" "$E2E_TMP/source.err" source --connect "127.0.0.1:$SINK_PORT" \
		--conns 4 --bytes 4M --verify --echo --json
	wait_pid "$C_PID" 120
	rc=$?
	[ "$rc" -eq 0 ] && grep -q '"ok":true' "$E2E_TMP/source.out" ||
		WHY="$WHY; source exit $rc: $(one_line "$E2E_TMP/source.err") $(one_line "$E2E_TMP/source.out")"
	wait_pid "$SINK_PID" 30
	rc=$?
	[ "$rc" -eq 0 ] || WHY="$WHY; sink exit $rc: $(one_line "$SINK_ERR")"
	vg_verdict "$C_LOG" || WHY="$WHY; $VG_NOTE"
else
	WHY="; sink did not start: $(one_line "$SINK_ERR")"
fi
if [ -z "$WHY" ]; then report 0 "source --echo: 4 streams verified both ways, exit 0; $VG_NOTE"; else report 1 "source${WHY/#;/:}"; fi

exit "$E2E_FAILED"
