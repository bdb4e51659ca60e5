#!/bin/sh
# make bench: the full sweep (10 to 15 minutes on 2 busy cores). Writes
# bench/results/*.json and plots and docs/BENCHMARKS.md (tables, commands,
# kernel, CPU, date), followed by bench/notes.md (the analysis: profiles,
# the physical floor, the levers tried; its figures name their own runs).
set -e
cd "$(dirname "$0")/.."
S=${SHEAF:-build/sheaf}
R=bench/results
mkdir -p $R
# ONLY="name ..." runs only those parts; the page is assembled from every
# part's Markdown in bench/results either way
run() { # name args...
	name=$1
	shift
	case " ${ONLY:-$name} " in *" $name "*) ;; *) return 0 ;; esac
	echo "== sheaf bench $*" >&2
	$S bench "$@" --json $R/$name.json --plot $R/$name.svg --markdown $R/$name.md ||
		echo "make bench: some runs of '$name' failed (above; kept in the JSON as ok:false)" >&2
}
# one connection, every io mode, buffer sizes from 32 B to 64 KiB
run loopback --sizes 32,320,4K,64K --bytes 64M --peers haproxy,haproxy-splice,socat,nginx
if [ "$(id -u)" -eq 0 ]; then
	run netns-1gbit --topology netns --link-rate 1gbit --sizes 32,320,4K \
		--modes ring,bundle,sendmsg --peers haproxy,socat
else
	echo "make bench: not root, the netns sweep is skipped" >&2
fi
# at scale: 64-byte requests, closed loop, 1 to 5000 connections (the plot:
# proxy CPU per request against connections), then open loop at half of
# HAProxy's closed-loop maximum, then streams (every one verified)
run scale-rr --workload rr --sizes 4K --msg-size 64 --conns 1,64,1000,5000 \
	--modes bundle,recvmsg,epoll --peers haproxy,haproxy-bufsize --duration 2 --warmup 1
run scale-rate --workload rate --rate 50% --sizes 4K --msg-size 64 --conns 1000 \
	--modes bundle,epoll --peers haproxy,haproxy-bufsize --duration 2 --warmup 1
run scale-stream --sizes 4K --conns 64,5000 --bytes 512M --modes bundle,epoll \
	--peers haproxy,haproxy-bufsize
run scale-syscalls --workload rr --sizes 4K --msg-size 64 --conns 1000 --runs 1 --syscalls \
	--modes bundle,epoll --peers haproxy --duration 2 --warmup 1
{
	echo "# sheaf benchmarks"
	echo
	echo "Produced by \`make bench\` (bench/run.sh); every figure in the tables below"
	echo "was measured by that run. JSON with every run and the plots are in"
	echo "bench/results/; peer configurations (as written by the benchmark) are"
	echo "beside them. CPU-s/GiB is the proxy's user+system time per GiB moved,"
	echo "CPU-s/100k req its time per 100,000 requests over the source's"
	echo "measurement window (/proc/PID/stat). On 2 cores the source, proxy and"
	echo "sink share the CPUs with each other (and, on this machine, with other"
	echo "people's builds): compare rows of one table, and the x haproxy columns"
	echo "(run-by-run ratios of interleaved runs), not across runs."
	echo
	for p in loopback netns-1gbit scale-rr scale-rate scale-stream scale-syscalls; do
		[ -f $R/$p.md ] && cat $R/$p.md
	done
	[ -f bench/notes.md ] && cat bench/notes.md
} > docs/BENCHMARKS.md
echo "make bench: wrote docs/BENCHMARKS.md and $R/" >&2
