#!/usr/bin/env bash
# deadlock.sh: upstreams that stop reading while they answer must not wedge
# the proxy. Clients upload while they read the answer at the same time:
#   early  the upstream reads the first part of each upload, then sends a
#          long answer without reading (a server refusing a large upload),
#          then drains the rest: the upload fills the proxy while the answer
#          still has to get through;
#   echo   a blocking echo server (64K receive buffer): it stops reading
#          while its own writes wait on the proxy.
# Every io mode x {64K buffers, default --bufs; 4K buffers, --bufs 64} x
# {early, echo} with 16 clients, and 64 clients for bundle and epoll. Each
# case: every answer byte verified by the client (servers.py client), every
# upload byte and length by the upstream, the proxy stops with exit 0 and
# a balanced pool. A case that moves no byte for $STALL s, or runs over
# $CASE_TIMEOUT s, is a wedge: FAIL. A mode the kernel lacks is skipped.
# Env: DEADLOCK_MODES, DEADLOCK_TIMEOUT (30), DEADLOCK_STALL (10).
. "$(dirname "$0")/lib.sh"
require_sheaf
command -v python3 >/dev/null 2>&1 || skip "python3 missing"

MODES=${DEADLOCK_MODES:-"bundle ring plain sendmsg epoll recvmsg"}
CASE_TIMEOUT=${DEADLOCK_TIMEOUT:-30}
STALL=${DEADLOCK_STALL:-10}

start_server early --read-first 1M --answer 16M --expect 8M || fail "early server did not start"
EARLY16_PORT=$SERVER_PORT EARLY16_OUT=$SERVER_OUT
start_server early --read-first 256K --answer 4M --expect 2M || fail "early server did not start"
EARLY64_PORT=$SERVER_PORT EARLY64_OUT=$SERVER_OUT
start_server echo --rcvbuf 64K || fail "echo server did not start"
ECHO_PORT=$SERVER_PORT ECHO_OUT=$SERVER_OUT

failed=0 passed=0 skipped=""

# server_lines FILE SKIP N: wait (5 s) until FILE has N lines after its first
# SKIP that are not "probe" lines (one per connection that ended), print them.
server_lines() {
	local file=$1 from=$(($2 + 1)) want=$3 i=0
	while [ "$(tail -n +"$from" "$file" | grep -vc ' probe$')" -lt "$want" ] && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	tail -n +"$from" "$file" | grep -v ' probe$'
}

# run_case MODE BUFCFG WORKLOAD CONNS: BUFCFG is "64K" (default --bufs) or
# "4K/64"; WORKLOAD early|echo.
run_case() {
	local mode=$1 cfg=$2 wl=$3 conns=$4 name port sout upload answer pargs
	local skip0 crc prc pool pool_ok lines nok reason=""
	name="deadlock $mode $cfg $wl x$conns"
	case $cfg in
	64K) pargs="--buf-size 64K" ;;
	4K/64) pargs="--buf-size 4K --bufs 64" ;;
	esac
	case $wl:$conns in
	early:16) port=$EARLY16_PORT sout=$EARLY16_OUT upload=8M answer=16M ;;
	early:*) port=$EARLY64_PORT sout=$EARLY64_OUT upload=2M answer=4M ;;
	echo:16) port=$ECHO_PORT sout=$ECHO_OUT upload=8M answer=8M ;;
	echo:*) port=$ECHO_PORT sout=$ECHO_OUT upload=2M answer=2M ;;
	esac
	skip0=$(wc -l <"$sout")
	# shellcheck disable=SC2086
	start_proxy_case "$name" --listen 127.0.0.1:0 --upstream "127.0.0.1:$port" --io "$mode" $pargs
	case $? in
	0) ;;
	2) skipped="$skipped $mode"; return 2 ;;
	*) return 1 ;;
	esac
	local cout="$E2E_TMP/client.$E2E_SEQ.out"
	timeout $((CASE_TIMEOUT + 15)) python3 "$REPO_ROOT/tests/e2e/servers.py" client \
		--port "$PROXY_PORT" --conns "$conns" --upload "$upload" --expect "$wl" \
		--answer "$answer" --timeout "$CASE_TIMEOUT" --stall "$STALL" >"$cout" 2>&1
	crc=$?
	stop "$PROXY_PID" 10
	prc=$?
	pool=$(pool_balanced "$PROXY_OUT")
	pool_ok=$?
	lines=$(server_lines "$sout" "$skip0" "$conns")
	nok=$(printf '%s\n' "$lines" | grep -c ' ok ')

	[ "$crc" -eq 0 ] || reason="$reason; client rc=$crc: $(tail -n 3 "$cout" | tr '\n' ' ' | cut -c1-400)"
	[ "$prc" -eq 0 ] || reason="$reason; proxy rc=$prc: $(one_line "$PROXY_ERR")"
	[ "$pool_ok" -eq 0 ] || reason="$reason; pool free/bufs $pool"
	[ "$nok" -eq "$conns" ] ||
		reason="$reason; upstream verified $nok/$conns uploads: $(printf '%s\n' "$lines" | grep -v ' ok ' | head -n 2 | tr '\n' ' ')"
	if [ -n "$reason" ]; then
		echo "FAIL $name${reason/#;/:}"
		return 1
	fi
	echo "ok $name: $(tail -n 1 "$cout" | sed 's/^client: //'); upstream verified $nok uploads;" \
		"pauses $(proxy_stat "$PROXY_OUT" pauses), recv_enobufs $(proxy_stat "$PROXY_OUT" recv_enobufs);" \
		"pool $pool"
}

tally() {
	case $1 in
	0) passed=$((passed + 1)) ;;
	2) ;;
	*) failed=$((failed + 1)) ;;
	esac
}

start=$(date +%s)
for mode in $MODES; do
	for cfg in 64K 4K/64; do
		for wl in early echo; do
			case " $skipped " in *" $mode "*) continue ;; esac
			run_case "$mode" "$cfg" "$wl" 16
			tally $?
		done
	done
done
for mode in bundle epoll; do
	case " $MODES " in *" $mode "*) ;; *) continue ;; esac
	for wl in early echo; do
		case " $skipped " in *" $mode "*) continue ;; esac
		run_case "$mode" 64K "$wl" 64
		tally $?
	done
done
echo "deadlock: $passed passed, $failed failed${skipped:+, skipped modes:$skipped} in $(($(date +%s) - start)) s"
[ "$passed" -gt 0 ] || [ "$failed" -gt 0 ] || exit 77 # every mode skipped
[ "$failed" -eq 0 ]
