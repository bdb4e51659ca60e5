#!/bin/sh
# Runs every test: unit tests (cmocka), the kernel-behaviour programs
# (tests/kernel: exit 77 where the kernel lacks bundles) and end-to-end tests, first on the
# normal build, then on the ASan + UBSan build; then each libFuzzer harness over its seed
# corpus (tests/fuzz_corpus.sh; skipped without clang). Ends with one summary line
# "N passed, N failed, N skipped" and exits non-zero when any failed.
cd "$(dirname "$0")/.." || exit 1
pass=0 fail=0 skip=0
failed_list=""
log=$(mktemp) digest=$(mktemp)
trap 'rm -f "$log" "$digest"' EXIT

# digest LABEL: a failure's first FAIL lines (else its last lines), cut
# short, kept for the end of the run, where a log viewer that shows only
# the head and the tail of the output still shows why
digest() {
	{
		echo "  $1:"
		grep -m 3 '^FAIL\|^\[  FAILED  \]\|ERROR\|Assertion\|SUMMARY' "$log" ||
			grep -v '^ok ' "$log" | tail -n 3
	} | cut -c1-400 >>"$digest"
}

count_unit() { # binary label
	"$1" >"$log" 2>&1
	rc=$?
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log")
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log")
	p=${p:-0} f=${f:-0}
	[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	pass=$((pass + p)) fail=$((fail + f))
	echo "unit  $2: $p passed, $f failed"
	sed -n 's/^\[       OK \] /  ok   /p; s/^\[  FAILED  \] \([a-z]\)/  FAIL \1/p' "$log"
	[ "$f" -ne 0 ] && { cat "$log"; digest "$2"; failed_list="$failed_list $2"; }
}

# e2e scripts print "ok ..." / "FAIL ..." per case; a script without such
# lines counts as one test by its exit status (77: skipped).
count_e2e() { # script label [args]
	s=$1 label=$2
	shift 2
	t0=$(date +%s)
	timeout 900 "$s" "$@" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - t0))
	p=$(grep -c '^ok ' "$log") f=$(grep -c '^FAIL' "$log")
	if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
		case $rc in 0) p=1 ;; 77) skip=$((skip + 1)) ;; *) f=1 ;; esac
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	pass=$((pass + p)) fail=$((fail + f))
	echo "e2e   $label: $p passed, $f failed (exit $rc, ${secs} s)"
	sed -n 's/^ok /  ok   /p' "$log"
	[ "$f" -ne 0 ] && { grep -v '^ok ' "$log" | tail -40; digest "$label"; failed_list="$failed_list $label"; }
	[ "$rc" -eq 77 ] && sed -n 1p "$log"
}

for build in build build-san; do
	[ -x $build/sheaf ] || { echo "missing $build/sheaf (run make test)"; exit 1; }
	for t in $build/tests/test_*; do
		case $t in *.d) continue ;; esac
		count_unit "$t" "$build/$(basename "$t")"
	done
	for t in $build/tests/kernel_*; do
		case $t in *.d) continue ;; esac
		count_e2e "$t" "$build/$(basename "$t")"
	done
	export SHEAF=$build/sheaf
	if [ $build = build-san ]; then
		# the long fault tests once more under the sanitizers, in the two
		# backends (every mode already ran on the normal build)
		export DEADLOCK_MODES="bundle epoll" ISOLATION_MODES="bundle epoll" \
			SEND_RESET_MODES="bundle epoll" SHORT_SENDS_MODES="bundle epoll"
	fi
	for t in tests/e2e/*.sh; do
		name=$(basename "$t" .sh)
		case $name in
		lib) ;;
		# valgrind cannot run ASan binaries: the normal build only
		valgrind) [ $build = build ] && count_e2e "$t" "$build/$name" ;;
		# no sheaf binary in them: once is enough
		man_pages | api_doc) [ $build = build ] && count_e2e "$t" "$build/$name" ;;
		proxy_matrix)
			# every mode on the normal build, the two backends under the sanitizers
			modes="bundle ring plain sendmsg epoll recvmsg"
			[ $build = build-san ] && modes="bundle epoll"
			for m in $modes; do
				count_e2e "$t" "$build/$name:$m" "$m"
			done ;;
		*) count_e2e "$t" "$build/$name" ;;
		esac
	done
	# 60 s of the soak (make soak: 600 s over every mode), on the sanitizer
	# build: ASan and UBSan catch the use-after-free, overflow and leak (at
	# exit) that faults provoke; the RSS check allows for their overhead
	if [ $build = build-san ]; then
		SOAK_SECONDS=60 SOAK_MODES="bundle epoll"
		export SOAK_SECONDS SOAK_MODES
		count_e2e tests/soak.sh "$build/soak"
	fi
done
# the libFuzzer harnesses (build-fuzz/, make fuzz-bin), each over its seeds
for f in fuzz/fuzz_*.c; do
	name=$(basename "$f" .c)
	count_e2e tests/fuzz_corpus.sh "$name" "${name#fuzz_}"
done
if [ -n "$failed_list" ]; then
	echo "why (each failure's first lines; the whole output is above):"
	cat "$digest"
	echo "failed:$failed_list"
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
