#!/usr/bin/env bash
# max_conns.sh: clients past --max-conns wait in the listen backlog instead
# of being accepted and closed (as HAProxy's maxconn), in both backends:
#   idle     10 idle clients against --max-conns 4: none is closed, only 4
#            are accepted while the others wait
#   verified 32 verified streams against --max-conns 8: every one intact,
#            the listener paused and resumed, nothing rejected
#   ulimit   100 verified streams through a proxy under `ulimit -n 64`
#            (it lowers --max-conns to fit, with a warning); --strict
#            refuses to start instead
. "$(dirname "$0")/lib.sh"
require_sheaf

for m in ${MAX_CONNS_MODES:-bundle epoll}; do
	start_sink --listen 127.0.0.1:0 || fail "sink did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --max-conns 4 \
		--io "$m" || fail "$m: proxy did not start"
	out=$(timeout 30 python3 - "$PROXY_PORT" "$SINK_PORT" <<'PY'
import socket, subprocess, sys, time
port = int(sys.argv[1])
socks = [socket.create_connection(("127.0.0.1", port)) for i in range(10)]
time.sleep(0.8)
open_ = 0
for s in socks:
    s.setblocking(False)
    try:
        closed = s.recv(1) == b""
    except BlockingIOError:
        closed = False
    except ConnectionResetError:
        closed = True
    open_ += not closed
# upstream connections the proxy made meanwhile: one per accepted client
ss = subprocess.run(["ss", "-Htn", "state", "established", "dport", "= :" + sys.argv[2]],
                    capture_output=True, text=True).stdout
print(open_, len(ss.splitlines()))
for s in socks:
    s.close()
PY
)
	[ "$out" = "10 4" ] || fail "$m: open clients and upstream connections: '$out', not '10 4'"
	sleep 0.3
	stop "$PROXY_PID" 10
	acc=$(proxy_stat "$PROXY_OUT" accepted)
	rej=$(proxy_stat "$PROXY_OUT" rejected)
	[ "$rej" = 0 ] || fail "$m: $rej clients rejected"
	# the 4 admitted closed, so some of the waiting ones may have come in
	# before the stop: never all 10 at once, never more than 10
	[ -n "$acc" ] && [ "$acc" -ge 4 ] && [ "$acc" -le 10 ] || fail "$m: accepted '$acc'"
	echo "ok max-conns $m idle: 10 clients past --max-conns 4 kept open, 4 served meanwhile (accepted $acc in all, rejected 0)"
	stop "$SINK_PID" 5

	start_sink --listen 127.0.0.1:0 --verify --conns 32 || fail "sink did not start"
	start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --max-conns 8 \
		--io "$m" || fail "$m: proxy did not start"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns 32 --bytes 64M \
		--verify >"$E2E_TMP/src.out" 2>&1 || fail "$m: source: $(tail -2 "$E2E_TMP/src.out")"
	wait_pid "$SINK_PID" 60 || fail "$m: sink saw damaged or missing streams: $(tail -3 "$SINK_ERR")"
	stop "$PROXY_PID" 10
	[ "$(proxy_stat "$PROXY_OUT" accepted)" = 32 ] && [ "$(proxy_stat "$PROXY_OUT" rejected)" = 0 ] ||
		fail "$m: stats: $(grep stats "$PROXY_OUT")"
	pauses=$(proxy_stat "$PROXY_OUT" accept_pauses)
	[ "${pauses:-0}" -gt 0 ] || fail "$m: the listener never paused at --max-conns 8"
	pool_balanced "$PROXY_OUT" >/dev/null || fail "$m: pool not balanced"
	echo "ok max-conns $m verified: 32 streams through --max-conns 8 intact ($pauses accept pauses, 0 rejected)"
done

# the open-file limit: with `ulimit -n 64` the proxy lowers --max-conns to
# what fits (a warning naming both numbers) and 100 verified clients all get
# through, waiting in the backlog; --strict refuses to start instead
for m in ${MAX_CONNS_MODES:-bundle epoll}; do
	start_sink --listen 127.0.0.1:0 --verify --conns 100 || fail "sink did not start"
	out=$E2E_TMP/ulimit.$m.out err=$E2E_TMP/ulimit.$m.err
	(ulimit -n 64 && exec "$SHEAF" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" \
		--io "$m") >"$out" 2>"$err" &
	pid=$!
	track $pid
	port=
	for i in $(seq 100); do
		port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$out")
		[ -n "$port" ] && break
		sleep 0.05
	done
	[ -n "$port" ] || fail "$m: proxy under ulimit -n 64 did not start: $(cat "$err")"
	grep -q 'needs [0-9]* open files, the limit is 64 (ulimit -n): using --max-conns [0-9]' "$err" ||
		fail "$m: no warning about the open-file limit: $(cat "$err")"
	timeout 90 "$SHEAF" source --connect "127.0.0.1:$port" --conns 100 --bytes 100M \
		--verify >"$E2E_TMP/src.out" 2>&1 || fail "$m: source: $(tail -2 "$E2E_TMP/src.out")"
	wait_pid "$SINK_PID" 90 || fail "$m: sink saw damaged or missing streams: $(tail -3 "$SINK_ERR")"
	stop $pid 10 || fail "$m: proxy exited with $?"
	[ "$(proxy_stat "$out" accepted)" = 100 ] && [ "$(proxy_stat "$out" rejected)" = 0 ] &&
		[ "$(proxy_stat "$out" no_upstream)" = 0 ] || fail "$m: stats: $(grep stats "$out")"
	echo "ok max-conns $m ulimit -n 64: $(sed -n 's/.*: using \(--max-conns [0-9]*\)/\1/p' "$err"), 100 verified streams intact, none refused"
done
(ulimit -n 64 && exec "$SHEAF" proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:9 --strict) \
	>"$E2E_TMP/strict.out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q 'needs [0-9]* open files, the limit is 64' "$E2E_TMP/strict.out" ||
	fail "--strict under ulimit -n 64: exit $rc, $(cat "$E2E_TMP/strict.out")"
echo "ok max-conns --strict: refuses to start (exit 2) when the limit cannot hold --max-conns"
