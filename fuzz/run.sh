#!/bin/sh
# make fuzz: runs each harness for SECONDS, and prints what it did.
#   fuzz/run.sh SECONDS build-fuzz/fuzz_NAME...
# Each starts from its seeds (fuzz/corpus/NAME, never written to) and what
# earlier runs found (build-fuzz/corpus/NAME, where new inputs go), with
# fuzz/NAME.dict when there is one. A crash leaves its input in
# build-fuzz/artifacts/; add it to fuzz/corpus/NAME once fixed. Exits 1 when
# any harness failed.
cd "$(dirname "$0")/.." || exit 1
secs=$1
shift
failed=0
mkdir -p build-fuzz/artifacts
for bin in "$@"; do
	name=${bin##*/fuzz_}
	work=build-fuzz/corpus/$name
	log=build-fuzz/$name.log
	mkdir -p "$work"
	dict=""
	[ -f "fuzz/$name.dict" ] && dict="-dict=fuzz/$name.dict"
	echo "fuzz_$name: $secs s ..."
	# -close_fd_mask=3: the parsers' messages would drown the fuzzer's
	"$bin" -max_total_time="$secs" -close_fd_mask=3 -print_final_stats=1 \
		-artifact_prefix="build-fuzz/artifacts/$name-" $dict "$work" "fuzz/corpus/$name" \
		>"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	last=$(grep -E '^#[0-9]+' "$log" | tail -n1)
	cov=$(printf '%s' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(printf '%s' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(printf '%s' "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')
	seeds=$(ls "fuzz/corpus/$name" | wc -l)
	found=$(ls "$work" | wc -l)
	echo "fuzz_$name: exit $rc, ${execs:-?} execs (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}," \
		"corpus ${corp:-?} in memory; $seeds seeds, $found found in $work"
	if [ "$rc" -ne 0 ]; then
		failed=1
		grep -E 'ERROR|SUMMARY|artifact|Test unit written' "$log" | head -n 8
	fi
done
exit $failed
