#!/usr/bin/env bash
# send_reset.sh: the upstream goes away in the middle of a large send. A
# servers.py `readclose` upstream reads the first 1 MB of each 16 MB upload
# (4 clients at once, servers.py push) and closes: with SO_LINGER 0 (RST) or
# a plain close() (unread data: the kernel resets too). Every io mode x
# {4K buffers and a reset, 64K buffers and a plain close}. After the upstream closed, the proxy
# must go idle (under $MAX_TICKS CPU ticks in 2 s), close the clients (each
# push connection ends within 10 s), resubmit no storm of sends (send_sqes <
# $MAX_SQES), count no bundle_mismatch, stop with exit 0 and a balanced pool.
# Env: SEND_RESET_MODES.
. "$(dirname "$0")/lib.sh"
require_sheaf
command -v python3 >/dev/null 2>&1 || skip "python3 missing"

MODES=${SEND_RESET_MODES:-"bundle ring plain sendmsg epoll recvmsg"}
CONNS=4
MAX_TICKS=50
MAX_SQES=100000

start_server readclose --read-first 1M --close reset || fail "readclose server did not start"
RESET_PORT=$SERVER_PORT RESET_OUT=$SERVER_OUT
start_server readclose --read-first 1M --close plain || fail "readclose server did not start"
PLAIN_PORT=$SERVER_PORT PLAIN_OUT=$SERVER_OUT

failed=0 passed=0 skipped=""

# closed_lines FILE SKIP N: wait (10 s) until FILE has N "closed" lines after
# its first SKIP lines; print those lines.
closed_lines() {
	local i=0
	while [ "$(tail -n +"$(($2 + 1))" "$1" | grep -c ' closed ')" -lt "$3" ] && [ "$i" -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	tail -n +"$(($2 + 1))" "$1" | grep ' closed '
}

# run_case MODE BUFSIZE reset|plain
run_case() {
	local mode=$1 bs=$2 how=$3 name port sout skip0 lines nclosed push_pid push_out prc
	local a b ticks push_rc ended pool pool_ok sqes mism reason=""
	name="send_reset $mode bs=$bs $how"
	if [ "$how" = reset ]; then port=$RESET_PORT sout=$RESET_OUT; else port=$PLAIN_PORT sout=$PLAIN_OUT; fi
	skip0=$(wc -l <"$sout")
	start_proxy_case "$name" --listen 127.0.0.1:0 --upstream "127.0.0.1:$port" --io "$mode" \
		--buf-size "$bs"
	case $? in
	0) ;;
	2) skipped="$skipped $mode"; return 2 ;;
	*) return 1 ;;
	esac
	push_out="$E2E_TMP/push.$E2E_SEQ.out"
	python3 "$REPO_ROOT/tests/e2e/servers.py" push --port "$PROXY_PORT" --conns "$CONNS" \
		--bytes 16M >"$push_out" 2>&1 &
	push_pid=$!
	track "$push_pid"
	lines=$(closed_lines "$sout" "$skip0" "$CONNS")
	nclosed=$(printf '%s\n' "$lines" | grep -c ' ok closed ')
	sleep 0.2
	a=$(cpu_ticks "$PROXY_PID")
	sleep 2
	b=$(cpu_ticks "$PROXY_PID")
	ticks=$((${b:-0} - ${a:-0}))
	wait_pid "$push_pid" 10
	push_rc=$?
	ended=$(grep -c 'ended: [A-Za-z]' "$push_out")
	stop "$PROXY_PID" 10
	prc=$?
	pool=$(pool_balanced "$PROXY_OUT")
	pool_ok=$?
	sqes=$(proxy_stat "$PROXY_OUT" send_sqes)
	mism=$(proxy_stat "$PROXY_OUT" bundle_mismatch)

	[ "$nclosed" -eq "$CONNS" ] ||
		reason="$reason; upstream closed $nclosed/$CONNS after verified bytes: $(printf '%s' "$lines" | grep -v ' ok ' | head -n 2 | tr '\n' ' ')"
	[ -n "$a" ] && [ -n "$b" ] && [ "$ticks" -lt "$MAX_TICKS" ] ||
		reason="$reason; $ticks CPU ticks in 2 s after the upstream closed"
	[ "$push_rc" -eq 0 ] && [ "$ended" -eq "$CONNS" ] ||
		reason="$reason; clients not closed (push rc=$push_rc, $ended/$CONNS ended)"
	[ "$prc" -eq 0 ] || reason="$reason; proxy rc=$prc: $(one_line "$PROXY_ERR")"
	[ "$pool_ok" -eq 0 ] || reason="$reason; pool free/bufs $pool"
	[ -n "$sqes" ] && [ "$sqes" -lt "$MAX_SQES" ] || reason="$reason; send_sqes ${sqes:-?} (storm)"
	[ "${mism:-0}" -eq 0 ] || reason="$reason; bundle_mismatch $mism"
	if [ -n "$reason" ]; then
		echo "FAIL $name${reason/#;/:}"
		return 1
	fi
	echo "ok $name: $CONNS uploads cut after 1 MB; $ticks CPU ticks in 2 s after," \
		"send_sqes $sqes, bundle_mismatch ${mism:-n/a}, clients closed" \
		"($(sed -n 's/.*ended: //p' "$push_out" | sort | uniq -c | tr -s ' \n' ' ')), pool $pool"
}

start=$(date +%s)
for mode in $MODES; do
	for c in "4K reset" "64K plain"; do
		case " $skipped " in *" $mode "*) continue ;; esac
		run_case "$mode" "${c% *}" "${c#* }"
		case $? in
		0) passed=$((passed + 1)) ;;
		2) ;;
		*) failed=$((failed + 1)) ;;
		esac
	done
done
echo "send_reset: $passed passed, $failed failed${skipped:+, skipped modes:$skipped} in $(($(date +%s) - start)) s"
[ "$passed" -gt 0 ] || [ "$failed" -gt 0 ] || exit 77 # every mode skipped
[ "$failed" -eq 0 ]
