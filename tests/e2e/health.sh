#!/usr/bin/env bash
# health.sh: the proxy connects to an upstream only for a client; it starts
# with its only upstream down and serves once it is up; a failed upstream is
# skipped for a pause that doubles (1 s, then 2 s); with every upstream down
# each client still tries them all; --check-interval finds an upstream down
# and up again with no client.
. "$(dirname "$0")/lib.sh"
require_sheaf

# --- 1. no connection before a client -------------------------------------
start_server banner --name A || fail "banner server did not start"
A_OUT=$SERVER_OUT
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SERVER_PORT" ||
	fail "proxy did not start: $(one_line "$PROXY_ERR")"
sleep 1.5
before=$(grep -c accepted "$A_OUT")
got=$(names --port "$PROXY_PORT" --conns 1)
after=$(grep -c accepted "$A_OUT")
[ "$before" -eq 0 ] && [ "$got" = A ] && [ "$after" -eq 1 ]
st=$?
report $st "no connection reaches the upstream before a client (1.5 s after start: $before;" \
	"after one client, which got '$got': $after)"
stop "$PROXY_PID" 10 >/dev/null

# --- 2. the only upstream down at start, then up ---------------------------
dead=$(free_port)
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" ||
	fail "proxy with its upstream down did not start: $(one_line "$PROXY_ERR")"
got=$(names --port "$PROXY_PORT" --conns 1)
start_sink --listen "127.0.0.1:$dead" --verify --conns 4 || fail "sink on port $dead did not start"
timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes 4M --verify \
	>/dev/null 2>&1
src=$?
wait_pid "$SINK_PID" 10
snk=$?
stop "$PROXY_PID" 10
prc=$?
[ "$got" = - ] && [ "$src" -eq 0 ] && [ "$snk" -eq 0 ] && [ "$prc" -eq 0 ] &&
	grep -q '4 streams, 4 intact' "$SINK_OUT" &&
	[ "$(proxy_stat "$PROXY_OUT" no_upstream)" = 1 ] &&
	grep -q "upstream 127.0.0.1:$dead down: Connection refused" "$PROXY_ERR" &&
	grep -q "upstream 127.0.0.1:$dead up$" "$PROXY_ERR" && pool_balanced "$PROXY_OUT" >/dev/null
st=$?
report $st "started with its upstream down (client closed: '$got'), then 4 verified streams" \
	"once it is up, no restart (source $src, sink $snk, proxy $prc;" \
	"$(grep -c upstream "$PROXY_ERR") down/up lines)"

# --- 3. failover, and the pause that doubles --------------------------------
dead=$(free_port)
start_server banner --name B || fail "banner server did not start"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" --upstream "127.0.0.1:$SERVER_PORT" ||
	fail "proxy did not start: $(one_line "$PROXY_ERR")"
# 10 clients: the first tries the dead one (paused 1 s); 1.3 s later, 5: the
# first tries it again (fails: paused 2 s); 1.4 s later (past 1 s, within 2),
# 5: not tried; 1 s later (past 2 s), 5: the first tries it. One process
# times the steps.
all=$(names --port "$PROXY_PORT" --plan 10,+1.3,5,+1.4,5,+1.0,5)
stop "$PROXY_PID" 10
prc=$?
nb=$(printf '%s\n' $all | grep -cx B)
failed_n=$(proxy_stat "$PROXY_OUT" connect_failed)
conns_n=$(proxy_stat "$PROXY_OUT" connects)
[ "$prc" -eq 0 ] && [ "$nb" -eq 25 ]
st=$?
report $st "one upstream down: 25 of 25 clients served by the other ($nb)"
[ "$failed_n" = 3 ] && [ "$conns_n" = 28 ] &&
	[ "$(grep -c "upstream 127.0.0.1:$dead down" "$PROXY_ERR")" -eq 1 ]
st=$?
report $st "the down upstream is tried 3 times for 25 clients over 3.7 s (pause 1 s, then 2 s):" \
	"connect_failed $failed_n, connects $conns_n, one down line"

# --- 4. every upstream down: each client still tries both -------------------
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$(free_port)" \
	--upstream "127.0.0.1:$(free_port)" || fail "proxy did not start: $(one_line "$PROXY_ERR")"
got=$(names --port "$PROXY_PORT" --conns 2)
stop "$PROXY_PID" 10
prc=$?
[ "$prc" -eq 0 ] && [ "$got" = "- -" ] && [ "$(proxy_stat "$PROXY_OUT" connect_failed)" = 4 ] &&
	[ "$(proxy_stat "$PROXY_OUT" no_upstream)" = 2 ] &&
	[ "$(proxy_stat "$PROXY_OUT" upstreams_down)" = 2 ]
st=$?
report $st "all upstreams down: the second client (inside the pause) still tries both, then is" \
	"closed ('$got'; $(grep -o '"connect_failed":[0-9]*' "$PROXY_OUT")," \
	"$(grep -o '"no_upstream":[0-9]*' "$PROXY_OUT"))"

# --- 5. --check-interval: down and up with no client ------------------------
dead=$(free_port)
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" --check-interval 200 ||
	fail "proxy did not start: $(one_line "$PROXY_ERR")"
wait_line "$PROXY_ERR" "upstream 127.0.0.1:$dead down: Connection refused" 5
down1=$?
start_server banner --name C --port "$dead" || fail "banner server on port $dead did not start"
wait_line "$PROXY_ERR" "upstream 127.0.0.1:$dead up$" 5
up=$?
kill "$SERVER_PID"
wait_pid "$SERVER_PID" 5
wait_line "$PROXY_ERR" "upstream 127.0.0.1:$dead down" 5 2
down2=$?
checks=$(grep -c accepted "$SERVER_OUT")
t0=$(date +%s%N)
stop "$PROXY_PID" 10
prc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$down1" -eq 0 ] && [ "$up" -eq 0 ] && [ "$down2" -eq 0 ] && [ "$checks" -ge 1 ] &&
	[ "$(proxy_stat "$PROXY_OUT" accepted)" = 0 ]
st=$?
report $st "--check-interval 200: down, up ($checks checks accepted), down again, no client" \
	"($(grep -c upstream "$PROXY_ERR") lines)"
[ "$prc" -eq 0 ] && [ "$ms" -lt 2500 ]
st=$?
report $st "with checks running the proxy stops at once (exit $prc in $ms ms)"
exit $E2E_FAILED
