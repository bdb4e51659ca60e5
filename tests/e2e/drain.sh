#!/usr/bin/env bash
# drain.sh: SIGTERM is a soft stop. Verified echo streams through a slow
# upstream are in flight when the proxy gets SIGTERM: with --drain-timeout
# longer than they need, they complete intact, new clients are refused at
# once, every connection ends normally (--) and the proxy exits 0 once they
# are done; with a shorter one, the proxy cuts them at its end (KD), exits
# 0 with every buffer back, and the clients see the cut. Both backends.
. "$(dirname "$0")/lib.sh"
require_sheaf

# refused PORT: true when a connection to PORT is refused
refused() {
	python3 -c 'import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
except ConnectionRefusedError:
    sys.exit(0)
sys.exit(1)' "$1"
}

# ms since the epoch
now_ms() { date +%s%3N; }

for m in ${DRAIN_MODES:-bundle epoll}; do
	# 1. the transfers need ~1.5 s after SIGTERM; the drain allows 20
	start_server slow --chunk 4096 --delay 0.01 || fail "$m: slow upstream did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SERVER_PORT" --io "$m" \
		--drain-timeout 20000 --log conn || fail "$m: proxy did not start: $(one_line "$PROXY_ERR")"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes 3M \
		--verify --echo >"$E2E_TMP/src1.$m" 2>&1 &
	src=$!
	track $src
	sleep 0.5
	alive $src
	running=$?
	t0=$(now_ms)
	kill -TERM "$PROXY_PID"
	sleep 0.2
	refused "$PROXY_PORT"
	ref=$?
	wait_pid $src 60
	srt=$?
	t1=$(now_ms)
	wait_pid "$PROXY_PID" 30
	prc=$?
	t2=$(now_ms)
	[ "$running" -eq 0 ]
	report $? "$m: the streams were in flight at SIGTERM"
	[ "$ref" -eq 0 ]
	report $? "$m: after SIGTERM, new clients are refused (the listener closed)"
	[ "$srt" -eq 0 ]
	report $? "$m: the 4 verified echo streams complete intact after SIGTERM ($((t1 - t0)) ms): $(one_line "$E2E_TMP/src1.$m")"
	[ "$prc" -eq 0 ] && [ $((t2 - t0)) -lt 20000 ] && [ $((t2 - t1)) -lt 3000 ]
	report $? "$m: the proxy exits 0 once they are done ($((t2 - t0)) ms after SIGTERM, exit $prc)"
	n=$(grep -c ' --$' "$PROXY_OUT")
	[ "$n" -eq 4 ] && pool_balanced "$PROXY_OUT" >/dev/null
	report $? "$m: 4 connections ended normally (--: $n), pool $(pool_balanced "$PROXY_OUT")"

	# 2. the transfers need ~5 s; the drain allows 0.5
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SERVER_PORT" --io "$m" \
		--drain-timeout 500 --log conn || fail "$m: proxy did not start: $(one_line "$PROXY_ERR")"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes 8M \
		--verify --echo >"$E2E_TMP/src2.$m" 2>&1 &
	src=$!
	track $src
	sleep 0.5
	t0=$(now_ms)
	kill -TERM "$PROXY_PID"
	wait_pid "$PROXY_PID" 30
	prc=$?
	t2=$(now_ms)
	wait_pid $src 60
	srt=$?
	[ "$prc" -eq 0 ] && [ $((t2 - t0)) -ge 450 ] && [ $((t2 - t0)) -lt 3000 ]
	report $? "$m: --drain-timeout 500: the proxy exits 0 $((t2 - t0)) ms after SIGTERM"
	[ "$srt" -ne 0 ]
	report $? "$m: the clients see the cut (source exit $srt)"
	n=$(grep -c ' KD$' "$PROXY_OUT")
	[ "$n" -eq 4 ] && pool_balanced "$PROXY_OUT" >/dev/null
	report $? "$m: 4 connections cut at the drain's end (KD: $n), pool $(pool_balanced "$PROXY_OUT")"
	kill "$SERVER_PID" 2>/dev/null
done
exit $E2E_FAILED
