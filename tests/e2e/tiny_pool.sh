#!/usr/bin/env bash
# tiny_pool.sh: a pool far smaller than the load (--bufs 8 --buf-size 32: four
# buffers per direction for 64 verified streams) must not turn into a storm of
# receives that find it empty: fewer -ENOBUFS completions than completions
# with data (before: 7.5 per data completion), every stream intact.
. "$(dirname "$0")/lib.sh"
require_sheaf

for m in ${TINY_POOL_MODES:-bundle sendmsg epoll recvmsg}; do
	start_sink --listen 127.0.0.1:0 --verify --conns 64 || fail "sink did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --io "$m" \
		--bufs 8 --buf-size 32 || fail "$m: proxy did not start"
	timeout 120 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 64 --bytes 2M \
		--verify >"$E2E_TMP/src.out" 2>&1 || fail "$m: source: $(tail -2 "$E2E_TMP/src.out")"
	wait_pid "$SINK_PID" 120 || fail "$m: sink saw damaged or missing streams: $(tail -3 "$SINK_ERR")"
	stop "$PROXY_PID" 10 || fail "$m: proxy exited with $?"
	cqes=$(proxy_stat "$PROXY_OUT" recv_cqes)
	nobufs=$(proxy_stat "$PROXY_OUT" recv_enobufs)
	[ -n "$cqes" ] && [ -n "$nobufs" ] && [ "$nobufs" -lt "$cqes" ] ||
		fail "$m: $nobufs -ENOBUFS completions for $cqes with data"
	pool_balanced "$PROXY_OUT" >/dev/null || fail "$m: pool not balanced"
	echo "ok tiny pool $m: 64 streams intact, $nobufs -ENOBUFS for $cqes data completions"
done
