#!/usr/bin/env bash
# rr.sh: request/response through `sheaf source --rr` against `sheaf sink
# --echo`, through `sheaf proxy --io bundle --buf-size 4096` and directly.
# Each case checks the exit status, "ok":true and the transaction count
# (--bytes / --rr); the --duration case checks that the run stopped in time;
# the open-loop case (--rate) the achieved rate and that none came late.
# Then SIGTERM the sink and the proxy; the proxy must exit 0 with every pool
# buffer returned.  Env: SHEAF (binary).
. "$(dirname "$0")/lib.sh"
require_sheaf

failed=0
passed=0

# json_num FILE KEY: the number after "KEY": in FILE's JSON line.
json_num() { sed -n "s/.*\"$2\":\([0-9.][0-9.]*\).*/\1/p" "$1" | head -n1; }

# run_case NAME PORT WANT_TXNS MAX_SECS SOURCE_ARGS...: prints ok/FAIL, returns 0/1.
# WANT_TXNS "any" accepts any positive count.
run_case() {
	local name=$1 port=$2 want=$3 max_secs=$4 reason="" rc txns secs
	shift 4
	local out="$E2E_TMP/source.$name.out" err="$E2E_TMP/source.$name.err"

	timeout 60 "$SHEAF" source --connect "127.0.0.1:$port" --json "$@" >"$out" 2>"$err"
	rc=$?
	[ "$rc" -eq 0 ] || reason="$reason; source rc=$rc: $(one_line "$err")"
	grep -q '"workload":"rr".*"ok":true' "$out" || reason="$reason; output: $(one_line "$out")"
	txns=$(json_num "$out" transactions)
	secs=$(json_num "$out" seconds)
	if [ "$want" = any ]; then
		[ "${txns:-0}" -gt 0 ] || reason="$reason; transactions=${txns:-none}, want > 0"
	elif [ "$txns" != "$want" ]; then
		reason="$reason; transactions=${txns:-none}, want $want"
	fi
	if [ -n "$max_secs" ] && ! awk -v s="${secs:-999}" -v m="$max_secs" 'BEGIN { exit !(s <= m) }'; then
		reason="$reason; took ${secs:-?} s, want <= $max_secs"
	fi
	if [ -n "$reason" ]; then
		echo "FAIL rr $name${reason/#;/:}"
		return 1
	fi
	echo "ok rr $name ($(one_line "$out"))"
}

count() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi; }

start_sink --listen 127.0.0.1:0 --echo || fail "sink did not start: $(one_line "$SINK_ERR")"
start_proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$SINK_PORT" --io bundle --buf-size 4096 ||
	fail "proxy did not start: $(one_line "$PROXY_ERR") $(one_line "$PROXY_OUT")"

count run_case proxy-32x8 "$PROXY_PORT" 8192 "" --rr 32 --conns 8 --bytes 256K
count run_case direct-5000x2 "$SINK_PORT" 210 "" --rr 5000 --conns 2 --bytes 1M
# --bytes far more than 0.5 s allow: --duration ends it, mid-transaction
count run_case proxy-duration "$PROXY_PORT" any 5 --rr 64 --conns 4 --bytes 1G --duration 0.5

# open loop: --rate requests/s whatever the answers do; the window counts
# what was due in it; the achieved rate must be the offered one (the proxy
# easily keeps up with 2000/s) and no request may be left unanswered
rate_case() {
	local out="$E2E_TMP/source.rate.out" err="$E2E_TMP/source.rate.err" reason="" tps late
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$PROXY_PORT" --json --rr 64 --conns 16 \
		--bytes 1G --duration 1 --warmup 0.2 --rate 2000 --marks >"$out" 2>"$err"
	local rc=$?
	[ "$rc" -eq 0 ] || reason="$reason; source rc=$rc: $(one_line "$err")"
	grep -q '"workload":"rate".*"ok":true' "$out" || reason="$reason; output: $(one_line "$out")"
	tps=$(json_num "$out" tps)
	late=$(json_num "$out" late)
	awk -v t="${tps:-0}" 'BEGIN { exit !(t >= 1800 && t <= 2200) }' ||
		reason="$reason; tps ${tps:-none}, want 2000 +- 10%"
	[ "${late:-1}" = 0 ] || reason="$reason; late ${late:-none}, want 0"
	grep -q 'measuring' "$err" && grep -q 'measured' "$err" ||
		reason="$reason; no window marks on stderr"
	if [ -n "$reason" ]; then
		echo "FAIL rr rate${reason/#;/:}"
		return 1
	fi
	echo "ok rr rate ($(one_line "$out"))"
}
count rate_case

stop "$PROXY_PID" 10
rc=$?
pool=$(pool_balanced "$PROXY_OUT") || pool=$(pool_balanced "$PROXY_ERR")
prc=$?
stop "$SINK_PID" 10
src=$?
if [ "$rc" -eq 0 ] && [ "$prc" -eq 0 ] && [ "$src" -eq 0 ]; then
	echo "ok rr shutdown (proxy pool $pool)"
	passed=$((passed + 1))
else
	echo "FAIL rr shutdown: proxy rc=$rc pool=$pool: $(one_line "$PROXY_ERR"); sink rc=$src: $(one_line "$SINK_ERR")"
	failed=$((failed + 1))
fi

echo "rr: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
