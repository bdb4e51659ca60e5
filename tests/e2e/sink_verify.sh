#!/usr/bin/env bash
# sink_verify.sh: sheaf sink --verify on its edges.
#  - interrupted before any stream came: the exit status its --help gives
#    (0 without --conns: every stream received was intact; 1 with --conns N:
#    fewer than N came) and, under build-san, no UBSan "runtime error";
#  - streams of 6 distinct seeds (sheaf source --seed N) all verify;
#  - a stream whose header is garbage is reported as a bad header, beside an
#    intact stream of the same id 0, never as "received twice";
#  - past 20 failures (or duplicates) the list says how many it left out.
. "$(dirname "$0")/lib.sh"
require_sheaf

# run_source ARGS...: sheaf source (at most 30 s); its exit status.
run_source() {
	timeout 30 "$SHEAF" source "$@" >>"$E2E_TMP/source.out" 2>>"$E2E_TMP/source.err"
}

# sink_done: wait (30 s) for the sink; sets SINK_RC.
sink_done() {
	wait_pid "$SINK_PID" 30
	SINK_RC=$?
}

# 1. SIGINT before any stream
for conns in "" 3; do
	start_sink --listen 127.0.0.1:0 --verify ${conns:+--conns $conns} ||
		fail "sink did not start: $(one_line "$SINK_ERR")"
	kill -INT "$SINK_PID"
	sink_done
	want=0 what="without --conns"
	[ -n "$conns" ] && want=1 what="with --conns $conns"
	! grep -q 'runtime error' "$SINK_ERR" && [ "$SINK_RC" -eq "$want" ] &&
		grep -q '0 streams, 0 intact, 0 failed' "$SINK_OUT"
	report $? "interrupted before any stream $what: exit $SINK_RC (want $want)," \
		"no runtime error: $(one_line "$SINK_ERR") $(one_line "$SINK_OUT")"
done

# 2. six distinct seeds, one stream each, every one with id 0
start_sink --listen 127.0.0.1:0 --verify --conns 6 || fail "sink did not start"
src_rc=0
for seed in 1 2 3 4 5 6; do
	run_source --connect "127.0.0.1:$SINK_PORT" --verify --seed $seed --bytes 300K ||
		src_rc=1
done
sink_done
[ "$src_rc" -eq 0 ] && [ "$SINK_RC" -eq 0 ] && grep -q '6 streams, 6 intact, 0 failed' "$SINK_OUT"
report $? "6 streams of 6 distinct seeds all verified: sink exit $SINK_RC, sources $src_rc:" \
	"$(one_line "$SINK_OUT") $(one_line "$SINK_ERR")"

# 3. a garbage header (a source without --verify sends no header) beside an
# intact stream 0
start_sink --listen 127.0.0.1:0 --verify --conns 2 || fail "sink did not start"
run_source --connect "127.0.0.1:$SINK_PORT" --verify --bytes 100K
run_source --connect "127.0.0.1:$SINK_PORT" --bytes 100K
sink_done
[ "$SINK_RC" -eq 1 ] && grep -q 'bad stream header' "$SINK_ERR" &&
	! grep -q 'received twice' "$SINK_ERR" &&
	grep -q '2 streams, 1 intact, 1 failed (1 bad header)' "$SINK_OUT"
report $? "a garbage header is counted as a bad header, not as stream 0 received twice:" \
	"exit $SINK_RC: $(one_line "$SINK_ERR") $(one_line "$SINK_OUT")"

# 4. 25 failures: 20 listed, then how many were not
start_sink --listen 127.0.0.1:0 --verify --conns 25 || fail "sink did not start"
run_source --connect "127.0.0.1:$SINK_PORT" --conns 25 --bytes 25K
sink_done
listed=$(grep -c 'bad stream header' "$SINK_ERR")
[ "$SINK_RC" -eq 1 ] && [ "$listed" -eq 20 ] && grep -q '\.\.\. and 5 more' "$SINK_ERR"
report $? "25 failed streams: 20 listed ($listed) and '... and 5 more': exit $SINK_RC," \
	"$(grep -v 'bad stream header' "$SINK_ERR" | tr '\n' ' ' | cut -c1-300)"

# 5. 25 streams received twice (two sources, one seed): 20 listed, and the rest counted
start_sink --listen 127.0.0.1:0 --verify --conns 50 || fail "sink did not start"
run_source --connect "127.0.0.1:$SINK_PORT" --verify --conns 25 --bytes 25K
run_source --connect "127.0.0.1:$SINK_PORT" --verify --conns 25 --bytes 25K
sink_done
listed=$(grep -c '^sheaf sink: stream .*: received twice' "$SINK_ERR")
[ "$SINK_RC" -eq 1 ] && [ "$listed" -eq 20 ] && grep -q '\.\.\. and 5 more' "$SINK_ERR" &&
	grep -q '50 streams, 25 intact, 25 failed' "$SINK_OUT"
report $? "25 streams received twice: 20 listed ($listed) and '... and 5 more': exit $SINK_RC," \
	"$(grep -v 'received twice' "$SINK_ERR" | tr '\n' ' ' | cut -c1-200) $(one_line "$SINK_OUT")"

exit $E2E_FAILED
