#!/usr/bin/env bash
# slow_peer.sh: an upstream that reads slowly. The proxy must pause the
# fast side (backpressure) instead of buffering without bound, deliver every
# byte, and give every buffer back. Every io mode. It runs in a network
# namespace of its own whose TCP socket buffers are 4 KiB: with the host's
# (up to 4 MiB) the kernel would take the whole stream and the proxy would
# never need to hold anything back.
. "$(dirname "$0")/lib.sh"
require_sheaf

if [ -z "${SLOW_PEER_NS:-}" ]; then
	ns="sheaf-slow-$$"
	ip netns add "$ns" 2>/dev/null || skip "cannot create a network namespace (needs root)"
	SLOW_PEER_NS=$ns timeout 300 ip netns exec "$ns" bash "$0"
	rc=$?
	ip netns del "$ns"
	exit $rc
fi
ip link set lo up && small_socket_buffers || fail "cannot set up the namespace"

BYTES=$((512 * 1024))
failed=0
for mode in ${MODES:-bundle ring plain sendmsg epoll recvmsg}; do
	port_file="$E2E_TMP/slow.$mode.port"
	# a slow reader: 4 KiB every 2 ms per connection, small receive window
	python3 - "$port_file" >"$E2E_TMP/slow.$mode.out" 2>&1 <<'PY' &
import socket, sys, threading, time
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
open(sys.argv[1], "w").write(str(srv.getsockname()[1]))
srv.settimeout(30)
total = [0, 0, 0, 0]
def reader(c, i):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    while True:
        d = c.recv(4096)
        if not d:
            return
        total[i] += len(d)
        time.sleep(0.002)
threads = []
for i in range(4):
    c = srv.accept()[0]
    t = threading.Thread(target=reader, args=(c, i))
    t.start()
    threads.append(t)
for t in threads:
    t.join(60)
print(sum(total))
PY
	SLOW_PID=$!
	track "$SLOW_PID"
	for i in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$(cat "$port_file")" --io "$mode" \
		--buf-size 4096 --bufs 64 || { echo "FAIL slow $mode: proxy did not start"; failed=1; continue; }
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 4 --bytes $BYTES \
		>/dev/null 2>&1
	rc=$?
	wait_pid "$SLOW_PID" 60
	got=$(tail -1 "$E2E_TMP/slow.$mode.out")
	stop "$PROXY_PID" 10
	prc=$?
	stats=$(grep stats "$PROXY_OUT")
	pauses=$(printf '%s' "$stats" | sed -n 's/.*"pauses":\([0-9]*\).*/\1/p')
	waits=$(printf '%s' "$stats" | sed -n 's/.*"recv_enobufs":\([0-9]*\).*/\1/p')
	if [ "$rc" -eq 0 ] && [ "$got" = "$BYTES" ] && [ "$prc" -eq 0 ] &&
		[ $((${pauses:-0} + ${waits:-0})) -gt 0 ] &&
		pool_balanced "$PROXY_OUT" >/dev/null; then
		echo "ok slow $mode: $got bytes through a slow reader; held back $pauses times" \
			"(queue full), $waits times (pool empty); pool $(pool_balanced "$PROXY_OUT")"
	else
		echo "FAIL slow $mode: source rc=$rc got=$got proxy rc=$prc pauses=$pauses" \
			"waits=$waits $(pool_balanced "$PROXY_OUT")"
		failed=1
	fi
done
exit $failed
