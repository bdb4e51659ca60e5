#!/usr/bin/env bash
# nodelay.sh: TCP_NODELAY is on for both of the proxy's sockets of a pair by
# default (and with --nodelay), off with --no-nodelay, in both backends. The
# option is read from the proxy's own sockets: a copy of each is taken with
# pidfd_getfd (Linux 5.6+, needs ptrace rights over the proxy) and asked
# with getsockopt; the peers' sockets cannot show it.
. "$(dirname "$0")/lib.sh"
require_sheaf

start_server banner --name A || fail "banner server did not start"
UP="127.0.0.1:$SERVER_PORT"

# nodelay_of PORT PID: connect a client through the proxy on PORT, wait for
# the banner, then print TCP_NODELAY of every connected TCP socket of PID
# (sorted, e.g. "1 1"); exit 77 when the sockets cannot be read.
nodelay_of() {
	timeout 20 python3 - "$1" "$2" <<'PY'
import ctypes, os, socket, sys
port, pid = int(sys.argv[1]), int(sys.argv[2])
c = socket.create_connection(("127.0.0.1", port), timeout=5)
if not c.recv(64):
    print("no banner"); sys.exit(1)
libc = ctypes.CDLL(None, use_errno=True)
try:
    pidfd = os.pidfd_open(pid)
except OSError as e:
    print("pidfd_open: %s" % e); sys.exit(77)
vals = []
for name in os.listdir("/proc/%d/fd" % pid):
    try:
        if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
            continue
    except OSError:
        continue
    fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
    if fd < 0:
        print("pidfd_getfd: %s" % os.strerror(ctypes.get_errno())); sys.exit(77)
    s = socket.socket(fileno=fd)  # our copy: closing it leaves the proxy's
    try:
        if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM:
            s.getpeername()  # connected ones only, not the listener
            vals.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        pass
    s.close()
print(" ".join(str(min(v, 1)) for v in sorted(vals)))
PY
}

for mode in bundle epoll; do
	for opt in "" --nodelay --no-nodelay; do
		want="1 1"
		[ "$opt" = --no-nodelay ] && want="0 0"
		start_proxy --listen 127.0.0.1:0 --upstream "$UP" --io "$mode" $opt ||
			fail "proxy did not start: $(one_line "$PROXY_ERR")"
		got=$(nodelay_of "$PROXY_PORT" "$PROXY_PID")
		rc=$?
		stop "$PROXY_PID" 10 >/dev/null
		[ "$rc" -eq 77 ] && skip "cannot read the proxy's sockets: $got"
		[ "$rc" -eq 0 ] && [ "$got" = "$want" ]
		st=$?
		report $st "$mode ${opt:-(default)}: TCP_NODELAY of the client and upstream sockets" \
			"'$got', want '$want'"
	done
done
exit $E2E_FAILED
