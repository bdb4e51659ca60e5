#!/usr/bin/env bash
# bench/ops_cost.sh [ROUNDS] [REQUESTS]: what --metrics and --log conn cost.
#
# Request/response through the proxy: `sheaf source --rr 64 --conns 1000`
# (REQUESTS transactions of 64 bytes in all, default 200000) to `sheaf sink
# --echo`, the proxy started fresh for each run, either plain ("off") or
# with `--metrics 127.0.0.1:0 --log conn` ("on": stdout to a file, and the
# metrics scraped every second during the run, 15 times Prometheus' default
# rate). The proxy's CPU time (utime + stime from /proc/PID/stat, all
# threads) is read once it listens and again once every pair has closed (so
# the 1,000 log lines are in), and reported per 100,000 transactions. Runs
# interleave (each round one of each kind, the order rotating from round to
# round, so none is always first); the result is the median of each kind
# and their difference. Env: SHEAF (binary, default build/sheaf), BASE (a
# second binary to compare, as "base", e.g. an older build: its plain runs
# interleave with the others).
set -u
cd "$(dirname "$0")/.." || exit 1
ROUNDS=${1:-7}
REQS=${2:-200000}
SHEAF=${SHEAF:-build/sheaf}
BASE=${BASE:-}
CONNS=1000
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-ops-cost.XXXXXX") || exit 1
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need=$((4 * CONNS + 200))
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" || { echo "need ulimit -n $need" >&2; exit 1; }
ticks_hz=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
wait_for() { # FILE PATTERN SECONDS
	local i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		[ "$i" -ge $(($3 * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

"$SHEAF" sink --listen 127.0.0.1:0 --echo >"$tmp/sink.out" 2>&1 &
pids="$pids $!"
wait_for "$tmp/sink.out" "listening on" 10 || { echo "sink did not start" >&2; exit 1; }
sink=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/sink.out")

# run KIND BINARY: one run; prints the proxy's CPU ticks
run() {
	local kind=$1 bin=$2 extra="" pid port mport t0 t1 scraper="" i
	[ "$kind" = on ] && extra="--metrics 127.0.0.1:0 --log conn"
	# shellcheck disable=SC2086
	"$bin" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$sink" $extra \
		>"$tmp/proxy.out" 2>"$tmp/proxy.err" &
	pid=$!
	wait_for "$tmp/proxy.out" "listening on" 10 || { echo "proxy did not start" >&2; return 1; }
	port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/proxy.out")
	if [ "$kind" = on ]; then
		mport=$(sed -n 's|.*metrics at http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$tmp/proxy.out")
		( while :; do
			curl -s -o /dev/null "http://127.0.0.1:$mport/metrics"
			sleep 1
		done ) &
		scraper=$!
	fi
	t0=$(cpu "$pid")
	"$SHEAF" source --connect "127.0.0.1:$port" --rr 64 --conns $CONNS \
		--bytes $((REQS * 64)) >"$tmp/src.out" 2>&1 || { echo "source failed: $(cat "$tmp/src.out")" >&2; }
	# every pair closed (their log lines written): no connection left but a scrape
	i=0
	while [ "$(ss -Htn state established "( sport = :$port )" | grep -c .)" -gt 0 ] && [ $i -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	sleep 0.2
	t1=$(cpu "$pid")
	[ -n "$scraper" ] && { kill "$scraper"; wait "$scraper" 2>/dev/null; }
	kill "$pid"
	wait "$pid" 2>/dev/null
	if [ "$kind" = on ] && [ "$(grep -c 'sheaf proxy: conn ' "$tmp/proxy.out")" -ne $CONNS ]; then
		echo "on: $(grep -c 'sheaf proxy: conn ' "$tmp/proxy.out") log lines, want $CONNS" >&2
	fi
	echo $((t1 - t0))
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# ops_cost: $REQS transactions of 64 B over $CONNS connections per run, $ROUNDS rounds," \
	"$(uname -r), $(nproc) CPUs; proxy CPU in ms per 100k transactions"
for r in $(seq 1 "$ROUNDS"); do
	kinds=(off on)
	[ -n "$BASE" ] && kinds=(base off on)
	s=$(((r - 1) % ${#kinds[@]}))
	order="${kinds[*]:$s} ${kinds[*]:0:$s}"
	line="round $r:"
	for k in $order; do
		if [ "$k" = base ]; then t=$(run off "$BASE"); else t=$(run "$k" "$SHEAF"); fi
		ms=$(awk -v t="$t" -v hz="$ticks_hz" -v n="$REQS" 'BEGIN { printf "%.0f", t * 1000 / hz * 100000 / n }')
		echo "$ms" >>"$tmp/$k"
		line="$line $k $ms"
	done
	echo "$line"
done
off=$(median <"$tmp/off")
on=$(median <"$tmp/on")
echo "median: off $off ms, on $on ms per 100k transactions:" \
	"$(awk -v a="$off" -v b="$on" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }') for --metrics + --log conn"
if [ -n "$BASE" ]; then
	base=$(median <"$tmp/base")
	echo "median: base $base ms: this build off $(awk -v a="$base" -v b="$off" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }') against it"
fi
