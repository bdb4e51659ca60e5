#!/bin/sh
# make bench: the full sweep. Writes bench/results/*.json and plots and
# docs/BENCHMARKS.md (tables, commands, kernel, CPU, date).
set -e
cd "$(dirname "$0")/.."
S=${SHEAF:-build/sheaf}
R=bench/results
mkdir -p $R
parts=""
run() { # name args...
	name=$1
	shift
	echo "== sheaf bench $*" >&2
	$S bench "$@" --json $R/$name.json --plot $R/$name.svg --markdown $R/$name.md ||
		echo "make bench: some runs of '$name' failed (above; kept in the JSON as ok:false)" >&2
	parts="$parts $R/$name.md"
}
run loopback --peers haproxy,haproxy-splice,socat,nginx
if [ "$(id -u)" -eq 0 ]; then
	run netns-1gbit --topology netns --link-rate 1gbit --sizes 32,80,320,1K,4K \
		--modes ring,bundle,sendmsg --peers haproxy,socat
else
	echo "make bench: not root, the netns sweep is skipped" >&2
fi
run rr --workload rr --sizes 32,1K --modes ring,bundle --peers haproxy,socat
{
	echo "# sheaf benchmarks"
	echo
	echo "Produced by \`make bench\` (bench/run.sh); every figure below was measured"
	echo "by that run. JSON with every run and the plots are in bench/results/;"
	echo "peer configurations (as written by the benchmark) are beside them."
	echo "CPU-s/GiB is the proxy's user+system time per GiB moved. On 2 cores the"
	echo "source, proxy and sink share the CPUs: compare rows of one table, not"
	echo "across runs."
	echo
	cat $parts
} > docs/BENCHMARKS.md
echo "make bench: wrote docs/BENCHMARKS.md and $R/" >&2
