# Shared helpers for the end-to-end tests (bash; sourced, not run).
#
#   . "$(dirname "$0")/lib.sh"
#
# Sets: REPO_ROOT, SHEAF (binary; env SHEAF, default build/sheaf under the
# repo root), E2E_TMP (scratch directory, removed on exit).
# Every background process started through these helpers is recorded and
# killed by the EXIT trap.  Tests exit 0 pass, 1 fail, 77 skip.

E2E_NAME=$(basename "$0" .sh)
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

case "${SHEAF:-}" in
"") SHEAF="$REPO_ROOT/build/sheaf" ;;
/*) ;;
*) if [ -x "$SHEAF" ]; then SHEAF="$(pwd)/$SHEAF"; else SHEAF="$REPO_ROOT/$SHEAF"; fi ;;
esac

E2E_PIDS=""
E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sheaf-e2e-$E2E_NAME.XXXXXX") || exit 1
E2E_SEQ=0

say() { printf '%s\n' "$*"; }
# fail MSG: print the reason and exit 1 (the EXIT trap cleans up).
fail() { printf 'FAIL %s: %s\n' "$E2E_NAME" "$*" >&2; exit 1; }
skip() { printf 'SKIP %s: %s\n' "$E2E_NAME" "$*" >&2; exit 77; }

# track PID: remember a background process for the cleanup trap.
track() { E2E_PIDS="$E2E_PIDS $1"; }

# alive PID: true while PID runs (and is not a zombie we already reaped).
alive() { kill -0 "$1" 2>/dev/null; }

# wait_pid PID [SECONDS]: wait at most SECONDS (default 10) for PID to exit;
# its exit status is returned, or 124 after killing it on timeout.
wait_pid() {
	local pid=$1 limit=$(( ${2:-10} * 10 )) i=0
	while alive "$pid" && [ "$i" -lt "$limit" ]; do
		# a finished child stays "alive" to kill -0 only until reaped;
		# a zombie is not running, so check /proc state too
		if [ -r "/proc/$pid/stat" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	if [ "$i" -ge "$limit" ] && alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return 124
	fi
	wait "$pid" 2>/dev/null
}

# stop PID [SECONDS]: SIGTERM then wait_pid (returns PID's exit status).
stop() {
	kill -TERM "$1" 2>/dev/null
	wait_pid "$1" "${2:-10}"
}

cleanup() {
	local p
	for p in $E2E_PIDS; do
		alive "$p" && kill -TERM "$p" 2>/dev/null
	done
	for p in $E2E_PIDS; do
		local i=0
		while alive "$p" && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
		alive "$p" && kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	if [ -n "${E2E_KEEP:-}" ]; then
		echo "kept $E2E_TMP" >&2
	else
		rm -rf "$E2E_TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_port FILE [PID]: poll up to 5 s for a "listening on HOST:PORT" line in
# FILE (HOST: IPv4 or [IPv6]) and print PORT.  Returns 1 on timeout or when PID
# died first.
wait_port() {
	local file=$1 pid=${2:-} i=0 port
	while [ "$i" -lt 50 ]; do
		port=$(sed -n 's/.*listening on \(\[[0-9a-fA-F:.]*\]\|[0-9.]*\):\([0-9][0-9]*\).*/\2/p' \
			"$file" 2>/dev/null | head -n1)
		if [ "$port" = 0 ]; then
			echo "wait_port: $file names port 0, not the bound port (stale binary?)" >&2
			return 1
		fi
		if [ -n "$port" ]; then
			printf '%s\n' "$port"
			return 0
		fi
		if [ -n "$pid" ] && ! alive "$pid"; then
			return 1
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# start_role VAR CMD LINEFILE ARGS...: run `sheaf CMD ARGS` in the background
# and wait for its "listening on" line (LINEFILE: out or err). Sets VAR_PID,
# VAR_PORT, VAR_OUT (stdout file), VAR_ERR (stderr file); returns 1 when it
# did not start listening.
start_role() {
	local var=$1 cmd=$2 which=$3 out err pid port
	shift 3
	E2E_SEQ=$((E2E_SEQ + 1))
	out="$E2E_TMP/$cmd.$E2E_SEQ.out"
	err="$E2E_TMP/$cmd.$E2E_SEQ.err"
	"$SHEAF" "$cmd" "$@" >"$out" 2>"$err" &
	pid=$!
	track "$pid"
	printf -v "${var}_PID" '%s' "$pid"
	printf -v "${var}_OUT" '%s' "$out"
	printf -v "${var}_ERR" '%s' "$err"
	[ "$which" = out ] && which=$out || which=$err
	port=$(wait_port "$which" "$pid") || port=""
	printf -v "${var}_PORT" '%s' "$port"
	[ -n "$port" ]
}

# start_sink ARGS... / start_proxy ARGS...: SINK_* / PROXY_* as above.
start_sink() { start_role SINK sink err "$@"; }
start_proxy() { start_role PROXY proxy out "$@"; }

# pool_balanced FILE: true when FILE has a "sheaf proxy: stats" line whose
# "pool_free" equals "pool_bufs".  Prints "free/bufs" (or "no stats").
pool_balanced() {
	local line free bufs
	line=$(grep 'sheaf proxy: stats' "$1" 2>/dev/null | tail -n1)
	free=$(printf '%s' "$line" | sed -n 's/.*"pool_free":\([0-9][0-9]*\).*/\1/p')
	bufs=$(printf '%s' "$line" | sed -n 's/.*"pool_bufs":\([0-9][0-9]*\).*/\1/p')
	if [ -z "$free" ] || [ -z "$bufs" ]; then
		printf 'no stats\n'
		return 1
	fi
	printf '%s/%s\n' "$free" "$bufs"
	[ "$free" = "$bufs" ]
}

# one_line FILE: the file's content squeezed to one short line for reports.
one_line() { tr '\n' ' ' <"$1" 2>/dev/null | cut -c1-300; }

require_sheaf() {
	[ -x "$SHEAF" ] || skip "no sheaf binary at $SHEAF (run make)"
}

# start_server KIND ARGS...: run `servers.py KIND ARGS` (test peers, see
# servers.py) in the background and wait (10 s) for its port file. Sets
# SERVER_PID, SERVER_PORT, SERVER_OUT (its per-connection log); returns 1
# when it did not start listening.
start_server() {
	local kind=$1 pf out pid i=0
	shift
	E2E_SEQ=$((E2E_SEQ + 1))
	pf="$E2E_TMP/server.$E2E_SEQ.port"
	out="$E2E_TMP/server.$kind.$E2E_SEQ.out"
	python3 "$REPO_ROOT/tests/e2e/servers.py" "$kind" --port-file "$pf" "$@" >"$out" 2>&1 &
	pid=$!
	track "$pid"
	SERVER_PID=$pid SERVER_OUT=$out SERVER_PORT=""
	while [ ! -s "$pf" ] && [ "$i" -lt 100 ] && alive "$pid"; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -s "$pf" ] && SERVER_PORT=$(cat "$pf")
	[ -n "$SERVER_PORT" ]
}

# proxy_stat FILE NAME: print counter NAME from FILE's last "sheaf proxy:
# stats" line; returns 1 (prints nothing) when there is no such counter.
proxy_stat() {
	local v
	v=$(grep 'sheaf proxy: stats' "$1" 2>/dev/null | tail -n1 |
		sed -n "s/.*\"$2\":\([0-9][0-9.]*\).*/\1/p")
	[ -n "$v" ] || return 1
	printf '%s\n' "$v"
}

# mode_unavailable: after start_proxy failed, true when the proxy said its
# --io mode is not available on this kernel (a skip, not a failure).
mode_unavailable() {
	! alive "$PROXY_PID" &&
		grep -Eqi 'not available|not supported|unsupported' "$PROXY_ERR" "$PROXY_OUT" 2>/dev/null
}

# start_proxy_case NAME ARGS...: start_proxy ARGS for the case NAME. When it
# does not start, prints "skip NAME: why" and returns 2 if the --io mode is
# not available on this kernel, else prints "FAIL NAME: why", returns 1.
start_proxy_case() {
	local name=$1
	shift
	start_proxy "$@" && return 0
	if mode_unavailable; then
		echo "skip $name: $(one_line "$PROXY_ERR")"
		return 2
	fi
	echo "FAIL $name: proxy did not start: $(one_line "$PROXY_ERR") $(one_line "$PROXY_OUT")"
	return 1
}

# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }

# small_socket_buffers: inside a network namespace of the test's own, make
# every TCP socket's buffers 4 KiB (the sysctls are per namespace; written
# through /proc so that no procps is needed).
small_socket_buffers() {
	echo "4096 4096 4096" >/proc/sys/net/ipv4/tcp_wmem &&
		echo "4096 4096 4096" >/proc/sys/net/ipv4/tcp_rmem
}

# report STATUS DESCRIPTION...: prints "ok NAME: DESCRIPTION" when STATUS is 0,
# else "FAIL NAME: ..." and sets E2E_FAILED=1 (end with: exit $E2E_FAILED).
# Keep the status in a variable first: expanding DESCRIPTION may change $?.
E2E_FAILED=0
report() {
	local st=$1
	shift
	if [ "$st" -eq 0 ]; then
		echo "ok $E2E_NAME: $*"
	else
		echo "FAIL $E2E_NAME: $*"
		E2E_FAILED=1
	fi
}

# free_port [HOST]: a port with no listener on HOST (default 127.0.0.1) now.
free_port() {
	python3 -c 'import socket, sys
h = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
s.bind((h, 0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

# wait_line FILE PATTERN [SECONDS] [COUNT]: wait (default 5 s) until FILE has
# COUNT (default 1) lines matching PATTERN (grep -E); returns 1 on timeout.
wait_line() {
	local i=0 limit=$(( ${3:-5} * 10 )) n
	while n=$(grep -Ec -- "$2" "$1" 2>/dev/null); [ "${n:-0}" -lt "${4:-1}" ]; do
		[ "$i" -ge "$limit" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# names ARGS...: servers.py names ARGS (bounded), printing what follows "names: ".
names() {
	timeout 30 python3 "$REPO_ROOT/tests/e2e/servers.py" names --timeout 5 "$@" |
		sed -n 's/^names: //p'
}
