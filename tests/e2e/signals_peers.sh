#!/usr/bin/env bash
# signals_peers.sh: SIGHUP (logged, ignored), SIGUSR1 (prints the counters line,
# keeps running), SIGUSR2 and SIGPIPE (ignored) reach sink and source in the
# middle of a verified transfer, and the transfer still verifies.
#
# "In the middle" without a race: the sink is stopped (SIGSTOP) before the
# source starts, so the source connects, fills the socket buffers and waits
# with most of its bytes unsent while it gets its signals; then the source is
# stopped and the sink continued: the sink reads what is buffered and waits,
# both streams open and short, while it gets its signals; then both go on.
. "$(dirname "$0")/lib.sh"
require_sheaf

BYTES=$((64 << 20))
TOTAL=$((BYTES + 2 * 32)) # and a 32-byte header per stream

# signal_all PID: SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE, a little apart.
signal_all() {
	local sig
	for sig in HUP USR1 USR2 PIPE; do
		kill -"$sig" "$1" 2>/dev/null || return 1
		sleep 0.1
	done
}

# counter FILE NAME: NAME's value in FILE's last "counters" line.
counter() {
	grep 'counters {' "$1" | tail -n1 | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

start_sink --listen 127.0.0.1:0 --verify --conns 2 ||
	fail "sink did not start: $(one_line "$SINK_ERR")"
kill -STOP "$SINK_PID"
SRC_OUT=$E2E_TMP/source.out SRC_ERR=$E2E_TMP/source.err
"$SHEAF" source --connect "127.0.0.1:$SINK_PORT" --verify --conns 2 --bytes $BYTES \
	>"$SRC_OUT" 2>"$SRC_ERR" &
SRC_PID=$!
track "$SRC_PID"
sleep 0.5 # connected, buffers full

# the source, while it waits for the stopped sink
signal_all "$SRC_PID"
wait_line "$SRC_ERR" 'sheaf source: counters \{' 5
sent=$(counter "$SRC_ERR" sent)
alive "$SRC_PID" && grep -q 'sheaf source: SIGHUP' "$SRC_ERR" &&
	[ "${sent:-0}" -gt 0 ] && [ "$sent" -lt "$TOTAL" ]
report $? "source: SIGHUP logged, SIGUSR1 counters line (sent ${sent:-?} of $TOTAL)," \
	"SIGUSR2 and SIGPIPE ignored, still running: $(one_line "$SRC_ERR")"

# the sink, with both streams open and the source stopped
kill -STOP "$SRC_PID" 2>/dev/null
kill -CONT "$SINK_PID"
sleep 0.5 # the sink drains what was buffered
signal_all "$SINK_PID"
wait_line "$SINK_ERR" 'sheaf sink: counters \{' 5
open=$(counter "$SINK_ERR" open) got=$(counter "$SINK_ERR" bytes)
alive "$SINK_PID" && grep -q 'sheaf sink: SIGHUP' "$SINK_ERR" && [ "${open:-0}" -eq 2 ] &&
	[ "${got:-0}" -gt 0 ] && [ "$got" -lt "$TOTAL" ]
report $? "sink: SIGHUP logged, SIGUSR1 counters line (2 open: ${open:-?}, ${got:-?} of" \
	"$TOTAL bytes), SIGUSR2 and SIGPIPE ignored, still running: $(one_line "$SINK_ERR")"

# both go on; one more round each while the bytes flow
kill -CONT "$SRC_PID" 2>/dev/null
signal_all "$SRC_PID"
signal_all "$SINK_PID"
wait_pid "$SRC_PID" 60
src_rc=$?
wait_pid "$SINK_PID" 60
sink_rc=$?
[ "$src_rc" -eq 0 ] && [ "$sink_rc" -eq 0 ] && grep -q '2 streams, 2 intact, 0 failed' "$SINK_OUT"
report $? "the transfer verified across the signals: source exit $src_rc, sink exit $sink_rc:" \
	"$(one_line "$SINK_OUT") $(one_line "$SRC_OUT")"

exit $E2E_FAILED
