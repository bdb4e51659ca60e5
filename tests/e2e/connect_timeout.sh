#!/usr/bin/env bash
# connect_timeout.sh: an upstream that never answers (its accept queue is
# full, so SYNs are dropped). With --connect-timeout the proxy gives up,
# closes the client and stays healthy; in every io mode.
. "$(dirname "$0")/lib.sh"
require_sheaf

# hole PORTFILE: an upstream whose listen(0) queue is kept full, so that
# SYNs are dropped
hole() {
	python3 - "$1" >/dev/null 2>&1 <<'PY' &
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
f = socket.create_connection(("127.0.0.1", s.getsockname()[1]))  # queue full
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(30)
PY
	track $!
	for i in $(seq 50); do [ -s "$1" ] && return 0; sleep 0.1; done
	return 1
}

failed=0
for mode in bundle epoll; do
	port_file="$E2E_TMP/hole.$mode"
	hole "$port_file" || { echo "FAIL connect-timeout $mode: no upstream"; failed=1; continue; }
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$(cat "$port_file")" --io "$mode" \
		--connect-timeout 300 || { echo "FAIL connect-timeout $mode: proxy did not start: $(cat "$PROXY_ERR")"; failed=1; break; }
	t=$(timeout 10 python3 -c "
import socket, sys, time
s = socket.create_connection(('127.0.0.1', $PROXY_PORT)); t = time.time()
s.settimeout(5)
try:
    d = s.recv(1)
except (ConnectionResetError, socket.timeout) as e:
    d = str(e)
print('%.2f %r' % (time.time() - t, d))")
	stop "$PROXY_PID" 10
	prc=$?
	secs=${t%% *}
	if [ "$prc" -eq 0 ] && grep -q '"connect_failed":1' "$PROXY_OUT" &&
		awk -v s="$secs" 'BEGIN { exit !(s >= 0.2 && s < 3) }' && pool_balanced "$PROXY_OUT" >/dev/null; then
		echo "ok connect-timeout $mode: client closed after $secs s, proxy healthy"
	else
		echo "FAIL connect-timeout $mode: client saw '$t', proxy rc=$prc $(grep stats "$PROXY_OUT")"
		failed=1
	fi
done
exit $failed
