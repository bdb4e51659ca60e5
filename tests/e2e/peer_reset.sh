#!/usr/bin/env bash
# peer_reset.sh: clients that send through the proxy and then reset (RST via
# SO_LINGER {1,0}) must not disturb verified streams running concurrently
# through the same proxy, and the proxy must get every pool buffer back.
# Each resetting client sends a stream header with id >= 1000 and then junk,
# so the sink counts it as a failed stream; only streams 0..3 (from sheaf
# source) may be intact, and they all must be.
. "$(dirname "$0")/lib.sh"
require_sheaf
command -v python3 >/dev/null 2>&1 || skip "python3 missing"

RESETS=20
CONNS=4
BYTES=${PEER_RESET_BYTES:-1073741824}

start_sink --listen 127.0.0.1:0 --verify --json ||
	fail "sink did not start: $(one_line "$SINK_ERR")"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --io bundle --buf-size 4096 ||
	fail "proxy did not start: $(one_line "$PROXY_ERR")"

failed=0
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

src_out="$E2E_TMP/source.out"
src_err="$E2E_TMP/source.err"
timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --conns "$CONNS" \
	--bytes "$BYTES" --verify --write-size 16K >"$src_out" 2>"$src_err" &
SRC_PID=$!
track "$SRC_PID"

py_err="$E2E_TMP/reset.err"
timeout 30 python3 - "$PROXY_PORT" "$RESETS" >"$E2E_TMP/reset.out" 2>"$py_err" <<'EOF' &
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
junk = bytes(range(256)) * 1024          # 256 KiB
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    # a valid header (magic, id, seed, len) promising more than is sent
    s.sendall(b"SHEAFST1" + struct.pack("<QQQ", 1000 + i, 1, 1 << 30))
    # vary how much is in flight when the reset lands
    try:
        s.sendall(junk[: (i * 13 * 1024) % len(junk) + 1])
    except OSError:
        pass
    if i % 2:
        time.sleep(0.01)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.005)
print("resets done", n)
EOF
PY_PID=$!
track "$PY_PID"

wait_pid "$PY_PID" 35
rc=$?
[ "$rc" -eq 0 ] || bad "reset client exit $rc: $(one_line "$py_err")"

# was the source still running while the resets happened?
if alive "$SRC_PID"; then overlap=yes; else overlap=no; fi

wait_pid "$SRC_PID" 65
rc=$?
[ "$rc" -eq 0 ] || bad "source exit $rc: $(one_line "$src_err") $(one_line "$src_out")"
[ "$overlap" = yes ] || echo "note: source finished before the resets did (raise PEER_RESET_BYTES)"

# the source has written everything, but some of it may still be on its way
# through the proxy, which stops reading on SIGTERM: wait (10 s at most)
# until every stream has passed, i.e. no connection to the sink is left
i=0
while [ "$i" -lt 100 ]; do
	n=$(ss -Htn state established "( dport = :$SINK_PORT )" 2>/dev/null | grep -c .)
	[ "${n:-0}" -eq 0 ] && break
	sleep 0.1
	i=$((i + 1))
done
stop "$PROXY_PID" 10
rc=$?
[ "$rc" -eq 0 ] || bad "proxy exit $rc: $(one_line "$PROXY_ERR")"
pool=$(pool_balanced "$PROXY_OUT") || bad "proxy pool free/bufs = $pool: $(grep stats "$PROXY_OUT")"

# let the sink close every connection it still holds (bounded), then stop it
i=0
while [ "$i" -lt 50 ]; do
	n=$(ss -Htn state established state close-wait "( sport = :$SINK_PORT )" 2>/dev/null | grep -c .)
	[ "${n:-0}" -eq 0 ] && break
	sleep 0.1
	i=$((i + 1))
done
stop "$SINK_PID" 10
rc=$?
[ "$rc" -eq 124 ] && bad "sink did not stop on SIGTERM"

summary=$(grep '"intact"' "$SINK_OUT" | tail -n1)
intact=$(printf '%s' "$summary" | sed -n 's/.*"intact":\([0-9]*\).*/\1/p')
dups=$(printf '%s' "$summary" | sed -n 's/.*"duplicates":\([0-9]*\).*/\1/p')
[ "${intact:-x}" = "$CONNS" ] || bad "sink intact=${intact:-?}, want $CONNS: $summary"
[ "${dups:-x}" = 0 ] || bad "sink duplicates=${dups:-?}: $summary"
# every stream the sink reports as broken must be one of the resetting clients
while IFS= read -r line; do
	id=$(printf '%s' "$line" | sed -n 's/.*stream \([0-9][0-9]*\):.*/\1/p')
	[ -n "$id" ] || continue
	[ "$id" -ge 1000 ] || bad "verified stream broken: $line"
done <"$SINK_ERR"

if [ "$failed" -eq 0 ]; then
	echo "ok peer_reset: $RESETS resets beside $CONNS verified streams intact, pool $pool"
	exit 0
fi
echo "sink: $summary"
exit 1
