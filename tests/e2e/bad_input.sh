#!/usr/bin/env bash
# bad_input.sh: usage errors exit 2 and runtime errors exit 1, each with a
# message on stderr naming the bad value; every subcommand's --help exits 0.
# No sheaf process started here may be left running.
. "$(dirname "$0")/lib.sh"
require_sheaf

failed=0
STARTED=""

# expect WANT_RC NEEDLE ARGS...: run `sheaf ARGS` (at most 5 s), check its
# exit status is WANT_RC and its stderr contains NEEDLE (fixed string).
expect() {
	local want=$1 needle=$2 rc out err
	shift 2
	E2E_SEQ=$((E2E_SEQ + 1))
	out="$E2E_TMP/cmd.$E2E_SEQ.out"
	err="$E2E_TMP/cmd.$E2E_SEQ.err"
	"$SHEAF" "$@" >"$out" 2>"$err" </dev/null &
	local pid=$!
	track "$pid"
	STARTED="$STARTED $pid"
	wait_pid "$pid" 5
	rc=$?
	local what="sheaf $*"
	if [ "$rc" -ne "$want" ]; then
		echo "FAIL $what: exit $rc, want $want; stderr: $(one_line "$err")"
		failed=$((failed + 1))
		return 1
	fi
	if [ -n "$needle" ] && ! grep -qF -- "$needle" "$err"; then
		echo "FAIL $what: stderr does not mention '$needle': $(one_line "$err")"
		failed=$((failed + 1))
		return 1
	fi
	echo "ok $what -> $rc"
}

# port 1 must have no listener for the connection-refused cases
if (exec 3<>/dev/tcp/127.0.0.1/1) 2>/dev/null; then
	skip "something listens on 127.0.0.1:1"
fi

# a live upstream so proxy usage errors are about the flag, not the upstream
start_sink --listen 127.0.0.1:0 || fail "sink did not start: $(one_line "$SINK_ERR")"
UP="127.0.0.1:$SINK_PORT"
L="--listen 127.0.0.1:0"

expect 2 "--buf-size 0"       proxy $L --upstream "$UP" --buf-size 0
expect 2 "--bufs 1000"        proxy $L --upstream "$UP" --bufs 1000
expect 2 "--bufs 65536"       proxy $L --upstream "$UP" --bufs 65536
expect 2 "bogus"              proxy $L --upstream "$UP" --io bogus
expect 2 "nonsense"           proxy --listen nonsense --upstream "$UP"
expect 2 "does not resolve"   proxy $L --upstream nosuch.invalid:80
expect 2 "--balance random"   proxy $L --upstream "$UP" --balance random
expect 2 "--check-interval"   proxy $L --upstream "$UP" --check-interval -5
expect 2 "--upstream"         proxy $L
expect 1 "127.0.0.1:1"        source --connect 127.0.0.1:1
expect 2 "--conns 0"          sink $L --conns 0
expect 2 "nosuchcmd"          nosuchcmd
expect 2 "unexpected argument" probe extra

# strict numbers: no sign, no white space, no base prefix, no trailing junk,
# and the message names the range (every subcommand; the proxy through the
# shared parsers)
expect 2 "0 to 65535"         proxy --listen 127.0.0.1:+80 --upstream "$UP"
expect 2 "0 to 65535"         proxy $L --upstream "127.0.0.1: 80"
expect 2 "0 to 65535"         proxy $L --upstream "127.0.0.1:0x50"
expect 2 "0 to 65535"         sink --listen 127.0.0.1:+80
expect 2 "0 to 65535"         sink --listen "127.0.0.1:80 "
expect 2 "0 to 65535"         sink --listen 127.0.0.1:65536
expect 2 "0 to 65535"         source --connect "127.0.0.1: 80"
expect 2 "0 to 65535"         source --connect "[::1]:-80"
expect 2 "not a HOST:PORT"    source --connect " 127.0.0.1:80"
expect 2 "1 to 9990"          proxy $L --upstream "$UP" --max-conns +5
expect 2 "1 to 64"            proxy $L --upstream "$UP" --threads 2x
expect 2 "0 to 86400000"      proxy $L --upstream "$UP" --connect-timeout " 5"
expect 2 "0 to 86400000"      proxy $L --upstream "$UP" --idle-timeout 1K
expect 2 "1 to 1M"            proxy $L --upstream "$UP" --buf-size "4K "
expect 2 "1 to 9990"          sink $L --conns +3
expect 2 "1 to 9990"          sink $L --conns " 3"
expect 2 "1 to 1M"            sink $L --buf-size 4Kx
expect 2 "2 to 32768"         sink $L --bufs +64
expect 2 "1 to 9990"          source --connect "$UP" --conns 3x
expect 2 "1 to 9990"          source --connect "$UP" --conns 1K
expect 2 "--bytes -1"         source --connect "$UP" --bytes -1
expect 2 "1 to 1048573"       source --connect "$UP" --write-size 1M
expect 2 "0 to 18446744073709551615" source --connect "$UP" --seed 0x10
expect 2 "1 to 1M"            source --connect "$UP" --rr +1
expect 2 "--duration"         source --connect "$UP" --rr 1 --duration 0x1p3
expect 2 "1 to 64"            bench --runs +3
expect 2 "1 to 4000"          bench --conns 10x
expect 2 "1 to 1M"            bench --sizes 32,+80
expect 2 "--bytes 0"          bench --bytes 0
expect 2 "--link-rate"        bench --topology netns --link-rate nangbit

for cmd in proxy source sink probe bench; do
	E2E_SEQ=$((E2E_SEQ + 1))
	out="$E2E_TMP/help.$E2E_SEQ"
	"$SHEAF" "$cmd" --help >"$out" 2>&1 </dev/null &
	pid=$!
	track "$pid"
	STARTED="$STARTED $pid"
	wait_pid "$pid" 5
	rc=$?
	if [ "$rc" -eq 0 ] && grep -q 'usage:' "$out"; then
		echo "ok sheaf $cmd --help"
	else
		echo "FAIL sheaf $cmd --help: exit $rc, output: $(one_line "$out")"
		failed=$((failed + 1))
	fi
done

stop "$SINK_PID" 5 >/dev/null

left=""
for p in $STARTED $SINK_PID; do
	alive "$p" && left="$left $p"
done
kids=$(ps -o pid=,comm= --ppid $$ 2>/dev/null | awk '$2 == "sheaf" { print $1 }')
if [ -n "$left$kids" ]; then
	echo "FAIL sheaf processes left running:$left $kids"
	failed=$((failed + 1))
fi

[ "$failed" -eq 0 ] || { echo "bad_input: $failed failed"; exit 1; }
echo "bad_input: all passed"
