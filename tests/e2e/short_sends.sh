#!/usr/bin/env bash
# short_sends.sh: sends the kernel completes only in part must resume at the
# right byte. Per io mode:
#   echo   `sheaf source --echo --verify` -> proxy (--buf-size 64K) ->
#          `sheaf sink --echo --verify`, 16 connections, $RUNS runs: large
#          bundles against full loopback sockets come back short;
#   slow   a slow echo upstream (servers.py slow: 4 KiB receive buffer, 4 KiB
#          per read, 1 ms pause after each) behind the same proxy, 4 clients
#          of 8 MB each (servers.py client --expect echo): more than the
#          proxy's socket send buffer takes, so its sends to the upstream
#          fill it and come back short.
#   tight  the echo case inside a network namespace of its own whose TCP
#          socket buffers are 4 KiB (net.ipv4.tcp_wmem/rmem), so that a
#          bundle send may come back short: bundle mode is repeated until
#          one has (at most $RUNS runs), the other modes run once. Whether
#          it happens depends on timing
#          sheaf does not control (3-57 a run here; none in 5 runs on one CI
#          machine; docs/KERNEL.md). So the count is reported, not required:
#          the resume rule is proven by test_sendq (random short passes) and
#          kernel_send_bundle_commit (the kernel's side, forced short with
#          MSG_DONTWAIT).
# Every byte verified (source/sink, client and the upstream), the proxy stops
# with exit 0 and a balanced pool. The ok line gives the proxy's send_short
# counter (completions that sent less than they were given; n/a when the
# binary has no such counter).
# Env: SHORT_SENDS_MODES, SHORT_SENDS_RUNS (5).
. "$(dirname "$0")/lib.sh"
require_sheaf
command -v python3 >/dev/null 2>&1 || skip "python3 missing"

MODES=${SHORT_SENDS_MODES:-"bundle ring plain sendmsg epoll recvmsg"}
RUNS=${SHORT_SENDS_RUNS:-5}
CONNS=16
ECHO_BYTES=32M   # over all connections
SLOW_CONNS=4
SLOW_BYTES=8M    # per connection

# tight_case MODE: inside the namespace (this script runs itself there).
tight_case() {
	local mode=$1 name run prc pool pool_ok short shorts="" reason="" runs=1
	name="short_sends $mode tight 4K socket buffers, echo 64K x$CONNS"
	[ "$mode" = bundle ] && runs=$RUNS
	for run in $(seq "$runs"); do
		echo_run "$mode" "$name" "$run" 64M 60
		case $? in 0) ;; 2) return 2 ;; *) return 1 ;; esac
		[ -z "$reason" ] || break
		[ "$short" != n/a ] && [ "$short" -gt 0 ] && break
	done
	if [ -n "$reason" ]; then
		echo "FAIL $name${reason/#;/:}"
		return 1
	fi
	echo "ok $name: 64M both ways verified; send_short per run:$shorts; pool $pool"
}

failed=0 passed=0 skipped=""

# stop_proxy_check: stop the proxy; sets prc, pool, pool_ok, short.
stop_proxy_check() {
	stop "$PROXY_PID" 10
	prc=$?
	pool=$(pool_balanced "$PROXY_OUT")
	pool_ok=$?
	short=$(proxy_stat "$PROXY_OUT" send_short) || short=n/a
}

# echo_run MODE NAME RUN BYTES TIMEOUT: one verified echo run through a fresh
# sink and proxy; adds to the caller's `reason` and `shorts`, sets prc,
# pool, pool_ok and short. Returns 2 when the mode is missing, 1 when a
# peer did not start.
echo_run() {
	local mode=$1 name=$2 run=$3 bytes=$4 limit=$5 src_out src_err src snk
	if ! start_sink --listen 127.0.0.1:0 --verify --echo --conns "$CONNS"; then
		echo "FAIL $name: sink did not start: $(one_line "$SINK_ERR")"
		return 1
	fi
	start_proxy_case "$name" --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" \
		--io "$mode" --buf-size 64K
	case $? in
	0) ;;
	2) stop "$SINK_PID" 2; return 2 ;;
	*) stop "$SINK_PID" 2; return 1 ;;
	esac
	src_out="$E2E_TMP/source.$E2E_SEQ.out" src_err="$E2E_TMP/source.$E2E_SEQ.err"
	timeout "$limit" "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns "$CONNS" \
		--bytes "$bytes" --verify --echo >"$src_out" 2>"$src_err"
	src=$?
	wait_pid "$SINK_PID" 10
	snk=$?
	stop_proxy_check
	shorts="$shorts $short"
	[ "$src" -eq 0 ] || reason="$reason; run $run: source rc=$src: $(one_line "$src_err")"
	[ "$snk" -eq 0 ] && grep -q "$CONNS streams, $CONNS intact" "$SINK_OUT" ||
		reason="$reason; run $run: sink rc=$snk: $(one_line "$SINK_OUT") $(one_line "$SINK_ERR")"
	[ "$prc" -eq 0 ] || reason="$reason; run $run: proxy rc=$prc: $(one_line "$PROXY_ERR")"
	[ "$pool_ok" -eq 0 ] || reason="$reason; run $run: pool free/bufs $pool"
	return 0
}

# echo_case MODE: $RUNS verified echo runs, a fresh sink and proxy each.
echo_case() {
	local mode=$1 name run prc pool pool_ok short shorts="" reason=""
	name="short_sends $mode echo 64K x$CONNS"
	for run in $(seq "$RUNS"); do
		echo_run "$mode" "$name" "$run" "$ECHO_BYTES" 30
		case $? in
		0) ;;
		2) skipped="$skipped $mode"; return 2 ;;
		*) return 1 ;;
		esac
		[ -z "$reason" ] || break
	done
	if [ -n "$reason" ]; then
		echo "FAIL $name${reason/#;/:}"
		return 1
	fi
	echo "ok $name: $RUNS runs of $ECHO_BYTES both ways verified; send_short per run:$shorts;" \
		"pool $pool"
}

# slow_case MODE
slow_case() {
	local mode=$1 name cout crc skip0 nok prc pool pool_ok short reason=""
	name="short_sends $mode slow upstream x$SLOW_CONNS"
	skip0=$(wc -l <"$SLOW_OUT")
	start_proxy_case "$name" --listen 127.0.0.1:0 --upstream "127.0.0.1:$SLOW_PORT" \
		--io "$mode" --buf-size 64K
	case $? in
	0) ;;
	2) skipped="$skipped $mode"; return 2 ;;
	*) return 1 ;;
	esac
	cout="$E2E_TMP/client.$E2E_SEQ.out"
	timeout 60 python3 "$REPO_ROOT/tests/e2e/servers.py" client --port "$PROXY_PORT" \
		--conns "$SLOW_CONNS" --upload "$SLOW_BYTES" --expect echo --timeout 45 --stall 10 >"$cout" 2>&1
	crc=$?
	stop_proxy_check
	# one line per connection that ended, besides any that sent no byte (probe)
	local i=0
	while [ "$(tail -n +"$((skip0 + 1))" "$SLOW_OUT" | grep -vc ' probe$')" -lt "$SLOW_CONNS" ] && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	nok=$(tail -n +"$((skip0 + 1))" "$SLOW_OUT" | grep -c ' ok ')
	[ "$crc" -eq 0 ] || reason="$reason; client rc=$crc: $(tail -n 2 "$cout" | tr '\n' ' ' | cut -c1-300)"
	[ "$nok" -eq "$SLOW_CONNS" ] ||
		reason="$reason; upstream verified $nok/$SLOW_CONNS: $(tail -n +"$((skip0 + 1))" "$SLOW_OUT" | grep -v ' ok \| probe$' | head -n 2 | tr '\n' ' ')"
	[ "$prc" -eq 0 ] || reason="$reason; proxy rc=$prc: $(one_line "$PROXY_ERR")"
	[ "$pool_ok" -eq 0 ] || reason="$reason; pool free/bufs $pool"
	if [ -n "$reason" ]; then
		echo "FAIL $name${reason/#;/:}"
		return 1
	fi
	echo "ok $name: $(tail -n 1 "$cout" | sed 's/^client: //'); upstream verified $nok;" \
		"send_short $short; pool $pool"
}

if [ -n "${SHORT_SENDS_TIGHT:-}" ]; then
	ip link set lo up && small_socket_buffers || fail "cannot set up the namespace"
	rc=0
	for mode in $MODES; do
		tight_case "$mode"
		[ $? -eq 1 ] && rc=1
	done
	exit $rc
fi

start_server slow --rcvbuf 4096 --chunk 4096 --delay 0.001 || fail "slow server did not start"
SLOW_PORT=$SERVER_PORT SLOW_OUT=$SERVER_OUT

start=$(date +%s)
for mode in $MODES; do
	for kind in echo slow; do
		case " $skipped " in *" $mode "*) continue ;; esac
		"${kind}_case" "$mode"
		case $? in
		0) passed=$((passed + 1)) ;;
		2) ;;
		*) failed=$((failed + 1)) ;;
		esac
	done
done
# the tight cases, in a namespace of their own (removed on exit)
NS="sheaf-short-$$"
if ip netns add "$NS" 2>/dev/null; then
	trap 'ip netns del "$NS" 2>/dev/null; cleanup' EXIT
	tout="$E2E_TMP/tight.out"
	SHORT_SENDS_TIGHT=1 timeout 600 ip netns exec "$NS" bash "$0" >"$tout" 2>&1
	trc=$?
	grep '^ok \|^FAIL' "$tout"
	passed=$((passed + $(grep -c '^ok ' "$tout")))
	nfail=$(grep -c '^FAIL' "$tout")
	[ "$trc" -ne 0 ] && [ "$nfail" -eq 0 ] && { echo "FAIL short_sends tight: exit $trc: $(tail -n 3 "$tout" | tr '\n' ' ')"; nfail=1; }
	failed=$((failed + nfail))
	ip netns del "$NS"
else
	echo "short_sends: no network namespaces here (ip netns add failed): tight cases not run"
fi
echo "short_sends: $passed passed, $failed failed${skipped:+, skipped modes:$skipped} in $(($(date +%s) - start)) s"
[ "$passed" -gt 0 ] || [ "$failed" -gt 0 ] || exit 77 # every mode skipped
[ "$failed" -eq 0 ]
