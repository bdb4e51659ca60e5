#!/usr/bin/env bash
# addresses.sh: IPv6 ([::1]) and host names (localhost) on both sides of the
# proxy, verified streams end to end; upstreams of both families behind one
# listener, each reached in its own family.
. "$(dirname "$0")/lib.sh"
require_sheaf

python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null ||
	skip "no IPv6 loopback (::1) here"

# through LISTEN_HOST UPSTREAM_HOST...: one sink per upstream host (4 verified
# streams each; it listens on that host only, so it is reached in that
# family), a proxy on LISTEN_HOST, a source through it. Sets WHY to what
# failed ("" when all is well).
through() {
	local lhost=$1 h sinks="" outs="" ups=() n=0
	shift
	WHY=""
	for h in "$@"; do
		start_sink --listen "$h:0" --verify --conns 4 || { WHY="sink on $h did not start"; return; }
		sinks="$sinks $SINK_PID" outs="$outs $SINK_OUT"
		ups+=(--upstream "$h:$SINK_PORT")
		n=$((n + 1))
	done
	start_proxy --listen "$lhost:0" "${ups[@]}" ||
		{ WHY="proxy did not start: $(one_line "$PROXY_ERR")"; return; }
	timeout 60 "$SHEAF" source --connect "$lhost:$PROXY_PORT" --conns $((4 * n)) --bytes 8M \
		--verify >/dev/null 2>&1 || WHY="$WHY; source failed"
	for h in $sinks; do wait_pid "$h" 10 || WHY="$WHY; a sink failed"; done
	for h in $outs; do grep -q '4 streams, 4 intact' "$h" || WHY="$WHY; $(one_line "$h")"; done
	stop "$PROXY_PID" 10 || WHY="$WHY; proxy exit"
	pool_balanced "$PROXY_OUT" >/dev/null || WHY="$WHY; pool $(pool_balanced "$PROXY_OUT")"
	WHY=${WHY#; }
}

through '[::1]' '[::1]'
[ -z "$WHY" ] && grep -q 'listening on \[::1\]:' "$PROXY_OUT"
st=$?
report $st "IPv6 both sides ([::1] -> [::1]): 4 verified streams $WHY"

through localhost localhost
[ -z "$WHY" ]
st=$?
report $st "host names both sides (localhost -> localhost): 4 verified streams $WHY"

through '[::1]' 127.0.0.1 '[::1]'
[ -z "$WHY" ]
st=$?
report $st "an IPv6 listener with an IPv4 and an IPv6 upstream: 4 verified streams to each $WHY"

through 127.0.0.1 '[::1]'
[ -z "$WHY" ]
st=$?
report $st "an IPv4 listener, an IPv6 upstream: 4 verified streams $WHY"
exit $E2E_FAILED
