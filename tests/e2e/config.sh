#!/usr/bin/env bash
# config.sh: sheaf proxy --config FILE. Two frontends of one process, each
# with its own upstream, carry verified streams (source --verify -> proxy
# -> sink --verify, each stream to the right sink); --check says valid or
# names every mistake with FILE:LINE and exits 2; a bad file stops the
# proxy from starting; --config takes no other option.
. "$(dirname "$0")/lib.sh"
require_sheaf

CONF=$E2E_TMP/proxy.conf

# run_check NAME FILE WANT_RC: sheaf proxy --check --config FILE; its
# stdout+stderr in $E2E_TMP/NAME.out, exit status in CHECK_RC
run_check() {
	timeout 10 "$SHEAF" proxy --check --config "$2" >"$E2E_TMP/$1.out" 2>&1
	CHECK_RC=$?
	[ "$CHECK_RC" -eq "$3" ]
}

# 1. two frontends, verified streams through each
start_sink --listen 127.0.0.1:0 --verify --conns 4 || fail "sink A did not start"
A_PID=$SINK_PID A_PORT=$SINK_PORT A_OUT=$SINK_OUT
start_sink --listen 127.0.0.1:0 --verify --conns 3 || fail "sink B did not start"
B_PID=$SINK_PID B_PORT=$SINK_PORT B_OUT=$SINK_OUT
cat >"$CONF" <<EOF
# two frontends, one process
threads 2
buf-size 1K

[frontend alpha]
listen 127.0.0.1:0      # any free port
upstream 127.0.0.1:$A_PORT

[frontend beta]
listen 127.0.0.1:0
upstream 127.0.0.1:$B_PORT
balance leastconn
EOF
run_check valid "$CONF" 0
st=$?
report $st "--check on a valid file: exit $CHECK_RC, $(one_line "$E2E_TMP/valid.out")"
grep -q "valid: 2 frontends, 2 upstreams" "$E2E_TMP/valid.out"
report $? "--check says what it read: $(one_line "$E2E_TMP/valid.out")"

start_proxy --config "$CONF" || fail "proxy did not start: $(one_line "$PROXY_ERR")"
pa=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\) (frontend alpha,.*/\1/p' "$PROXY_OUT")
pb=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\) (frontend beta,.*/\1/p' "$PROXY_OUT")
[ -n "$pa" ] && [ -n "$pb" ] && [ "$pa" != "$pb" ]
report $? "one listening line per frontend, two ports ($pa, $pb)"
timeout 60 "$SHEAF" source --connect "127.0.0.1:$pa" --conns 4 --bytes 8M --verify \
	--seed 11 >"$E2E_TMP/src_a.out" 2>&1 &
sa=$!
timeout 60 "$SHEAF" source --connect "127.0.0.1:$pb" --conns 3 --bytes 6M --verify \
	--seed 12 >"$E2E_TMP/src_b.out" 2>&1
rb=$?
wait $sa
ra=$?
wait_pid "$A_PID" 20
ka=$?
wait_pid "$B_PID" 20
kb=$?
[ "$ra" -eq 0 ] && [ "$ka" -eq 0 ] && grep -q '4 streams, 4 intact' "$A_OUT"
report $? "frontend alpha: 4 verified streams intact at its upstream (source $ra, sink $ka: $(one_line "$A_OUT"))"
[ "$rb" -eq 0 ] && [ "$kb" -eq 0 ] && grep -q '3 streams, 3 intact' "$B_OUT"
report $? "frontend beta: 3 verified streams intact at its upstream (source $rb, sink $kb: $(one_line "$B_OUT"))"
stop "$PROXY_PID" 10
prc=$?
pool=$(pool_balanced "$PROXY_OUT")
pst=$?
[ "$prc" -eq 0 ] && [ "$pst" -eq 0 ] && grep -q '"accepted":7,' "$PROXY_OUT"
report $? "the proxy stops clean: exit $prc, 7 accepted over both, pool $pool"

# 2. every kind of mistake, each named with the file and its line
cat >"$E2E_TMP/bad.conf" <<'EOF'
threads 0
bogus 1
listen 127.0.0.1:1
[frontend one]
listen 127.0.0.1:0
listen 127.0.0.1:0
upstream nonsense
threads 2
balance random
send-proxy now
[backend two]
[frontend one]
[frontend three]
upstream 127.0.0.1:9
EOF
run_check bad "$E2E_TMP/bad.conf" 2
report $? "--check on a file with mistakes exits 2 (exit $CHECK_RC)"
B=$E2E_TMP/bad.conf
while IFS='|' read -r line what; do
	grep -qF -- "$B:$line: $what" "$E2E_TMP/bad.out"
	report $? "$B:$line named: $what"
done <<'EOF'
1|threads 0: must be 1 to 64
2|unknown option 'bogus'
3|'listen' belongs in a [frontend NAME] section
6|'listen' is set on line 5 already
7|upstream nonsense: not a HOST:PORT address
8|'threads' applies to the whole process
9|balance random: roundrobin, leastconn or source
10|'send-proxy' takes no value
11|unknown section [backend two]
12|frontend one is defined on line 4 already
4|frontend one has no 'upstream'
13|frontend three has no 'listen'
EOF
n=$(grep -c "^sheaf proxy: $B:[0-9]*: " "$E2E_TMP/bad.out")
[ "$n" -eq 12 ]
report $? "12 mistakes, 12 messages ($n), then the count: $(tail -1 "$E2E_TMP/bad.out")"

# the same file does not start a proxy
timeout 10 "$SHEAF" proxy --config "$B" >"$E2E_TMP/bad_start.out" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -qF "$B:1: threads 0" "$E2E_TMP/bad_start.out" &&
	! grep -q "listening on" "$E2E_TMP/bad_start.out"
report $? "starting with it: exit $rc, the same messages, no listener"

# 3. the file is the whole configuration; it must exist
timeout 10 "$SHEAF" proxy --config "$CONF" --threads 2 >"$E2E_TMP/mix.out" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q -- "--threads: not with --config" "$E2E_TMP/mix.out"
report $? "--config with --threads: exit $rc: $(one_line "$E2E_TMP/mix.out")"
run_check missing "$E2E_TMP/nosuch.conf" 2
st=$?
grep -q "nosuch.conf: No such file" "$E2E_TMP/missing.out"
[ $st -eq 0 ] && [ $? -eq 0 ]
report $? "a missing file: exit $CHECK_RC: $(one_line "$E2E_TMP/missing.out")"

# 4. --check without a file checks the command line
timeout 10 "$SHEAF" proxy --check --listen 127.0.0.1:0 --upstream 127.0.0.1:9 \
	>"$E2E_TMP/cl.out" 2>&1
rc1=$?
timeout 10 "$SHEAF" proxy --check --listen 127.0.0.1:0 --upstream 127.0.0.1:9 \
	--accept-proxy --header-timeout 0 >"$E2E_TMP/cl_bad.out" 2>&1
rc2=$?
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 2 ] && grep -q -- "--header-timeout 0" "$E2E_TMP/cl_bad.out"
report $? "--check with flags: valid exits $rc1, --accept-proxy --header-timeout 0 exits $rc2"
exit $E2E_FAILED
