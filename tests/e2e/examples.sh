#!/bin/bash
# The examples built against an installed libsheaf, as a program outside
# the tree would be: `make install PREFIX=/opt/sheaf DESTDIR=<tmp>`, then each
# example copied out of the tree and compiled with only
# `cc prog.c $(pkg-config --cflags --libs sheaf)`; then verified traffic
# through each, in every io mode (bundle and epoll on the sanitizer build,
# whose examples are built with the sanitizers too):
#   echo     sheaf source --verify --echo, and a client that stops reading
#            while the server writes: the server is told to stop
#            (on_writable), its memory stays bounded, every byte arrives
#   lines    answers checked line by line, also with a stalled reader
#   forward  sheaf source --verify -> forward -> sheaf sink --verify
# and `man 3 sheaf_conn_write` from the installed pages.
. "$(dirname "$0")/lib.sh"

CLIENTS=$REPO_ROOT/tests/e2e/example_clients.py
case $SHEAF in
*/build-san/*) san=1 modes=${EXAMPLES_MODES:-"bundle epoll"}
	ccflags="-fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
*) san=0 modes=${EXAMPLES_MODES:-"bundle ring plain sendmsg epoll recvmsg"} ccflags="" ;;
esac
dest=$E2E_TMP/dest prefix=/opt/sheaf
lib=$dest$prefix/lib

make -s -C "$REPO_ROOT" SANITIZE=$san install PREFIX=$prefix DESTDIR="$dest" \
	>"$E2E_TMP/install.log" 2>&1 || { cat "$E2E_TMP/install.log"; fail "make install failed"; }
export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs sheaf) || fail "pkg-config does not know sheaf"
case " $flags " in
*" -I$dest$prefix/include "*" -L$lib "*) say "ok pkg-config: $flags" ;;
*) fail "pkg-config flags do not name the install: $flags" ;;
esac

# the ABI: soname libsheaf.so.0, exactly the functions sheaf.h declares,
# under the version node SHEAF_0
so=$(readlink -f "$lib/libsheaf.so")
soname=$(objdump -p "$so" | awk '/SONAME/ { print $2 }')
[ "$soname" = libsheaf.so.0 ] || fail "soname is '$soname', not libsheaf.so.0"
declared=$(grep -o '\bsheaf_[a-z_]*(' "$dest$prefix/include/sheaf.h" | tr -d '(' | sort -u)
exported=$(objdump -T "$so" | awk '$NF ~ /^sheaf/ && $(NF-1) == "SHEAF_0" { print $NF }' | sort -u)
[ "$declared" = "$exported" ] ||
	fail "exports differ from sheaf.h: $(diff <(echo "$declared") <(echo "$exported") | grep '^[<>]' | tr '\n' ' ')"
say "ok libsheaf.so.0 exports the $(echo "$declared" | wc -l) functions of sheaf.h (version node SHEAF_0)"

# outside the tree: the example sources and nothing else of the repository
src=$E2E_TMP/src
mkdir -p "$src"
cp "$REPO_ROOT"/examples/*.c "$REPO_ROOT"/examples/example.h "$src/"
for ex in echo lines forward; do
	# shellcheck disable=SC2086
	(cd "$src" && cc -Wall -Werror $ccflags "$ex.c" -o "$ex" $flags) 2>"$E2E_TMP/cc.log" ||
		{ cat "$E2E_TMP/cc.log"; fail "$ex does not build against the installed library"; }
done
export LD_LIBRARY_PATH=$lib
if ldd "$src/echo" | grep -q "libsheaf.so.0 => $lib/libsheaf.so.0"; then
	say "ok examples built outside the tree link $lib/libsheaf.so.0"
else
	ldd "$src/echo"; fail "echo does not link the installed libsheaf.so.0"
fi

# start_example NAME ARGS...: runs it (with the variables EX_ENV names set,
# if any), sets EX_PID and EX_PORT
start_example() {
	local name=$1 out=$E2E_TMP/$1.$E2E_SEQ.out i
	shift
	E2E_SEQ=$((E2E_SEQ + 1))
	# shellcheck disable=SC2086 # EX_ENV: words
	env ${EX_ENV:-} "$src/$name" "$@" >"$out" 2>&1 &
	EX_PID=$!
	track $EX_PID
	EX_PORT=
	for i in $(seq 100); do
		EX_PORT=$(sed -n 's/^listening on port //p' "$out")
		[ -n "$EX_PORT" ] && return 0
		alive $EX_PID || break
		sleep 0.05
	done
	cat "$out"
	fail "$name $* did not start"
}

# stop_example NAME: SIGTERM; it must exit 0 (sanitizers report as errors)
stop_example() {
	stop $EX_PID 10 || fail "$1 exited with status $? ($(tail -n 3 "$E2E_TMP"/*.out))"
}

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# ASan keeps freed memory in quarantine (up to 256 MB) to catch a use after
# free, so the echo's RSS would grow with the reallocs of its short writes
# (10-15 MB while the client stalls, on a busy machine) without holding a
# byte more: the echo runs without quarantine, the others with it
echo_env=
[ $san = 1 ] && echo_env=ASAN_OPTIONS=quarantine_size_mb=0
for m in $modes; do
	EX_ENV=$echo_env start_example echo 127.0.0.1:0 "$m"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$EX_PORT" --conns 8 --bytes 32M \
		--verify --echo >"$E2E_TMP/src.out" 2>&1 ||
		{ cat "$E2E_TMP/src.out"; fail "echo $m: verified streams did not come back intact"; }
	say "ok echo $m: 8 verified streams echoed intact"
	# a client that stops reading for 1.5 s while 32 MB go out: kernel buffers
	# hold at most ~10 MB, so an echo that did not pause would keep 20+ MB
	before=$(rss_kb $EX_PID)
	timeout 90 python3 "$CLIENTS" echo "$EX_PORT" 33554432 --stall 1.5 >"$E2E_TMP/cl.out" &
	cl=$!
	sleep 1
	during=$(rss_kb $EX_PID)
	wait $cl || { cat "$E2E_TMP/cl.out"; fail "echo $m: stalled reader did not get every byte"; }
	[ $((during - before)) -lt 8192 ] ||
		fail "echo $m: RSS grew from $before to $during kB while the client did not read"
	say "ok echo $m: stalled reader got 32 MB intact, server RSS $before -> $during kB meanwhile"
	stop_example echo

	start_example lines 127.0.0.1:0 "$m"
	timeout 60 python3 "$CLIENTS" lines "$EX_PORT" 20000 >"$E2E_TMP/cl.out" ||
		{ cat "$E2E_TMP/cl.out"; fail "lines $m: answers wrong"; }
	timeout 180 python3 "$CLIENTS" lines "$EX_PORT" 30000 --stall 1.5 >"$E2E_TMP/cl.out" ||
		{ cat "$E2E_TMP/cl.out"; fail "lines $m: answers wrong with a stalled reader"; }
	say "ok lines $m: 20000 answers checked, and 30000 with a reader stalled for 1.5 s"
	stop_example lines

	"$SHEAF" sink --listen 127.0.0.1:0 --verify --conns 8 >"$E2E_TMP/sink.out" 2>"$E2E_TMP/sink.err" &
	sink=$!
	track $sink
	for i in $(seq 100); do
		sport=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$E2E_TMP/sink.err")
		[ -n "$sport" ] && break
		sleep 0.05
	done
	[ -n "$sport" ] || fail "sink did not start"
	start_example forward 127.0.0.1:0 "127.0.0.1:$sport" "$m"
	timeout 60 "$SHEAF" source --connect "127.0.0.1:$EX_PORT" --conns 8 --bytes 32M \
		--verify >"$E2E_TMP/src.out" 2>&1 || { cat "$E2E_TMP/src.out"; fail "forward $m: source failed"; }
	wait_pid $sink 30 || { cat "$E2E_TMP/sink.out" "$E2E_TMP/sink.err"; fail "forward $m: sink saw damage"; }
	say "ok forward $m: 8 verified streams through the forwarder"
	stop_example forward
done

if [ -z "$(ls "$REPO_ROOT"/man/man3/*.3 2>/dev/null)" ]; then
	fail "no man pages in man/man3"
elif man --manpath="$dest$prefix/share/man" 3 sheaf_conn_write 2>/dev/null | grep -q "sheaf_conn_write"; then
	say "ok man 3 sheaf_conn_write from the installed pages"
else
	fail "man 3 sheaf_conn_write does not work after make install"
fi
