#!/usr/bin/env bash
# upstreams.sh: several --upstream: clients go round-robin; one that is
# down is skipped (failover) without losing a byte; none up -> exit 1.
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
grep -q "upstream 127.0.0.1:$dead: Connection refused" "$PROXY_ERR"
check "a dead upstream at start is named, the proxy goes on" $?
timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes 4M --verify >/dev/null
rc=$?
wait_pid "$SINK_PID" 10 && [ "$rc" -eq 0 ] && grep -q '4 streams, 4 intact' "$SINK_OUT"
check "clients whose turn was the dead upstream fail over, all 4 intact" $?
stop "$PROXY_PID" 10
prc=$?
[ "$prc" -eq 0 ] && grep -q '"connect_failed":[1-9]' "$PROXY_OUT" &&
	pool_balanced "$PROXY_OUT" >/dev/null
ok=$?
check "failed connects counted, pool balanced, proxy exit $prc" "$ok"

out=$("$SHEAF" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" \
	--upstream "127.0.0.1:$(dead_port)" 2>&1)
rc=$?
[ "$rc" -eq 1 ] && [ "$(printf '%s\n' "$out" | grep -c 'Connection refused')" -eq 2 ]
check "no upstream up at start -> exit 1 naming each (rc $rc)" $?
exit $failed
