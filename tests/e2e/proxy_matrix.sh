#!/usr/bin/env bash
# proxy_matrix.sh MODE: verified streams through `sheaf proxy --io MODE` for
# buffer sizes {1,32,80,4096,65536} x conns {1,64} x {forward, echo}.
# Each case: sink --verify (--echo), proxy, source --verify (--echo); then
# SIGTERM the proxy and check it returned every pool buffer.
# recvmsg refuses buffers of 16 bytes or less (checked instead).
# Env: SHEAF (binary), MATRIX_BS / MATRIX_CONNS / MATRIX_DIRS to narrow it.
. "$(dirname "$0")/lib.sh"
require_sheaf

MODE=${1:-${SHEAF_MODE:-bundle}}
case "$MODE" in
bundle | ring | plain | sendmsg | epoll | recvmsg | auto) ;;
*) echo "usage: $0 bundle|ring|plain|sendmsg|epoll|recvmsg|auto" >&2; exit 2 ;;
esac

BS_LIST=${MATRIX_BS:-"1 32 80 4096 65536"}
CONNS_LIST=${MATRIX_CONNS:-"1 64"}
DIR_LIST=${MATRIX_DIRS:-"fwd echo"}

failed=0
passed=0

bytes_for() {
	case "$1" in
	1) echo 65536 ;;
	32 | 80) echo 2097152 ;;
	*) echo 16777216 ;;
	esac
}

# run_case BS CONNS DIR: prints ok/FAIL line, returns 0/1.
run_case() {
	local bs=$1 conns=$2 dir=$3 bytes echo_arg="" name reason="" rc
	bytes=$(bytes_for "$bs")
	[ "$dir" = echo ] && echo_arg=--echo
	name="$MODE bs=$bs conns=$conns $dir"

	# recvmsg: a buffer begins with the kernel's 16-byte header, so smaller
	# buffers must be refused as bad usage (exit 2, the reason named), not
	# half-used
	if [ "$MODE" = recvmsg ] && [ "$bs" -le 16 ]; then
		local out rc
		out=$(timeout 10 "$SHEAF" proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:9 \
			--io recvmsg --buf-size "$bs" 2>&1)
		rc=$?
		if [ "$rc" -eq 2 ] && [[ $out == *"needs more than 16 bytes per buffer"* ]]; then
			echo "ok $name: refused ($(tr "\n" " " <<<"$out" | cut -c1-200))"
			return 0
		fi
		echo "FAIL $name: buffers of $bs bytes not refused (rc=$rc): $out"
		return 1
	fi

	if ! start_sink --listen 127.0.0.1:0 --verify --conns "$conns" $echo_arg; then
		echo "FAIL $name: sink did not start: $(one_line "$SINK_ERR")"
		return 1
	fi
	if ! start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" \
		--io "$MODE" --buf-size "$bs"; then
		echo "FAIL $name: proxy did not start: $(one_line "$PROXY_ERR") $(one_line "$PROXY_OUT")"
		stop "$SINK_PID" 2
		return 1
	fi

	local src_out="$E2E_TMP/source.$E2E_SEQ.out" src_err="$E2E_TMP/source.$E2E_SEQ.err"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns "$conns" \
		--bytes "$bytes" --verify $echo_arg >"$src_out" 2>"$src_err"
	rc=$?
	[ "$rc" -eq 0 ] || reason="$reason; source rc=$rc: $(one_line "$src_err")"

	wait_pid "$SINK_PID" 10
	rc=$?
	[ "$rc" -eq 0 ] || reason="$reason; sink rc=$rc: $(one_line "$SINK_ERR")"
	if ! grep -q "$conns streams, $conns intact" "$SINK_OUT"; then
		reason="$reason; sink summary: $(one_line "$SINK_OUT")"
	fi

	stop "$PROXY_PID" 10
	rc=$?
	[ "$rc" -eq 0 ] || reason="$reason; proxy rc=$rc: $(one_line "$PROXY_ERR")"
	local pool
	pool=$(pool_balanced "$PROXY_OUT") || pool=$(pool_balanced "$PROXY_ERR") ||
		reason="$reason; pool free/bufs=$pool"

	if [ -n "$reason" ]; then
		echo "FAIL $name${reason/#;/:}"
		return 1
	fi
	echo "ok $name"
	return 0
}

for bs in $BS_LIST; do
	for conns in $CONNS_LIST; do
		for dir in $DIR_LIST; do
			if run_case "$bs" "$conns" "$dir"; then
				passed=$((passed + 1))
			else
				failed=$((failed + 1))
			fi
		done
	done
done

echo "proxy_matrix $MODE: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
