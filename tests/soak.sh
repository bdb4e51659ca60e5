#!/usr/bin/env bash
# soak.sh: mixed load with injected faults through `sheaf proxy`, for
# SOAK_SECONDS (default 600) split evenly over SOAK_MODES (default every io
# mode: bundle ring plain sendmsg epoll recvmsg). `make soak` runs it; tests/run.sh
# runs 60 s over "bundle epoll" on the sanitizer build.
#
# Per mode, five proxies in that mode, all running at once:
#   A  verified streams: rounds of `sheaf source --verify` (1..64 streams,
#      256K..64M in all) into a fresh `sheaf sink --verify --conns N` on a
#      fixed port; --threads 2, 1024 x 4K pool per thread.  The sink is
#      down between rounds, so A starts with its upstream down too.
#   B  echo: rounds of `source --echo --verify` and `source --rr` against one
#      `sink --echo`, beside client resets (soak_faults.py resets: SO_LINGER
#      0 after part of a stream) and stalled clients (soak_faults.py stall,
#      8 at a time: send until the socket is full, never read, wait for the
#      proxy to close them: none may sit 12 s with its socket queues not
#      moving and still open); a small pool (512 x 1K) so that the stalled
#      ones press on it: --stall-timeout 2000, --idle-timeout 5000.
#   C  upstream faults: upstreams servers.py readclose --close reset (RST
#      after 64K; it checks those bytes) and blackhole (never reads), round
#      robin; soak_faults.py upstream uploads and waits for the end;
#      --idle-timeout 2000 must end every blackholed pair; 256 x 4K pool.
#   D  upstream restarts: one upstream, `sink --echo` on a fixed port, not
#      running when D starts; a controller starts it after 3 s, then kills
#      it (SIGKILL) every 2-5 s and restarts it 0.2-0.9 s later, while
#      rounds of `source --echo --verify` run.  A round during which the
#      upstream was down or restarted is "faulted" (it may fail; its bytes
#      are not counted); every other round must verify: D must recover.
#      128 x 16K pool (C and D: small pools, touched within the warm-up).
#   E  failover: upstreams D's restarted one, then a `sink --echo`; rounds of
#      `source --echo --verify`; every round during which the first
#      upstream neither went down nor came back must verify, also while it
#      is down; connects to the first failed (connect_failed > 0), yet no
#      client was closed for want of an upstream (no_upstream 0: each went
#      on to the second); after its last restart E must have taken it back
#      ("upstream ... up" is its last word on it); in runs of 300 s or more,
#      some round must also have run entirely while the first was down.
#   SIGHUP to every proxy every 3 s, only when `sheaf proxy --help` mentions
#   SIGHUP (a proxy without a handler would die of it); else reported as
#   skipped.
# Checks per mode (one "ok soak: MODE ..." or "FAIL soak: MODE ..." line):
# every round not subject to a fault verified (lost or corrupted bytes: the
# whole byte count of any such round that did not verify, must be 0), no
# BAD line from the readclose server (bytes it read before its reset), no
# stalled client or upstream upload left open by the proxy past its
# timeouts, D recovered after the last restart, every proxy alive to the
# end, its descriptor count back to what it was at start, RSS at the end at
# most 1.5 x RSS at start + 8 MiB (start: after a warm-up of
# min(10 s, 1/5 of the mode's time); the pool's pages are touched as its
# ring cycles, which on a quiet proxy may take longer, and 8 MiB covers
# one loop's default pool), at most one send per buffer received (+2 per
# short send, +8 per connection, +1000: a send spin shows here; sends per
# GiB are reported), exit 0 on SIGTERM with pool_free == pool_bufs.
# Then one summary line "soak: ..."; exit 0 only when every mode passed.
# The logs (kept on failure or with E2E_KEEP=1) have each mode's results,
# a timeline and every proxy's RSS every 5 s (DIR/MODE/rss).
# SOAK_CLEAN=yes runs the same load without the faults (no client resets,
# stalls, upstream uploads to C, restarts of D's upstream, SIGHUP) and
# skips the checks that need them: its sends/GiB are what a soak's are
# compared with.
# Env: SHEAF, SOAK_SECONDS, SOAK_MODES, SOAK_SEED (default 1), SOAK_CLEAN, E2E_KEEP=1
# keeps the logs, SOAK_A_ARGS .. SOAK_E_ARGS replace a proxy's options,
# SOAK_HUP=yes|no sends SIGHUP or not whatever --help says.  Total wall time: SOAK_SECONDS + ~15 s per mode.
. "$(dirname "$0")/e2e/lib.sh"
require_sheaf
command -v python3 >/dev/null 2>&1 || skip "python3 missing"

SECONDS_TOTAL=${SOAK_SECONDS:-600}
MODES=${SOAK_MODES:-"bundle ring plain sendmsg epoll recvmsg"}
SEED=${SOAK_SEED:-1}
CLEAN=${SOAK_CLEAN:-no}
FAULTS_PY="$REPO_ROOT/tests/soak_faults.py"
# the interpreter itself, not a wrapper script that finds it (pyenv's shims
# take seconds to start on a busy machine); lib.sh's start_server uses this
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$PY" ] || PY=$(command -v python3)
python3() { "$PY" "$@"; }
set -- $MODES
NMODES=$#
PER_MODE=$((SECONDS_TOTAL / NMODES))
[ "$PER_MODE" -ge 10 ] || { echo "soak: at least 10 s per mode (SOAK_SECONDS=$SECONDS_TOTAL over $NMODES modes)" >&2; exit 2; }
# each proxy's options beside --listen, --io and its upstreams (the lanes'
# timeouts assume B's and C's --idle-timeout)
A_ARGS=${SOAK_A_ARGS:-"--threads 2 --bufs 1024"}
B_ARGS=${SOAK_B_ARGS:-"--buf-size 1K --bufs 512 --stall-timeout 2000 --idle-timeout 5000"}
C_ARGS=${SOAK_C_ARGS:-"--bufs 256 --idle-timeout 2000"}
D_ARGS=${SOAK_D_ARGS:-"--buf-size 16K --bufs 128 --connect-timeout 1000"}
E_ARGS=${SOAK_E_ARGS:-"--buf-size 16K --bufs 128 --connect-timeout 1000"}
WARMUP=$((PER_MODE / 5))
[ "$WARMUP" -le 10 ] || WARMUP=10

# SIGHUP only to a proxy that handles it (SOAK_HUP=yes|no overrides)
HUP=${SOAK_HUP:-auto}
[ "$CLEAN" = yes ] && HUP=no
if [ "$HUP" = auto ]; then
	if "$SHEAF" proxy --help 2>&1 | grep -q SIGHUP; then HUP=yes; else HUP=no; fi
fi

# ------------------------------------------------------------ helpers

# untrack PID: forget a process that was reaped (pids are reused: pid_max
# may be 32768, and lib.sh's cleanup must never signal someone else's).
untrack() {
	local p keep=""
	for p in $E2E_PIDS; do [ "$p" = "$1" ] || keep="$keep $p"; done
	E2E_PIDS=$keep
}

# halt PID [SECONDS]: stop (SIGTERM, then KILL after SECONDS) and untrack;
# returns the exit status.
halt() {
	local rc
	stop "$1" "${2:-10}"
	rc=$?
	untrack "$1"
	return "$rc"
}

now() { date +%s; }
mark() { printf '%s %s\n' "$(date +%T.%N | cut -c1-12)" "$2" >>"$1/timeline"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
json_num() { sed -n "s/.*\"$2\":\([0-9.][0-9.]*\).*/\1/p" "$1" 2>/dev/null | tail -n1; }
# pick VAR A B ...: VAR = one of A B ... (not in $(...): a subshell reseeds
# RANDOM, and SOAK_SEED would not repeat a run)
pick() { local v=$1; shift; shift $((RANDOM % $#)); printf -v "$v" '%s' "$1"; }
bytes_of() { # 16M -> 16777216
	case $1 in
	*K) echo $((${1%K} << 10)) ;; *M) echo $((${1%M} << 20)) ;; *G) echo $((${1%G} << 30)) ;;
	*) echo "$1" ;;
	esac
}

# low_port: a free port below the ephemeral range (32768-60999), so that no
# connection elsewhere on the machine takes it between two sinks.
low_port() {
	python3 -c 'import random, socket
for _ in range(200):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'
}

# A lane is a background subshell with its own list of children, killed when
# it ends (the cleanup trap TERMs the lanes; `wait` lets the trap run at once).
lane() {
	(
		LANE_PIDS=""
		trap lane_cleanup EXIT
		trap 'exit 143' TERM
		trap 'exit 130' INT
		"$@"
		mark "$LANE_DIR" "lane $1 ended"
	) 2>>"$LANE_ERR" &
	track $!
	LANES="$LANES $!"
}
lane_cleanup() {
	local p
	for p in $LANE_PIDS; do kill -TERM "$p" 2>/dev/null; done
	for p in $LANE_PIDS; do wait_pid "$p" 3; done
}
# spawn VAR CMD...: CMD in the lane's background; VAR = its pid.
spawn() {
	local v=$1
	shift
	"$@" &
	printf -v "$v" '%s' $!
	LANE_PIDS="$LANE_PIDS $!"
}
# reap PID [SECONDS]: wait for a spawned PID (KILL after SECONDS, default 
# 180), forget it, return its status.
reap() {
	local rc p keep=""
	wait_pid "$1" "${2:-180}"
	rc=$?
	for p in $LANE_PIDS; do [ "$p" = "$1" ] || keep="$keep $p"; done
	LANE_PIDS=$keep
	return "$rc"
}
# run CMD...: run CMD, interruptibly; its status.
run() {
	local p
	spawn p "$@"
	reap "$p"
}
# put FILE LINE: append one result line (lanes write concurrently: one
# short write each).
put() { printf '%s\n' "$2" >>"$1"; }
# keep_fail DIR NAME FILES...: copy a failed round's logs aside.
keep_fail() {
	local d=$1 n=$2
	shift 2
	mkdir -p "$d/failed"
	for f in "$@"; do [ -f "$f" ] && cp "$f" "$d/failed/$n.$(basename "$f")"; done
}

# ------------------------------------------------------------ lanes

# lane_stream PROXY_PORT SINK_PORT END DIR: verified rounds through A.
lane_stream() {
	local port=$1 up=$2 end=$3 d=$4 n=0 conns bytes ws spid rc src_rc sink_rc intact dups got why tries
	RANDOM=$((SEED * 7 + 1))
	while [ "$(now)" -lt "$end" ] && [ "$n" -lt 100000 ]; do
		n=$((n + 1))
		pick conns 1 4 16 64; pick bytes 256K 1M 4M 16M 64M; pick ws 1K 16K 64K
		tries=0
		while :; do
			spawn spid timeout 300 "$SHEAF" sink --listen "127.0.0.1:$up" --verify \
				--conns "$conns" --json >"$d/a.sink.out" 2>"$d/a.sink.err"
			wait_port "$d/a.sink.err" "$spid" >/dev/null && break
			reap "$spid" 1
			tries=$((tries + 1))
			if [ "$tries" -ge 5 ]; then
				put "$d/results" "setup FAIL stream sink on port $up: $(one_line "$d/a.sink.err")"
				return
			fi
			sleep 1
		done
		run timeout 120 "$SHEAF" source --connect "127.0.0.1:$port" --conns "$conns" \
			--bytes "$bytes" --write-size "$ws" --verify --json >"$d/a.src.out" 2>"$d/a.src.err"
		src_rc=$?
		reap "$spid" 30
		sink_rc=$?
		intact=$(json_num "$d/a.sink.out" intact) dups=$(json_num "$d/a.sink.out" duplicates)
		got=$(json_num "$d/a.sink.out" bytes)
		why=""
		[ "$src_rc" -eq 0 ] || why="$why source rc=$src_rc $(one_line "$d/a.src.err")"
		[ "$sink_rc" -eq 0 ] || why="$why sink rc=$sink_rc $(one_line "$d/a.sink.err")"
		[ "${intact:-x}" = "$conns" ] && [ "${dups:-x}" = 0 ] ||
			why="$why sink: $(one_line "$d/a.sink.out")"
		if [ -z "$why" ]; then
			put "$d/results" "stream ok streams=$conns bytes=$got"
		else
			keep_fail "$d" "a$n" "$d"/a.*
			put "$d/results" "stream FAIL streams=$conns bytes=$(bytes_of "$bytes") round $n ($conns x $bytes, write $ws):$why"
		fi
	done
}

# lane_echo PROXY_PORT END DIR: echo and request/response rounds through B.
lane_echo() {
	local port=$1 end=$2 d=$3 n=0 kind conns bytes size rc txns
	RANDOM=$((SEED * 7 + 2))
	while [ "$(now)" -lt "$end" ] && [ "$n" -lt 100000 ]; do
		n=$((n + 1))
		kind=echo; pick conns 1 4 16
		[ $((n % 3)) -eq 0 ] && kind=rr
		if [ "$kind" = echo ]; then
			pick bytes 256K 1M 4M 16M
			run timeout 120 "$SHEAF" source --connect "127.0.0.1:$port" --conns "$conns" \
				--bytes "$bytes" --verify --echo --json >"$d/b.src.out" 2>"$d/b.src.err"
			rc=$?
			bytes=$(bytes_of "$bytes")
		else
			pick size 1 64 1K 16K 64K
			bytes=$(( $(bytes_of "$size") * conns * 200 ))
			[ "$bytes" -le 8388608 ] || bytes=8388608
			run timeout 120 "$SHEAF" source --connect "127.0.0.1:$port" --rr "$size" \
				--conns "$conns" --bytes "$bytes" --duration 3 --json \
				>"$d/b.src.out" 2>"$d/b.src.err"
			rc=$?
			txns=$(json_num "$d/b.src.out" transactions)
			bytes=$(( ${txns:-0} * $(bytes_of "$size") ))
		fi
		if [ "$rc" -eq 0 ] && grep -q '"ok":true' "$d/b.src.out"; then
			put "$d/results" "$kind ok streams=$conns bytes=$bytes"
		else
			keep_fail "$d" "b$n" "$d"/b.*
			put "$d/results" "$kind FAIL streams=$conns bytes=$bytes round $n: rc=$rc $(one_line "$d/b.src.err") $(one_line "$d/b.src.out")"
		fi
	done
}

# d_sink PORT DIR VAR: start the restartable upstream of D; 1 if it does not
# listen within 5 tries.
d_sink() {
	local t=0 pid
	while [ "$t" -lt 5 ]; do
		spawn pid "$SHEAF" sink --listen "127.0.0.1:$1" --echo >/dev/null 2>"$2/d.sink.err"
		if wait_port "$2/d.sink.err" "$pid" >/dev/null; then
			printf -v "$3" '%s' "$pid"
			return 0
		fi
		reap "$pid" 1
		t=$((t + 1))
		sleep 0.5
	done
	return 1
}

# lane_restart_ctl SINK_PORT END DIR: D's upstream: down for the first 3 s,
# then killed and restarted over and over; DIR/d.state says "GEN up|down".
lane_restart_ctl() {
	local up=$1 end=$2 d=$3 gen=0 restarts=0 spid i=0 sl
	RANDOM=$((SEED * 7 + 3))
	[ "$CLEAN" = yes ] || sleep 3
	d_sink "$up" "$d" spid || { put "$d/results" "setup FAIL restart: sink on port $up: $(one_line "$d/d.sink.err")"; return; }
	gen=1
	echo "$gen up" >"$d/d.state.tmp" && mv "$d/d.state.tmp" "$d/d.state"
	mark "$d" "restartable upstream $gen up"
	while :; do
		pick sl 2 3 4 5
		# one restart at least; the last generation stays up for 4 s
		[ "$restarts" -eq 0 ] && sl=2
		[ "$CLEAN" != yes ] || break
		[ "$restarts" -eq 0 ] || [ $(( $(now) + sl + 5 )) -lt "$end" ] || break
		sleep "$sl"
		echo "$gen down" >"$d/d.state.tmp" && mv "$d/d.state.tmp" "$d/d.state"
		kill -KILL "$spid" 2>/dev/null
		mark "$d" "restartable upstream $gen killed"
		reap "$spid" 5
		pick sl 2 5 9
		sleep "0.$sl"
		d_sink "$up" "$d" spid || { put "$d/results" "setup FAIL restart: sink on port $up did not come back: $(one_line "$d/d.sink.err")"; return; }
		gen=$((gen + 1)) restarts=$((restarts + 1))
		echo "$gen up" >"$d/d.state.tmp" && mv "$d/d.state.tmp" "$d/d.state"
		mark "$d" "restartable upstream $gen up"
	done
	put "$d/results" "restarts $restarts"
	touch "$d/d.ctl.done"
	# keep the last one up until the rounds are over
	while { [ ! -e "$d/d.rounds.done" ] || [ ! -e "$d/e.rounds.done" ]; } && [ "$i" -lt 1800 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

# lane_restart_rounds PROXY_PORT END DIR: verified echo rounds through D.
lane_restart_rounds() {
	local port=$1 end=$2 d=$3 n=0 s0 s1 conns bytes rc okgen=""
	RANDOM=$((SEED * 7 + 4))
	while [ "$n" -lt 100000 ]; do
		if [ "$(now)" -ge "$end" ]; then
			# past the end: on until a round verified in the last
			# generation (15 s at most)
			s0=$(cat "$d/d.state")
			[ -e "$d/d.ctl.done" ] && [ "$okgen" = "${s0% *}" ] && break
			[ "$(now)" -lt $((end + 15)) ] || break
		fi
		n=$((n + 1))
		pick conns 1 2 4; pick bytes 1M 4M 8M
		s0=$(cat "$d/d.state")
		run timeout 60 "$SHEAF" source --connect "127.0.0.1:$port" --conns "$conns" \
			--bytes "$bytes" --verify --echo --json >"$d/r.src.out" 2>"$d/r.src.err"
		rc=$?
		s1=$(cat "$d/d.state")
		if [ "$s0" != "$s1" ] || [ "${s0#* }" != up ]; then
			put "$d/results" "restart faulted streams=$conns rc=$rc state=$s0..$s1"
			[ "$rc" -eq 0 ] || sleep 0.2
		elif [ "$rc" -eq 0 ] && grep -q '"ok":true' "$d/r.src.out"; then
			put "$d/results" "restart ok streams=$conns bytes=$(bytes_of "$bytes") gen=${s0% *}"
			okgen=${s0% *}
		else
			keep_fail "$d" "r$n" "$d"/r.*
			put "$d/results" "restart FAIL streams=$conns bytes=$(bytes_of "$bytes") round $n (upstream up, generation ${s0% *}): rc=$rc $(one_line "$d/r.src.err")"
		fi
	done
	touch "$d/d.rounds.done"
}

# taken_back LOG PORT: true when the proxy's last word in LOG on its
# upstream 127.0.0.1:PORT is that it is up.
taken_back() {
	local last
	last=$(grep "upstream 127.0.0.1:$2 " "$1" | tail -n1)
	case $last in *" up") return 0 ;; esac
	return 1
}

# lane_failover_rounds PROXY_PORT END DIR PROXY_ERR UP_PORT: verified echo
# rounds through E, whose second upstream stays up: a round during which
# D's upstream (E's first) neither went down nor came back must verify, also
# while it is down.  Past END, on until E took that upstream back after its
# last restart (20 s at most).
lane_failover_rounds() {
	local port=$1 end=$2 d=$3 log=$4 up=$5 n=0 s0 s1 conns bytes rc
	RANDOM=$((SEED * 7 + 5))
	while [ "$n" -lt 100000 ]; do
		if [ "$(now)" -ge "$end" ]; then
			[ -e "$d/d.ctl.done" ] && { [ "$CLEAN" = yes ] || taken_back "$log" "$up"; } && break
			[ "$(now)" -lt $((end + 20)) ] || break
		fi
		n=$((n + 1))
		pick conns 1 2 4; pick bytes 64K 256K 1M 4M
		# the first round small, to fit into the first upstream's first 3 s down
		[ "$n" -gt 1 ] || conns=1 bytes=64K
		s0=$(cat "$d/d.state")
		run timeout 60 "$SHEAF" source --connect "127.0.0.1:$port" --conns "$conns" \
			--bytes "$bytes" --verify --echo --json >"$d/e.src.out" 2>"$d/e.src.err"
		rc=$?
		s1=$(cat "$d/d.state")
		if [ "$s0" != "$s1" ]; then
			put "$d/results" "failover faulted streams=$conns rc=$rc state=$s0..$s1"
		elif [ "$rc" -eq 0 ] && grep -q '"ok":true' "$d/e.src.out"; then
			put "$d/results" "failover ok streams=$conns bytes=$(bytes_of "$bytes") first=${s0#* }"
		else
			keep_fail "$d" "e$n" "$d"/e.*
			put "$d/results" "failover FAIL streams=$conns bytes=$(bytes_of "$bytes") round $n (first upstream ${s0#* } throughout, generation ${s0% *}): rc=$rc $(one_line "$d/e.src.err")"
		fi
	done
	touch "$d/e.rounds.done"
}

# lane_rss END DIR NAME=PID...: every proxy's VmRSS (KiB) every 5 s, one
# line per sample in DIR/rss (for the logs; the check reads its own).
lane_rss() {
	local end=$1 d=$2 x line
	shift 2
	while [ "$(now)" -lt "$end" ]; do
		line="$(date +%T)"
		for x in "$@"; do line="$line ${x%%=*}=$(rss_kib "${x#*=}")"; done
		echo "$line" >>"$d/rss"
		sleep 5
	done
}

# lane_hup END DIR PIDS...: SIGHUP every 3 s.
lane_hup() {
	local end=$1 d=$2 n=0 p
	shift 2
	while [ $(( $(now) + 3 )) -lt "$end" ]; do
		sleep 3
		for p in "$@"; do kill -HUP "$p" 2>/dev/null && n=$((n + 1)); done
	done
	put "$d/results" "hup $n"
}

# ------------------------------------------------------------ one mode

# start_px NAME ARGS...: a proxy for this mode; sets PX_<NAME>_{PID,PORT,OUT,ERR,FD0,RSS0}.
start_px() {
	local name=$1
	shift
	start_proxy --listen 127.0.0.1:0 --io "$MODE" "$@" || return 1
	sleep 0.2
	printf -v "PX_${name}_PID" '%s' "$PROXY_PID"
	printf -v "PX_${name}_PORT" '%s' "$PROXY_PORT"
	printf -v "PX_${name}_OUT" '%s' "$PROXY_OUT"
	printf -v "PX_${name}_ERR" '%s' "$PROXY_ERR"
	printf -v "PX_${name}_FD0" '%s' "$(nfds "$PROXY_PID")"
	printf -v "PX_${name}_RSS0" '%s' "$(rss_kib "$PROXY_PID")"
}

# sum_results FILE KIND FIELD [STATUS]: sum of FIELD=N over KIND lines.
sum_results() {
	awk -v k="$2" -v f="$3" -v st="${4:-ok}" '$1 == k && $2 == st {
		for (i = 3; i <= NF; i++) if (index($i, f "=") == 1) s += substr($i, length(f) + 2) }
		END { printf "%d\n", s }' "$1"
}
count_lines() { grep -c "$2" "$1" 2>/dev/null || true; }

MODE_OK=0 MODE_FAIL=0 MODE_SKIP=0
T_STREAMS=0 T_VSTREAMS=0 T_VBYTES=0 T_LOST=0 T_RESETS=0 T_STALLS=0 T_URESETS=0 T_RESTARTS=0 T_HUPS=0
T_PROXIES=0 T_POOL_OK=0 T_EXIT_OK=0 T_RSS0=0 T_RSS1=0 WORST_GROWTH=-1 WORST_NAME="" SENDS=""

soak_mode() {
	MODE=$1
	local d="$E2E_TMP/$MODE" end why="" name pid rc i k
	mkdir -p "$d"
	: >"$d/results"
	LANES="" LANE_ERR="$d/lanes.err" LANE_DIR=$d
	mark "$d" "mode started"

	# upstreams
	start_sink --listen 127.0.0.1:0 --echo || { echo "FAIL soak: $MODE: echo sink did not start: $(one_line "$SINK_ERR")"; return 1; }
	local bsink=$SINK_PID bport=$SINK_PORT
	# E's steady upstream: a sink of its own (B's stalled clients pin the
	# pool of B's sink for seconds at a time)
	start_sink --listen 127.0.0.1:0 --echo || { echo "FAIL soak: $MODE: echo sink did not start: $(one_line "$SINK_ERR")"; return 1; }
	local esink=$SINK_PID eport=$SINK_PORT
	start_server readclose --read-first 64K --close reset ||
		{ echo "FAIL soak: $MODE: readclose server did not start"; return 1; }
	local rc_pid=$SERVER_PID rc_port=$SERVER_PORT rc_out=$SERVER_OUT
	start_server blackhole || { echo "FAIL soak: $MODE: blackhole server did not start"; return 1; }
	local bh_pid=$SERVER_PID bh_port=$SERVER_PORT bh_out=$SERVER_OUT
	local aport dport
	aport=$(low_port) dport=$(low_port)
	[ -n "$aport" ] && [ -n "$dport" ] && [ "$aport" != "$dport" ] ||
		{ echo "FAIL soak: $MODE: no free port below 32768"; return 1; }
	echo "0 down" >"$d/d.state"

	mark "$d" "servers started"
	# proxies (D and A start with their upstream down)
	local names="A B C D E"
	if ! start_px A --upstream "127.0.0.1:$aport" $A_ARGS; then
		if mode_unavailable; then
			echo "skip soak: $MODE: $(one_line "$PROXY_ERR")"
			MODE_SKIP=$((MODE_SKIP + 1))
			return 0
		fi
		echo "FAIL soak: $MODE: proxy A did not start: $(one_line "$PROXY_ERR")"
		return 1
	fi
	start_px B --upstream "127.0.0.1:$bport" $B_ARGS || { echo "FAIL soak: $MODE: proxy B did not start: $(one_line "$PROXY_ERR")"; return 1; }
	start_px C --upstream "127.0.0.1:$rc_port" --upstream "127.0.0.1:$bh_port" $C_ARGS || { echo "FAIL soak: $MODE: proxy C did not start: $(one_line "$PROXY_ERR")"; return 1; }
	start_px D --upstream "127.0.0.1:$dport" $D_ARGS ||
		{ echo "FAIL soak: $MODE: proxy D did not start: $(one_line "$PROXY_ERR")"; return 1; }
	start_px E --upstream "127.0.0.1:$dport" --upstream "127.0.0.1:$eport" $E_ARGS ||
		{ echo "FAIL soak: $MODE: proxy E did not start: $(one_line "$PROXY_ERR")"; return 1; }

	end=$(( $(now) + PER_MODE ))
	lane lane_stream "$PX_A_PORT" "$aport" "$end" "$d"
	lane lane_echo "$PX_B_PORT" "$end" "$d"
	lane lane_restart_ctl "$dport" "$end" "$d"
	lane lane_restart_rounds "$PX_D_PORT" "$end" "$d"
	lane lane_failover_rounds "$PX_E_PORT" "$end" "$d" "$PX_E_ERR" "$dport"
	lane lane_rss "$end" "$d" "A=$PX_A_PID" "B=$PX_B_PID" "C=$PX_C_PID" "D=$PX_D_PID" "E=$PX_E_PID"
	[ "$HUP" = yes ] && lane lane_hup "$end" "$d" "$PX_A_PID" "$PX_B_PID" "$PX_C_PID" "$PX_D_PID" "$PX_E_PID"
	local py=()
	[ "$CLEAN" = yes ] || {
	timeout $((PER_MODE + 60)) "$PY" "$FAULTS_PY" resets --port "$PX_B_PORT" \
		--seconds "$PER_MODE" --min 1 --max 256K --seed "$SEED" >"$d/resets.out" 2>&1 &
	py+=($!); track $!
	timeout $((PER_MODE + 60)) "$PY" "$FAULTS_PY" stall --port "$PX_B_PORT" \
		--seconds "$PER_MODE" --conns 8 --min 64K --max 4M --hold 12 --seed "$SEED" \
		>"$d/stall.out" 2>&1 &
	py+=($!); track $!
	timeout $((PER_MODE + 60)) "$PY" "$FAULTS_PY" upstream --port "$PX_C_PORT" \
		--seconds "$PER_MODE" --conns 3 --min 16K --max 256K --hold 10 --seed "$SEED" \
		>"$d/upstream.out" 2>&1 &
	py+=($!); track $!
	}

	mark "$d" "lanes started"
	# RSS at start: after the warm-up
	sleep "$WARMUP"
	for name in $names; do
		pid=PX_${name}_PID
		printf -v "PX_${name}_RSS1" '%s' "$(rss_kib "${!pid}")"
	done

	# wait for every lane and client (each round is bounded)
	for pid in $LANES "${py[@]}"; do
		wait_pid "$pid" $((PER_MODE + 240))
		rc=$?
		untrack "$pid"
		mark "$d" "reaped $pid"
		[ "$rc" -eq 124 ] && why="$why; a lane or client did not end (killed)"
	done
	for name in $names; do
		pid=PX_${name}_PID e=PX_${name}_ERR
		alive "${!pid}" || why="$why; proxy $name died during the run: $(one_line "${!e}")"
	done

	mark "$d" "lanes ended"
	# quiesce: every proxy's descriptors back to their count at start (15 s)
	for name in $names; do
		local p0=PX_${name}_PID f0=PX_${name}_FD0 n=0
		i=0
		while [ "$i" -lt 150 ]; do
			n=$(nfds "${!p0}")
			[ "$n" = "${!f0}" ] && break
			sleep 0.1
			i=$((i + 1))
		done
		[ "$n" = "${!f0}" ] || why="$why; proxy $name has $n descriptors after the run, ${!f0} at start"
		printf -v "PX_${name}_RSS2" '%s' "$(rss_kib "${!p0}")"
	done

	mark "$d" "quiet"
	# stop: exit 0, pool balanced, RSS, sends
	local sends_all=0 out_all=0 rss_note=""
	for name in $names; do
		local vp=PX_${name}_PID vo=PX_${name}_OUT ve=PX_${name}_ERR
		local r0=PX_${name}_RSS0 r1=PX_${name}_RSS1 r2=PX_${name}_RSS2
		halt "${!vp}" 10
		rc=$?
		mark "$d" "proxy $name stopped"
		T_PROXIES=$((T_PROXIES + 1))
		if [ "$rc" -eq 0 ]; then T_EXIT_OK=$((T_EXIT_OK + 1)); else why="$why; proxy $name exit $rc: $(one_line "${!ve}")"; fi
		if pool=$(pool_balanced "${!vo}"); then T_POOL_OK=$((T_POOL_OK + 1)); else why="$why; proxy $name pool free/bufs $pool"; fi
		local sq bo acc con rb ss
		sq=$(proxy_stat "${!vo}" send_sqes) bo=$(proxy_stat "${!vo}" bytes_out)
		acc=$(proxy_stat "${!vo}" accepted) con=$(proxy_stat "${!vo}" connects)
		rb=$(proxy_stat "${!vo}" recv_bufs) ss=$(proxy_stat "${!vo}" send_short)
		sends_all=$((sends_all + ${sq:-0})) out_all=$((out_all + ${bo:-0}))
		# a send carries at least one received buffer, or the rest of a
		# short one: more sends than that (with slack) are a spin
		if [ -n "$sq" ] && [ "$sq" -gt $(( ${rb:-0} + 2 * ${ss:-0} + 8 * (${acc:-0} + ${con:-0}) + 1000 )) ]; then
			why="$why; proxy $name: $sq sends for $rb buffers received, $ss short sends: a send spin?"
		fi
		if [ -n "${!r1}" ] && [ -n "${!r2}" ]; then
			T_RSS0=$((T_RSS0 + ${!r1})) T_RSS1=$((T_RSS1 + ${!r2}))
			[ "${!r2}" -le $(( ${!r1} * 3 / 2 + 8192 )) ] ||
				why="$why; proxy $name RSS grew from ${!r1} to ${!r2} KiB"
			if [ $(( ${!r2} - ${!r1} )) -gt "$WORST_GROWTH" ]; then
				WORST_GROWTH=$(( ${!r2} - ${!r1} )) WORST_NAME="$MODE/$name ${!r1}->${!r2} KiB"
			fi
			rss_note="$rss_note $name ${!r0}/${!r1}->${!r2}"
		else
			why="$why; proxy $name: no RSS reading"
		fi
	done
	halt "$bsink" 5
	halt "$esink" 5
	halt "$rc_pid" 5
	halt "$bh_pid" 5
	mark "$d" "servers stopped"

	mark "$d" "stopped"
	# results
	local res="$d/results" streams vstreams vbytes lost resets stalls uresets restarts hups
	local sfail hung held slow bad
	streams=0 vstreams=0 vbytes=0 lost=0
	for k in stream echo rr restart failover; do
		streams=$((streams + $(sum_results "$res" $k streams ok) + $(sum_results "$res" $k streams FAIL) + $(sum_results "$res" $k streams faulted)))
		vstreams=$((vstreams + $(sum_results "$res" $k streams ok)))
		vbytes=$((vbytes + $(sum_results "$res" $k bytes ok)))
		lost=$((lost + $(sum_results "$res" $k bytes FAIL)))
	done
	sfail=$(grep -E '^[a-z]+ FAIL' "$res" | head -n 3)
	[ -z "$sfail" ] || why="$why; $(printf '%s' "$sfail" | tr '\n' ';' | cut -c1-600)"
	[ "$(sum_results "$res" stream streams ok)" -gt 0 ] || why="$why; no verified stream round completed"
	[ "$(sum_results "$res" echo streams ok)" -gt 0 ] || why="$why; no echo stream round completed"
	[ "$(sum_results "$res" rr streams ok)" -gt 0 ] || why="$why; no request/response round completed"
	# the fault clients' own checks (a clean run has none)
	if [ "$CLEAN" != yes ]; then
	resets=$(sed -n 's/^resets: sent=\([0-9]*\).*/\1/p' "$d/resets.out")
	[ -n "$resets" ] || why="$why; reset client: $(one_line "$d/resets.out")"
	stalls=$(sed -n 's/^stall: stalls=\([0-9]*\).*/\1/p' "$d/stall.out")
	held=$(sed -n 's/^stall: .* held=\([0-9]*\).*/\1/p' "$d/stall.out")
	[ -n "$stalls" ] || why="$why; stall client: $(one_line "$d/stall.out")"
	[ "${held:-0}" = 0 ] || why="$why; $held stalled clients left open by B, nothing moved for 12 s (--idle-timeout 5000): $(grep -m2 'held:' "$d/stall.out" | tr '\n' ' ')"
	slow=$(sed -n 's/^stall: .* slow=\([0-9]*\).*/\1/p' "$d/stall.out")
	hung=$(sed -n 's/^upstream: .* hung=\([0-9]*\).*/\1/p' "$d/upstream.out")
	[ -n "$hung" ] || why="$why; upstream client: $(one_line "$d/upstream.out")"
	[ "${hung:-0}" = 0 ] || why="$why; $hung uploads through C still open after 10 s (--idle-timeout 2000)"
	fi
	uresets=$(count_lines "$rc_out" 'closed (reset)')
	local bh_held
	bh_held=$(count_lines "$bh_out" ' held$')
	stalls=$(( ${stalls:-0} + bh_held ))
	bad=$(grep -m3 BAD "$rc_out" | tr '\n' ';')
	[ -z "$bad" ] || why="$why; readclose server: $bad"
	restarts=$(sed -n 's/^restarts \([0-9]*\)/\1/p' "$res")
	[ "${restarts:-0}" -ge 1 ] || [ "$CLEAN" = yes ] || why="$why; upstream of D never restarted"
	# recovery: a good round in the last generation, and the proxy started
	# with D's upstream down (faulted rounds before generation 1)
	local lastgen
	lastgen=$(( ${restarts:-0} + 1 ))
	grep -q "^restart ok .* gen=$lastgen\$" "$res" || why="$why; D: no verified round after the last restart (generation $lastgen)"
	grep -q 'state=0 down' "$res" || [ "$CLEAN" = yes ] || why="$why; D: no round while its upstream was still down at start"
	# failover: connects to E's first upstream failed (it was down when E
	# started) and yet no client was closed for want of an upstream: each
	# went on to the second; and E took the first back after its last
	# restart.  Rounds that ran entirely while it was down are counted, and
	# required in runs of 300 s or more.
	local fo_down e_failed e_noup
	fo_down=$(grep -c '^failover ok .* first=down$' "$res")
	e_failed=$(proxy_stat "$PX_E_OUT" connect_failed) e_noup=$(proxy_stat "$PX_E_OUT" no_upstream)
	[ "${e_failed:-0}" -gt 0 ] || [ "$CLEAN" = yes ] || why="$why; E: no connect to its first upstream failed (connect_failed=${e_failed:-?})"
	[ "${e_noup:-x}" = 0 ] || why="$why; E: $e_noup clients closed for want of an upstream, with its second one up"
	# (timing: the down windows are a few seconds; a short run on loaded
	# cores may have none that fits a round, so only the long soak insists)
	[ "$fo_down" -gt 0 ] || [ "${SOAK_SECONDS:-600}" -lt 300 ] || [ "$CLEAN" = yes ] ||
		why="$why; E: no verified round while its first upstream was down"
	[ "$CLEAN" = yes ] || taken_back "$PX_E_ERR" "$dport" ||
		why="$why; E: after the last restart, its first upstream was not taken back (last: $(grep "upstream 127.0.0.1:$dport " "$PX_E_ERR" | tail -n1))"
	hups=$(sed -n 's/^hup \([0-9]*\)/\1/p' "$res")
	grep -q '^setup FAIL' "$res" && why="$why; $(grep -m1 '^setup FAIL' "$res")"

	T_STREAMS=$((T_STREAMS + streams)) T_VSTREAMS=$((T_VSTREAMS + vstreams))
	T_VBYTES=$((T_VBYTES + vbytes)) T_LOST=$((T_LOST + lost))
	T_RESETS=$((T_RESETS + ${resets:-0})) T_STALLS=$((T_STALLS + stalls))
	T_URESETS=$((T_URESETS + uresets)) T_RESTARTS=$((T_RESTARTS + ${restarts:-0}))
	T_HUPS=$((T_HUPS + ${hups:-0}))
	local spg
	spg=$(awk -v s="$sends_all" -v b="$out_all" 'BEGIN { printf "%.0f", b ? s / (b / 1073741824) : 0 }')
	SENDS="$SENDS $MODE=$spg"
	local desc
	desc="$MODE ${PER_MODE} s: $streams streams ($vstreams verified, $(awk -v b="$vbytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB), lost $lost B; faults: ${resets:-0} client resets, $stalls stalls, $uresets upstream resets, ${restarts:-0} restarts, ${hups:-skipped} SIGHUP, ${slow:-0} of the stalls still moving after 24 s; E: ${e_failed:-?} failovers, $fo_down rounds while its first upstream was down; sends/GiB $spg; RSS KiB listen/start->end$rss_note"
	mark "$d" "results read"
	if [ -z "$why" ]; then
		echo "ok soak: $desc"
		MODE_OK=$((MODE_OK + 1))
	else
		echo "FAIL soak: $desc${why/#;/:}"
		MODE_FAIL=$((MODE_FAIL + 1))
		E2E_KEEP=1
	fi
}

[ "$HUP" = yes ] || [ -n "${SOAK_HUP:-}" ] || [ "$CLEAN" = yes ] ||
	echo "soak: SIGHUP skipped: $SHEAF proxy --help does not mention SIGHUP (it would kill the proxy)"
for m in $MODES; do
	soak_mode "$m" || { MODE_FAIL=$((MODE_FAIL + 1)); E2E_KEEP=1; }
done

hup_txt=$T_HUPS
[ "$HUP" = yes ] || hup_txt="skipped"
verdict=PASS
[ "$MODE_FAIL" -eq 0 ] && [ "$MODE_OK" -gt 0 ] || verdict=FAIL
echo "soak$([ "$CLEAN" = yes ] && echo " (clean: no faults)"): $SECONDS_TOTAL s over $MODES (seed $SEED): $T_STREAMS streams, $T_VSTREAMS verified," \
	"$(awk -v b="$T_VBYTES" 'BEGIN { printf "%.2f", b / 1073741824 }') GiB verified;" \
	"faults $((T_RESETS + T_STALLS + T_URESETS + T_RESTARTS + T_HUPS))" \
	"($T_RESETS client resets, $T_STALLS stalls, $T_URESETS upstream resets, $T_RESTARTS upstream restarts, SIGHUP $hup_txt);" \
	"lost/corrupted $T_LOST B; proxy RSS $((T_RSS0 / 1024))->$((T_RSS1 / 1024)) MiB over $T_PROXIES proxies" \
	"(largest growth: ${WORST_NAME:-none});" \
	"sends/GiB$SENDS; pools balanced $T_POOL_OK/$T_PROXIES, exit 0 $T_EXIT_OK/$T_PROXIES;" \
	"modes ok $MODE_OK, failed $MODE_FAIL, skipped $MODE_SKIP: $verdict"
[ "$verdict" = PASS ]
