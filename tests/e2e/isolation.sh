#!/usr/bin/env bash
# isolation.sh: connections whose upstream never reads must not starve the
# others of the proxy's one shared buffer pool.
# One proxy, one upstream: a servers.py `split` server that never reads again
# from a connection starting with "STALL" (it holds it open) and echoes every
# other one. Per io mode and setting
#   default  (4K buffers, default --bufs) with 8 stalled clients
#   --bufs 64                             with 1 stalled client
#   --bufs 64 --stall-timeout 1000        with 12 stalled clients: more than
#            that pool survives (docs/POOL.md: 7), so the streams wait until
#            the proxy closes the stalled ones (stall_closed >= 1)
# it runs 16 verified echo streams (servers.py client --expect echo) on the
# fresh proxy, then starts the stalled clients (servers.py push --prefix
# STALL: up to 200 MB each, until the proxy stops taking bytes), runs the 16
# streams again beside them, and checks: every stream verified both times
# (no byte moved for $STALL s or over $CASE_TIMEOUT s is a FAIL), the stalled
# clients are still connected, and the proxy stops with exit 0 and a
# balanced pool. The ok line gives both times.
# Env: ISOLATION_MODES, ISOLATION_TIMEOUT (20), ISOLATION_STALL (5),
# ISOLATION_BYTES (per verified stream, 4M).
. "$(dirname "$0")/lib.sh"
require_sheaf
command -v python3 >/dev/null 2>&1 || skip "python3 missing"

MODES=${ISOLATION_MODES:-"bundle ring plain sendmsg epoll recvmsg"}
CASE_TIMEOUT=${ISOLATION_TIMEOUT:-20}
STALL=${ISOLATION_STALL:-5}
BYTES=${ISOLATION_BYTES:-4M}
SERVERS_PY="$REPO_ROOT/tests/e2e/servers.py"

start_server split || fail "split server did not start: $(one_line "$SERVER_OUT")"

failed=0 passed=0 skipped=""

# streams OUT: 16 verified echo streams through the proxy; status of the client.
streams() {
	timeout $((CASE_TIMEOUT + 15)) python3 "$SERVERS_PY" client --port "$PROXY_PORT" \
		--conns 16 --upload "$BYTES" --expect echo --timeout "$CASE_TIMEOUT" \
		--stall "$STALL" >"$1" 2>&1
}

# secs OUT: the elapsed seconds in the client's summary line.
secs() { sed -n 's/^client: .* in \([0-9.]*\) s.*/\1/p' "$1" | tail -n 1; }

# wait_stalled FILE PID: wait (15 s) until the pushers' byte count in FILE
# stopped growing for 1 s; print it.
wait_stalled() {
	local file=$1 pid=$2 i=0 same=0 prev="" v=""
	while [ "$i" -lt 75 ] && [ "$same" -lt 5 ] && alive "$pid"; do
		sleep 0.2
		i=$((i + 1))
		v=$(cat "$file" 2>/dev/null)
		[ -n "$v" ] || continue
		if [ "$v" = "$prev" ]; then same=$((same + 1)); else same=0 prev=$v; fi
	done
	printf '%s\n' "${v:-0}"
}

# run_case MODE SETTING STALLED
run_case() {
	local mode=$1 setting=$2 nstall=$3 name pargs="" base_out with_out brc wrc
	local pushed push_pid push_alive prc pool pool_ok reason=""
	name="isolation $mode $setting, $nstall stalled"
	[ "$setting" = default ] || pargs=$setting
	# shellcheck disable=SC2086
	start_proxy_case "$name" --listen 127.0.0.1:0 --upstream "127.0.0.1:$SERVER_PORT" --io "$mode" $pargs
	case $? in
	0) ;;
	2) skipped="$skipped $mode"; return 2 ;;
	*) return 1 ;;
	esac
	base_out="$E2E_TMP/base.$E2E_SEQ.out"
	with_out="$E2E_TMP/with.$E2E_SEQ.out"
	streams "$base_out"
	brc=$?

	local prog="$E2E_TMP/push.$E2E_SEQ.progress" push_out="$E2E_TMP/push.$E2E_SEQ.out"
	python3 "$SERVERS_PY" push --port "$PROXY_PORT" --conns "$nstall" --prefix STALL \
		--bytes 200M --progress-file "$prog" >"$push_out" 2>&1 &
	push_pid=$!
	track "$push_pid"
	pushed=$(wait_stalled "$prog" "$push_pid")

	streams "$with_out"
	wrc=$?
	if alive "$push_pid"; then push_alive=yes; else push_alive=no; fi
	stop "$PROXY_PID" 10
	prc=$?
	pool=$(pool_balanced "$PROXY_OUT")
	pool_ok=$?
	stop "$push_pid" 5

	[ "$brc" -eq 0 ] || reason="$reason; alone: $(tail -n 2 "$base_out" | tr '\n' ' ' | cut -c1-300)"
	[ "$wrc" -eq 0 ] || reason="$reason; beside stalled: $(tail -n 2 "$with_out" | tr '\n' ' ' | cut -c1-300)"
	local closed
	closed=$(proxy_stat "$PROXY_OUT" stall_closed) || closed=0
	case $setting in
	*--stall-timeout*)
		[ "$closed" -ge 1 ] || reason="$reason; no stalled connection was closed (stall_closed $closed)" ;;
	*)
		[ "$push_alive" = yes ] || reason="$reason; stalled clients ended early: $(one_line "$push_out")" ;;
	esac
	[ "$prc" -eq 0 ] || reason="$reason; proxy rc=$prc: $(one_line "$PROXY_ERR")"
	[ "$pool_ok" -eq 0 ] || reason="$reason; pool free/bufs $pool"
	if [ -n "$reason" ]; then
		echo "FAIL $name (streams alone: ${brc/#0/ok in $(secs "$base_out") s}, stalled clients" \
			"got $pushed bytes in)${reason/#;/:}"
		return 1
	fi
	echo "ok $name: 16 verified echo streams of $BYTES took $(secs "$base_out") s alone," \
		"$(secs "$with_out") s beside $nstall stalled (which got $pushed bytes in);" \
		"stall_closed $closed; pool $pool"
}

start=$(date +%s)
for mode in $MODES; do
	for c in "default 8" "--bufs 64 1" "--bufs 64 --stall-timeout 1000 12"; do
		case " $skipped " in *" $mode "*) continue ;; esac
		run_case "$mode" "${c% *}" "${c##* }"
		case $? in
		0) passed=$((passed + 1)) ;;
		2) ;;
		*) failed=$((failed + 1)) ;;
		esac
	done
done
echo "isolation: $passed passed, $failed failed${skipped:+, skipped modes:$skipped} in $(($(date +%s) - start)) s"
[ "$passed" -gt 0 ] || [ "$failed" -gt 0 ] || exit 77 # every mode skipped
[ "$failed" -eq 0 ]
