#!/bin/sh
# fuzz_corpus.sh NAME: runs the libFuzzer harness build-fuzz/fuzz_NAME once
# over each input of its seed corpus fuzz/corpus/NAME (no fuzzing: seconds),
# as make test does; prints "ok ..." or "FAIL ...". Exit 0 pass, 1 fail,
# 77 skip (no clang to build the harnesses with).
cd "$(dirname "$0")/.." || exit 1
name=$1
bin=build-fuzz/fuzz_$name
if ! command -v "${FUZZ_CC:-clang}" >/dev/null; then
	echo "SKIP fuzz_$name: no clang to build the fuzzers with (apt-get install clang)"
	exit 77
fi
if [ ! -x "$bin" ]; then
	echo "FAIL fuzz_$name: $bin missing (make fuzz-bin)"
	exit 1
fi
n=$(ls "fuzz/corpus/$name" | wc -l)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
timeout 300 "$bin" "fuzz/corpus/$name"/* >"$log" 2>&1
rc=$?
ran=$(grep -c '^Executed ' "$log")
if [ "$rc" -eq 0 ] && [ "$ran" -eq "$n" ] && [ "$n" -gt 0 ]; then
	echo "ok fuzz_$name: $n seed inputs, no crash, leak or failed check"
	exit 0
fi
echo "FAIL fuzz_$name: exit $rc, $ran of $n seed inputs run"
grep -E 'ERROR|SUMMARY|Running:|runtime error' "$log" | tail -n 8
exit 1
