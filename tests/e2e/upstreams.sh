#!/usr/bin/env bash
# upstreams.sh: several --upstream: clients go round-robin; one that is
# down is skipped (failover) without losing a byte; with none up the proxy
# still starts, and closes each client (no_upstream).
. "$(dirname "$0")/lib.sh"
require_sheaf

dead_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
failed=0
check() { if [ "$2" -eq 0 ]; then echo "ok upstreams: $1"; else echo "FAIL upstreams: $1"; failed=1; fi; }

start_sink --listen 127.0.0.1:0 --verify --conns 4 || fail "sink A"
A_PID=$SINK_PID A_PORT=$SINK_PORT A_OUT=$SINK_OUT
start_sink --listen 127.0.0.1:0 --verify --conns 4 || fail "sink B"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$A_PORT" --upstream "127.0.0.1:$SINK_PORT" ||
	fail "proxy did not start"
timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 8 --bytes 8M --verify >/dev/null
rc=$?
wait_pid "$A_PID" 10 && wait_pid "$SINK_PID" 10 && [ "$rc" -eq 0 ] &&
	grep -q '4 streams, 4 intact' "$A_OUT" && grep -q '4 streams, 4 intact' "$SINK_OUT"
check "8 clients round-robin over 2 upstreams, 4 intact streams each" $?
stop "$PROXY_PID" 10
prc=$?
pool=$(pool_balanced "$PROXY_OUT")
pool_ok=$?
[ "$prc" -eq 0 ] && [ "$pool_ok" -eq 0 ]
ok=$?
check "proxy stops clean (exit $prc, pool $pool)" "$ok"

dead=$(dead_port)
start_sink --listen 127.0.0.1:0 --verify --conns 4 || fail "sink C"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" --upstream "127.0.0.1:$SINK_PORT" ||
	fail "proxy with one dead upstream did not start: $(cat "$PROXY_ERR")"
timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes 4M --verify >/dev/null
rc=$?
wait_pid "$SINK_PID" 10 && [ "$rc" -eq 0 ] && grep -q '4 streams, 4 intact' "$SINK_OUT"
check "clients whose turn was the dead upstream fail over, all 4 intact" $?
[ "$(grep -c "upstream 127.0.0.1:$dead down: Connection refused" "$PROXY_ERR")" -eq 1 ]
check "the dead upstream is named once, when a client found it down" $?
stop "$PROXY_PID" 10
prc=$?
[ "$prc" -eq 0 ] && grep -q '"connect_failed":[1-9]' "$PROXY_OUT" &&
	pool_balanced "$PROXY_OUT" >/dev/null
ok=$?
check "failed connects counted, pool balanced, proxy exit $prc" "$ok"

start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" --upstream "127.0.0.1:$(dead_port)" ||
	fail "proxy with no upstream up did not start: $(cat "$PROXY_ERR")"
got=$(timeout 10 python3 -c "
import socket
s = socket.create_connection(('127.0.0.1', $PROXY_PORT)); s.settimeout(5)
try:
    print(repr(s.recv(1)))
except OSError as e:
    print(type(e).__name__)")
stop "$PROXY_PID" 10
prc=$?
[ "$prc" -eq 0 ] && [ "$(proxy_stat "$PROXY_OUT" no_upstream)" = 1 ] &&
	[ "$(proxy_stat "$PROXY_OUT" connect_failed)" = 2 ] && [ "$(grep -c ' down: ' "$PROXY_ERR")" -eq 2 ]
check "no upstream up: the proxy starts, tries both for a client, closes it ($got), no_upstream 1" $?
exit $failed
