#!/usr/bin/env bash
# fallback.sh: without io_uring (io_uring_setup fails, as on a kernel that
# lacks it) the probe says so, `auto` picks epoll, and a verified stream
# still crosses the proxy both ways.
. "$(dirname "$0")/lib.sh"
require_sheaf

wrap="$E2E_TMP/no_io_uring"
cc -O1 -o "$wrap" "$(dirname "$0")/no_io_uring.c" 2>"$E2E_TMP/cc.err" ||
	skip "cannot build the seccomp wrapper: $(head -1 "$E2E_TMP/cc.err")"
"$wrap" true || skip "seccomp filters are not available here"

out=$("$wrap" "$SHEAF" probe --json)
printf '%s' "$out" | grep -q '"io_uring":false' && printf '%s' "$out" | grep -q '"auto":"epoll"' ||
	fail "probe without io_uring: $out"
echo "ok fallback: probe reports no io_uring and picks epoll"

start_sink --listen 127.0.0.1:0 --verify --conns 8 --echo || fail "sink did not start"
E2E_SEQ=$((E2E_SEQ + 1))
PROXY_OUT="$E2E_TMP/proxy.out"
"$wrap" "$SHEAF" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" \
	--buf-size 1K >"$PROXY_OUT" 2>"$E2E_TMP/proxy.err" &
PROXY_PID=$!
track "$PROXY_PID"
PROXY_PORT=$(wait_port "$PROXY_OUT" "$PROXY_PID") || fail "proxy did not start: $(cat "$E2E_TMP/proxy.err")"
grep -q 'io=epoll' "$PROXY_OUT" || fail "proxy did not pick epoll: $(cat "$PROXY_OUT")"
timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 8 --bytes 8M --verify \
	--echo >/dev/null || fail "verified echo streams through the epoll proxy failed"
wait_pid "$SINK_PID" 10 || fail "sink: $(cat "$SINK_OUT" "$SINK_ERR")"
echo "ok fallback: 8 verified streams both ways through the proxy on epoll"
stop "$PROXY_PID" 10 || fail "proxy exit: $(cat "$PROXY_OUT")"
pool_balanced "$PROXY_OUT" >/dev/null || fail "pool: $(pool_balanced "$PROXY_OUT")"
echo "ok fallback: pool balanced"
