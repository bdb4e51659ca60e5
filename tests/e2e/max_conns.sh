#!/usr/bin/env bash
# max_conns.sh: a flood past --max-conns: the extra clients are closed at
# once, the admitted ones keep working, and the proxy stops clean.
. "$(dirname "$0")/lib.sh"
require_sheaf

start_sink --listen 127.0.0.1:0 || fail "sink did not start"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --max-conns 4 \
	--io bundle || fail "proxy did not start"
out=$(timeout 30 python3 - "$PROXY_PORT" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
socks = []
for i in range(10):
    s = socket.create_connection(("127.0.0.1", port))
    socks.append(s)
    time.sleep(0.02)
time.sleep(0.5)
alive = 0
for s in socks:
    s.setblocking(False)
    try:
        data = s.recv(1)
        closed = data == b""
    except BlockingIOError:
        closed = False
    except ConnectionResetError:
        closed = True
    if not closed:
        s.setblocking(True)
        s.sendall(b"x" * 1000)  # admitted ones still carry data
        alive += 1
print(alive)
for s in socks:
    s.close()
PY
)
[ "$out" = 4 ] || fail "expected 4 admitted clients, got '$out'"
echo "ok max-conns: 4 of 10 admitted"
sleep 0.3
stop "$PROXY_PID" 10
grep -q '"accepted":4,"rejected":6' "$PROXY_OUT" ||
	fail "stats: $(grep stats "$PROXY_OUT")"
echo "ok max-conns: stats accepted 4, rejected 6"
pool_balanced "$PROXY_OUT" >/dev/null || fail "pool not balanced: $(pool_balanced "$PROXY_OUT")"
echo "ok max-conns: pool balanced"
