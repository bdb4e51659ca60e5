#!/usr/bin/env bash
# access_log.sh: --log conn writes one line per connection that ended,
#   sheaf proxy: conn CLIENT [DATE] FRONTEND UPSTREAM Tc/Tt BYTES_IN BYTES_OUT STATE
# checked field by field for a normal connection (--), a client that resets
# (CD), an upstream that resets (SD), an upstream that refuses (SC), an idle
# timeout (cD/sD) and PROXY headers that are malformed (PR) or late (cR);
# --log errors leaves out the normal ones; --log none (the default) writes none.
. "$(dirname "$0")/lib.sh"
require_sheaf

LINE_RE='^sheaf proxy: conn ([0-9.]+):([0-9]+) \[([0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3})\] ([^ ]+) ([^ ]+) (-?[0-9]+)/([0-9]+) ([0-9]+) ([0-9]+) (..)$'

# client KIND PORT [ARGS]: a python client; prints what it did
client() {
	timeout 30 python3 - "$@" <<'PY'
import socket, struct, sys, time
kind, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
if kind == "reset":            # 1000 bytes, then a reset (SO_LINGER 0)
    s.sendall(b"x" * 1000)
    time.sleep(0.5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
elif kind == "send":           # N bytes, half-close, read to the end
    try:
        s.sendall(b"y" * int(sys.argv[3]))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
elif kind == "hold":           # connect, send nothing, wait for the proxy to close
    try:
        s.recv(1)
    except OSError:
        pass
    s.close()
elif kind == "raw":            # bytes, half-close, read to the end
    s.sendall(sys.argv[3].encode().decode("unicode_escape").encode("latin-1"))
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
print("done", kind)
PY
}

# the last log line of FILE matching STATE: its fields in F_* variables
fields() {
	local line
	line=$(grep -E "$LINE_RE" "$1" | grep -E " $2\$" | tail -n1)
	[ -n "$line" ] || return 1
	F_LINE=$line
	F_IP=$(sed -E "s#$LINE_RE#\\1#" <<<"$line")
	F_FE=$(sed -E "s#$LINE_RE#\\4#" <<<"$line")
	F_UP=$(sed -E "s#$LINE_RE#\\5#" <<<"$line")
	F_TC=$(sed -E "s#$LINE_RE#\\6#" <<<"$line")
	F_TT=$(sed -E "s#$LINE_RE#\\7#" <<<"$line")
	F_IN=$(sed -E "s#$LINE_RE#\\8#" <<<"$line")
	F_OUT=$(sed -E "s#$LINE_RE#\\9#" <<<"$line")
}

dead=$(free_port)

# 1. normal, client reset, upstream refusing: one proxy, two upstreams in turn
start_sink --listen 127.0.0.1:0 || fail "sink did not start"
UP=127.0.0.1:$SINK_PORT
start_proxy --listen 127.0.0.1:0 --upstream "$UP" --log conn || fail "proxy did not start"
timeout 30 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --bytes 1M --verify >/dev/null 2>&1
rc=$?
wait_line "$PROXY_OUT" ' --$' 5
fields "$PROXY_OUT" -- && [ "$rc" -eq 0 ] && [ "$F_IP" = 127.0.0.1 ] && [ "$F_FE" = main ] &&
	[ "$F_UP" = "$UP" ] && [ "$F_TC" -ge 0 ] && [ "$F_TT" -ge "$F_TC" ] &&
	[ "$F_IN" = $((1048576 + 32)) ] && [ "$F_OUT" = 0 ]
report $? "normal: --, client, frontend, upstream, Tc <= Tt, 1 MiB + header in, 0 out: $F_LINE"

client reset "$PROXY_PORT" >/dev/null
wait_line "$PROXY_OUT" ' CD$' 5
fields "$PROXY_OUT" CD && [ "$F_UP" = "$UP" ] && [ "$F_IN" = 1000 ] && [ "$F_OUT" = 0 ] &&
	[ "$F_TT" -ge 400 ]
report $? "client reset: CD, 1000 bytes in, Tt >= 400 ms: $F_LINE"
stop "$PROXY_PID" 10 >/dev/null
n=$(grep -Ec "$LINE_RE" "$PROXY_OUT")
[ "$n" -eq 2 ]
report $? "one line per connection ($n)"

start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" --log conn ||
	fail "proxy did not start"
client hold "$PROXY_PORT" >/dev/null
wait_line "$PROXY_OUT" ' SC$' 5
fields "$PROXY_OUT" SC && [ "$F_UP" = "127.0.0.1:$dead" ] && [ "$F_TC" = -1 ] &&
	[ "$F_IN" = 0 ] && [ "$F_OUT" = 0 ]
report $? "upstream refusing: SC, the upstream tried, Tc -1, nothing moved: $F_LINE"
stop "$PROXY_PID" 10 >/dev/null

# 2. the upstream resets after reading 64 KiB
start_server readclose --read-first 64K --close reset || fail "readclose server did not start"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SERVER_PORT" --log conn ||
	fail "proxy did not start"
client send "$PROXY_PORT" 4000000 >/dev/null
wait_line "$PROXY_OUT" ' SD$' 5
fields "$PROXY_OUT" SD && [ "$F_OUT" = 0 ] && [ "$F_IN" -ge 65536 ]
report $? "upstream reset: SD, at least 64 KiB in: $F_LINE"
stop "$PROXY_PID" 10 >/dev/null

# 3. idle timeout
start_sink --listen 127.0.0.1:0 || fail "sink did not start"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --log conn \
	--idle-timeout 300 || fail "proxy did not start"
client hold "$PROXY_PORT" >/dev/null
wait_line "$PROXY_OUT" ' [cs]D$' 5
# (the loop's clock lags by up to a sweep, a quarter of the timeout)
fields "$PROXY_OUT" '[cs]D' && [ "$F_TT" -ge 225 ] && [ "$F_TT" -lt 2000 ]
report $? "idle timeout: cD or sD after 300 ms: $F_LINE"
stop "$PROXY_PID" 10 >/dev/null

# 4. PROXY headers: malformed, and late; --log errors
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --log errors \
	--accept-proxy --header-timeout 300 || fail "proxy did not start"
client raw "$PROXY_PORT" 'PROXY TCP9 garbage\r\n' >/dev/null
wait_line "$PROXY_OUT" ' PR$' 5
fields "$PROXY_OUT" PR && [ "$F_UP" = "<NOSRV>" ] && [ "$F_TC" = -1 ]
report $? "malformed PROXY header: PR, <NOSRV>, Tc -1: $F_LINE"
client hold "$PROXY_PORT" >/dev/null
wait_line "$PROXY_OUT" ' cR$' 5
fields "$PROXY_OUT" cR && [ "$F_TT" -ge 300 ]
report $? "late PROXY header: cR after >= 300 ms: $F_LINE"
out=$(client raw "$PROXY_PORT" 'PROXY TCP4 192.0.2.7 127.0.0.1 4444 80\r\nhello')
stop "$PROXY_PID" 10 >/dev/null
grep -q ' 192.0.2.7:4444 ' "$PROXY_OUT"
st=$?
[ $st -ne 0 ] && [ "$out" = "done raw" ] && grep -q '"accepted":3,' "$PROXY_OUT"
report $? "--log errors: no line for a connection that ended normally (the third)"
n=$(grep -Ec "$LINE_RE" "$PROXY_OUT")
[ "$n" -eq 2 ]
report $? "--log errors: the two refused headers only ($n lines)"

# 4b. with --accept-proxy, CLIENT is the address the header names
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --log conn \
	--accept-proxy || fail "proxy did not start"
client raw "$PROXY_PORT" 'PROXY TCP4 192.0.2.7 127.0.0.1 4444 80\r\nhello' >/dev/null
wait_line "$PROXY_OUT" ' --$' 5
grep -Eq '^sheaf proxy: conn 192\.0\.2\.7:4444 .* 45 0 --$' "$PROXY_OUT"
report $? "--accept-proxy: the header's client address; 45 bytes in (its 40 and 5): $(grep 'conn ' "$PROXY_OUT")"
stop "$PROXY_PID" 10 >/dev/null

# 5. --log none (the default): nothing
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$dead" || fail "proxy did not start"
out=$(client hold "$PROXY_PORT")
stop "$PROXY_PID" 10 >/dev/null
n=$(grep -c 'sheaf proxy: conn ' "$PROXY_OUT")
[ "$n" -eq 0 ] && [ "$out" = "done hold" ] && grep -q '"accepted":1,' "$PROXY_OUT"
report $? "no --log: no connection line ($n) for a refused one"
exit $E2E_FAILED
