#!/usr/bin/env bash
# idle_timeout.sh: --idle-timeout closes a client that went quiet, keeps one
# that trickles bytes, and leaves the proxy healthy; io_uring and epoll.
. "$(dirname "$0")/lib.sh"
require_sheaf

failed=0
for mode in bundle epoll; do
	start_sink --listen 127.0.0.1:0 || fail "sink did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --io "$mode" \
		--idle-timeout 400 || fail "proxy did not start: $(cat "$PROXY_ERR")"
	out=$(timeout 20 python3 - "$PROXY_PORT" <<'PY'
import socket, sys, threading, time
port = int(sys.argv[1])
def closed_after(sock, limit):
    sock.settimeout(limit)
    t = time.time()
    try:
        d = sock.recv(1)
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return time.time() - t
quiet = socket.create_connection(("127.0.0.1", port))
quiet.sendall(b"hello")
busy = socket.create_connection(("127.0.0.1", port))
res = {}
def trickle():
    end = time.time() + 1.5
    while time.time() < end:
        busy.sendall(b"x")
        time.sleep(0.1)
    busy.setblocking(False)
    try:
        res["busy"] = "closed" if busy.recv(1) == b"" else "data"
    except BlockingIOError:
        res["busy"] = "open"
    except ConnectionResetError:
        res["busy"] = "closed"
t = threading.Thread(target=trickle); t.start()
q = closed_after(quiet, 3)
t.join()
print("quiet", "open" if q is None else "closed %.2f" % q, "busy", res.get("busy"))
PY
)
	stop "$PROXY_PID" 10
	prc=$?
	stop "$SINK_PID" 10
	set -- $out
	if [ "$2" = closed ] && awk -v s="$3" 'BEGIN { exit !(s >= 0.3 && s < 1.5) }' &&
		[ "$5" = open ] && [ "$prc" -eq 0 ] && grep -q '"idle_closed":[1-9]' "$PROXY_OUT" &&
		pool_balanced "$PROXY_OUT" >/dev/null; then
		echo "ok idle-timeout $mode: quiet client closed after $3 s, trickling one kept"
	else
		echo "FAIL idle-timeout $mode: '$out' proxy rc=$prc $(grep stats "$PROXY_OUT")"
		failed=1
	fi
done
exit $failed
