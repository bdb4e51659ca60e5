#!/usr/bin/env bash
# threads.sh: `--threads 2`: two event loops share the port (SO_REUSEPORT),
# verified streams cross both ways, the counters add up, every buffer of
# both pools comes back, and SIGTERM stops both threads.
. "$(dirname "$0")/lib.sh"
require_sheaf

failed=0
for mode in bundle epoll; do
	start_sink --listen 127.0.0.1:0 --verify --conns 64 --echo || fail "sink did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --io "$mode" \
		--buf-size 512 --threads 2 || fail "proxy did not start: $(cat "$PROXY_ERR")"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 64 --bytes 16M \
		--verify --echo >/dev/null 2>&1
	src=$?
	wait_pid "$SINK_PID" 10
	snk=$?
	stop "$PROXY_PID" 10
	prc=$?
	if [ "$src" -eq 0 ] && [ "$snk" -eq 0 ] && [ "$prc" -eq 0 ] &&
		grep -q 'threads=2' "$PROXY_OUT" && grep -q '"accepted":64,' "$PROXY_OUT" &&
		grep -Eq 'accepted per thread: [1-9][0-9]* [1-9]' "$PROXY_OUT" &&
		pool_balanced "$PROXY_OUT" >/dev/null; then
		echo "ok threads $mode: 64 verified echo streams over 2 loops" \
			"($(grep -o 'per thread: .*' "$PROXY_OUT")), pool $(pool_balanced "$PROXY_OUT")"
	else
		echo "FAIL threads $mode: source $src sink $snk proxy $prc: $(cat "$PROXY_OUT" "$PROXY_ERR" | tail -3)"
		failed=1
	fi
done
exit $failed
