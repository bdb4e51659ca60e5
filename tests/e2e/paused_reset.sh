#!/usr/bin/env bash
# paused_reset.sh: a client that fills the proxy until backpressure pauses
# it, then resets. The proxy must not spin on the dead socket while the
# slow upstream drains (it did, on epoll), and must stop clean.
. "$(dirname "$0")/lib.sh"
require_sheaf

port_file="$E2E_TMP/slow.port"
python3 - "$port_file" >/dev/null 2>&1 <<'PY' &
import os, socket, sys, threading, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def h(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    while c.recv(2048):
        time.sleep(0.05)
s.settimeout(60)
while True:
    c, _ = s.accept()
    threading.Thread(target=h, args=(c,), daemon=True).start()
PY
track $!
for i in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
failed=0
for mode in bundle epoll; do
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$(cat "$port_file")" --io "$mode" \
		--bufs 64 || fail "proxy did not start"
	timeout 10 python3 -c "
import socket, struct, time
c = socket.create_connection(('127.0.0.1', $PROXY_PORT)); c.setblocking(False)
t = time.time()
while time.time() - t < 1.0:
    try: c.send(b'x' * 65536)
    except BlockingIOError: time.sleep(0.01)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()"
	a=$(awk '{print $14 + $15}' "/proc/$PROXY_PID/stat")
	sleep 2
	b=$(awk '{print $14 + $15}' "/proc/$PROXY_PID/stat")
	stop "$PROXY_PID" 10
	prc=$?
	# a spinning proxy burns ~200 ticks in 2 s; an idle one ~0
	if [ $((b - a)) -lt 100 ] && [ "$prc" -eq 0 ] && pool_balanced "$PROXY_OUT" >/dev/null; then
		echo "ok paused-reset $mode: $((b - a)) CPU ticks in 2 s after the reset, stops clean"
	else
		echo "FAIL paused-reset $mode: $((b - a)) ticks in 2 s, proxy rc=$prc $(pool_balanced "$PROXY_OUT")"
		failed=1
	fi
done
exit $failed
