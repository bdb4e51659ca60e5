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
	# the client exits 0 only when its writes blocked (the proxy stopped
	# reading it) before it reset
	cli_out="$E2E_TMP/client.$mode.out"
	timeout 10 python3 -c "
import socket, struct, sys, time
c = socket.create_connection(('127.0.0.1', $PROXY_PORT)); c.setblocking(False)
t = time.time(); sent = blocked = 0
while time.time() - t < 1.0:
    try: sent += c.send(b'x' * 65536)
    except BlockingIOError: blocked += 1; time.sleep(0.01)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()
print('sent', sent, 'blocked', blocked)
sys.exit(0 if sent and blocked else 1)" >"$cli_out" 2>&1
	crc=$?
	a=$(cpu_ticks "$PROXY_PID")
	sleep 2
	b=$(cpu_ticks "$PROXY_PID")
	stop "$PROXY_PID" 10
	prc=$?
	pool=$(pool_balanced "$PROXY_OUT")
	pool_ok=$?
	pauses=$(proxy_stat "$PROXY_OUT" pauses)
	waits=$(proxy_stat "$PROXY_OUT" recv_enobufs)
	# a spinning proxy burns ~200 ticks in 2 s; an idle one ~0.  Backpressure
	# engaged: the queue filled (pauses) or the pool ran dry (recv_enobufs).
	if [ "$crc" -eq 0 ] && [ $((${pauses:-0} + ${waits:-0})) -gt 0 ] &&
		[ $((b - a)) -lt 100 ] && [ "$prc" -eq 0 ] && [ "$pool_ok" -eq 0 ]; then
		echo "ok paused-reset $mode: client $(one_line "$cli_out"); held back $pauses times" \
			"(queue full), $waits times (pool empty); $((b - a)) CPU ticks in 2 s after the" \
			"reset, stops clean, pool $pool"
	else
		echo "FAIL paused-reset $mode: client rc=$crc ($(one_line "$cli_out")) pauses=${pauses:-?}" \
			"recv_enobufs=${waits:-?}, $((b - a)) ticks in 2 s, proxy rc=$prc, pool $pool"
		failed=1
	fi
done
exit $failed
