#!/usr/bin/env bash
# balance.sh: --balance roundrobin spreads clients evenly; leastconn sends
# them to the upstream with fewer open connections (counted over both
# threads); source keeps each client address (127.0.0.2..9) on one upstream.
# The upstreams are banner servers: each client reads which one it reached.
. "$(dirname "$0")/lib.sh"
require_sheaf

UPS=() OUTS=()
for n in A B C; do
	start_server banner --name "$n" || fail "banner server $n did not start"
	UPS+=(--upstream "127.0.0.1:$SERVER_PORT")
	OUTS+=("$SERVER_OUT")
done

# count NAME WORDS...: how many of WORDS are NAME
count() { local n=$1; shift; printf '%s\n' "$@" | grep -cx "$n"; }

# --- roundrobin ---------------------------------------------------------------
start_proxy --listen 127.0.0.1:0 "${UPS[@]}" || fail "proxy did not start: $(one_line "$PROXY_ERR")"
got=$(names --port "$PROXY_PORT" --conns 12)
stop "$PROXY_PID" 10 >/dev/null
a=$(count A $got) b=$(count B $got) c=$(count C $got)
[ "$a" -eq 4 ] && [ "$b" -eq 4 ] && [ "$c" -eq 4 ] && grep -q 'balance=roundrobin' "$PROXY_OUT"
st=$?
report $st "roundrobin (the default): 12 clients over 3 upstreams, A/B/C $a/$b/$c: $got"

# --- leastconn, over two threads --------------------------------------------------
start_proxy --listen 127.0.0.1:0 "${UPS[@]:0:4}" --balance leastconn --threads 2 ||
	fail "proxy did not start: $(one_line "$PROXY_ERR")"
# 6 clients held open (ties go in turn: A B A B A B); those on B close; the
# next 3 must all go to B (0, 1, 2 open against A's 3)
got=$(timeout 30 python3 - "$PROXY_PORT" "$REPO_ROOT/tests/e2e" 2>&1 <<'PY'
import sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
from servers import read_line
import socket
def one():
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.settimeout(5)
    return s, read_line(s)
held = [one() for _ in range(6)]
for s, n in held:
    if n == "B":
        s.close()
time.sleep(0.5)
more = [one() for _ in range(3)]
print(" ".join(n for _, n in held), "|", " ".join(n for _, n in more))
PY
)
stop "$PROXY_PID" 10 >/dev/null
[ "$got" = "A B A B A B | B B B" ] && grep -q 'balance=leastconn' "$PROXY_OUT" &&
	grep -Eq 'accepted per thread: [0-9]+ [0-9]+' "$PROXY_OUT"
st=$?
report $st "leastconn, 2 threads: after closing B's 3 of 6, the next 3 go to B: '$got'" \
	"($(grep -o 'per thread: .*' "$PROXY_OUT"))"

# --- source -------------------------------------------------------------------------
start_proxy --listen 127.0.0.1:0 "${UPS[@]}" --balance source ||
	fail "proxy did not start: $(one_line "$PROXY_ERR")"
# 8 client addresses, 3 rounds: connection i comes from 127.0.0.(2 + i % 8)
got=$(names --port "$PROXY_PORT" --conns 24 \
	--bind 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9)
stop "$PROXY_PID" 10 >/dev/null
read -ra n <<<"$got"
same=0 used=""
for k in 0 1 2 3 4 5 6 7; do
	[ "${n[k]}" = "${n[k + 8]}" ] && [ "${n[k]}" = "${n[k + 16]}" ] && same=$((same + 1))
	case " $used " in *" ${n[k]} "*) ;; *) used="$used ${n[k]}" ;; esac
done
[ "${#n[@]}" -eq 24 ] && [ "$same" -eq 8 ] && [ "$(wc -w <<<"$used")" -ge 2 ] &&
	! grep -q '[!-]' <<<"$got"
st=$?
report $st "source: each of 8 client addresses kept its upstream over 3 rounds ($same of 8)," \
	"upstreams used:$used"
exit $E2E_FAILED
