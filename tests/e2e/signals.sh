#!/usr/bin/env bash
# signals.sh: the proxy across signals, in both backends. During a verified
# transfer it gets SIGHUP, SIGUSR1, SIGUSR2 and SIGPIPE (twice each): it must
# keep running, log SIGHUP as ignored, print a counters line per SIGUSR1
# (each with more bytes than the one before), lose nothing, and still stop
# clean on SIGTERM.
. "$(dirname "$0")/lib.sh"
require_sheaf

for m in ${SIGNALS_MODES:-bundle epoll}; do
	start_sink --listen 127.0.0.1:0 --verify --conns 4 || fail "sink did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --io "$m" ||
		fail "$m: proxy did not start"
	# about 2 s of traffic at this machine's pace, throttled by small writes
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes 1G \
		--write-size 4K --verify >"$E2E_TMP/src.out" 2>&1 &
	src=$!
	track $src
	sleep 0.3
	for sig in HUP USR1 USR2 PIPE HUP USR1 USR2 PIPE; do
		alive "$PROXY_PID" || fail "$m: the proxy died before SIG$sig"
		kill -s "$sig" "$PROXY_PID"
		sleep 0.1
	done
	wait_pid $src 60 || fail "$m: source failed: $(tail -2 "$E2E_TMP/src.out")"
	wait_pid "$SINK_PID" 30 || fail "$m: sink saw damage: $(tail -3 "$SINK_ERR")"
	alive "$PROXY_PID" || fail "$m: the proxy did not survive the signals"
	stop "$PROXY_PID" 10 || fail "$m: proxy exited with $? after SIGTERM"
	[ "$(grep -c 'SIGHUP ignored' "$PROXY_ERR")" = 2 ] ||
		fail "$m: SIGHUP not logged twice: $(cat "$PROXY_ERR")"
	lines=$(grep -c 'sheaf proxy: stats' "$PROXY_OUT")
	[ "$lines" = 3 ] || fail "$m: $lines counters lines, want 2 for SIGUSR1 and 1 at the stop"
	b=$(grep 'sheaf proxy: stats' "$PROXY_OUT" | sed -n 's/.*"bytes_in":\([0-9]*\).*/\1/p' | tr '\n' ' ')
	set -- $b
	[ "$1" -le "$2" ] && [ "$2" -le "$3" ] && [ "$3" -gt "$1" ] ||
		fail "$m: bytes_in of the counters lines do not grow: $b"
	pool_balanced "$PROXY_OUT" >/dev/null || fail "$m: pool not balanced"
	echo "ok signals $m: SIGHUP/SIGUSR1/SIGUSR2/SIGPIPE during 4 verified streams: intact, 2 counters lines (bytes_in $1 -> $2), SIGHUP logged"
done
