#!/usr/bin/env python3
"""sheaf proxy under systemd (systemd.sh), without systemd: this script plays
its part. Socket activation: it binds and listens itself, then starts the
proxy with the socket as fd 3, LISTEN_FDS=1, LISTEN_PID=<the proxy's pid>
(set in the child between fork and exec, as systemd does) and
LISTEN_FDNAMES; readiness: a unix datagram socket of its own is
NOTIFY_SOCKET, and must receive READY=1 once the proxy accepts, STOPPING=1
at SIGTERM. Checks: verified streams through a passed socket (matched by
address, and by name), a restart on the same socket where a client that
connected while no proxy ran is served, a LISTEN_PID meant for another
process ignored, a socket for no frontend closed with a warning.
Prints "ok CASE" or "FAIL CASE: why"; exits 1 if any failed.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SHEAF = os.environ["SHEAF"]
TMP = tempfile.mkdtemp(prefix="sheaf-e2e-systemd.")
failed = 0
procs = []


def result(name, ok, why=""):
    global failed
    if ok:
        print("ok systemd: " + name, flush=True)
    else:
        failed += 1
        print("FAIL systemd: %s: %s" % (name, why), flush=True)


def listener(port=0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


class Notify:
    """NOTIFY_SOCKET: an abstract unix datagram socket; collects messages."""

    def __init__(self):
        self.name = "@sheaf-e2e-%d-%d" % (os.getpid(), time.monotonic_ns() % 100000)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind("\0" + self.name[1:])
        self.got = []

    def wait(self, what, timeout=10):
        end = time.time() + timeout
        while what not in "\n".join(self.got) and time.time() < end:
            self.s.settimeout(max(0.01, end - time.time()))
            try:
                self.got.append(self.s.recv(4096).decode())
            except socket.timeout:
                break
        return what in "\n".join(self.got)


class Proxy:
    """sheaf proxy ARGS with the given sockets as fds 3, 4, ..."""

    def __init__(self, args, socks=(), names=None, listen_pid=None, notify=None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="proxy.", dir=TMP, delete=False).name
        out = open(self.log, "w")
        fds = [s.fileno() for s in socks]
        pid = os.fork()
        if pid == 0:
            try:
                # fds 3.. may be taken by the very descriptors to move: dup high first
                high = [os.dup(fd) for fd in fds]
                for i, fd in enumerate(high):
                    os.dup2(fd, 3 + i)  # inheritable
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                env = dict(os.environ)
                if fds:
                    env["LISTEN_FDS"] = str(len(fds))
                    env["LISTEN_PID"] = str(listen_pid or os.getpid())
                    if names:
                        env["LISTEN_FDNAMES"] = ":".join(names)
                if notify:
                    env["NOTIFY_SOCKET"] = notify.name
                os.closerange(3 + len(fds), 1024)
                os.execve(SHEAF, [SHEAF, "proxy"] + args, env)
            finally:
                os._exit(127)
        self.pid = pid
        procs.append(pid)

    def text(self):
        return open(self.log).read()

    def wait_line(self, pattern, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.done() is not None:
                break
            time.sleep(0.05)
        return None

    def done(self):
        try:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return getattr(self, "rc", None)
        if pid == 0:
            return None
        self.rc = os.waitstatus_to_exitcode(st)
        return self.rc

    def stop(self, timeout=20):
        os.kill(self.pid, signal.SIGTERM)
        end = time.time() + timeout
        while self.done() is None and time.time() < end:
            time.sleep(0.05)
        if self.done() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            return None
        return self.rc


def sink(conns):
    log = tempfile.NamedTemporaryFile("w+", prefix="sink.", dir=TMP, delete=False).name
    p = subprocess.Popen([SHEAF, "sink", "--listen", "127.0.0.1:0", "--verify", "--conns",
                          str(conns)], stdout=open(log + ".out", "w"), stderr=open(log, "w"))
    end = time.time() + 10
    while time.time() < end:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(log).read())
        if m:
            return p, int(m.group(1)), log + ".out"
        time.sleep(0.05)
    raise RuntimeError("sink did not start")


def source(port, conns, size, seed):
    return subprocess.Popen([SHEAF, "source", "--connect", "127.0.0.1:%d" % port, "--conns",
                             str(conns), "--bytes", size, "--verify", "--seed", str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def intact(snk, out, n):
    try:
        rc = snk.wait(30)
    except subprocess.TimeoutExpired:
        snk.kill()
        return False, "sink still waiting"
    text = open(out).read()
    return rc == 0 and ("%d streams, %d intact" % (n, n)) in text, "sink %s: %s" % (rc, text)


def by_address():
    """A passed socket for --listen's address; READY/STOPPING; a restart."""
    ls = listener()
    port = ls.getsockname()[1]
    snk, up, out = sink(3)
    note = Notify()
    p = Proxy(["--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % up],
              [ls], notify=note)
    ready = note.wait("READY=1")
    result("READY=1 on NOTIFY_SOCKET", ready, "got %s; %s" % (note.got, p.text()))
    m = p.wait_line(r"listening on 127\.0\.0\.1:(\d+) \(.*socket from systemd")
    result("it says it took the socket from systemd, on the passed port",
           m and int(m.group(1)) == port, p.text())
    src = source(port, 3, "6M", 21)
    rc = src.wait(60)
    result("3 verified streams through the passed socket", rc == 0, src.stdout.read())
    rc = p.stop()
    result("STOPPING=1 at SIGTERM, after READY=1", note.wait("STOPPING=1") and
           "READY=1" in note.got[0], "got %s" % note.got)
    result("exit 0, pool balanced", rc == 0 and re.search(
        r'"pool_bufs":(\d+),"pool_free":\1[,}]', p.text()), "exit %s: %s" % (rc, p.text()[-400:]))
    ok, why = intact(snk, out, 3)
    result("3 streams intact at the upstream", ok, why)
    # the proxy is gone, the socket is not: clients get in (the kernel's
    # backlog), wait with more than socket buffers hold, and the next proxy
    # (a restart) serves them
    snk, up, out = sink(3)
    src = source(port, 3, "96M", 22)
    time.sleep(0.5)
    waited = src.poll() is None
    p2 = Proxy(["--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % up], [ls])
    rc = src.wait(60)
    result("a restart on the same socket: clients of the gap wait, then are served (%s)" %
           ("they waited" if waited else "did not wait"), rc == 0 and waited, src.stdout.read())
    ok, why = intact(snk, out, 3)
    result("their 3 streams intact at the upstream", ok, why)
    p2.stop()
    ls.close()


def by_name():
    """--config: the frontend named like the socket (LISTEN_FDNAMES) takes it,
    whatever its listen says; a second socket for nobody is closed."""
    ls, stray = listener(), listener()
    port = ls.getsockname()[1]
    snk, up, out = sink(2)
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", dir=TMP, delete=False)
    conf.write("[frontend other]\nlisten 127.0.0.1:0\nupstream 127.0.0.1:%d\n"
               "[frontend web]\nlisten 127.0.0.1:0\nupstream 127.0.0.1:%d\n" % (up, up))
    conf.close()
    p = Proxy(["--config", conf.name], [stray, ls], names=["stray", "web"])
    m = p.wait_line(r"listening on 127\.0\.0\.1:(\d+) \(frontend web,.*socket from systemd")
    result("by name: frontend web took the socket named web", m and int(m.group(1)) == port,
           p.text())
    result("a socket for no frontend: named and closed",
           p.wait_line(r"LISTEN_FDS: fd 3 \(127\.0\.0\.1:%d, stray\) is for no frontend: closed"
                       % stray.getsockname()[1]) is not None, p.text())
    m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(frontend other,", p.text())
    result("frontend other binds its own port", m and int(m.group(1)) not in
           (port, stray.getsockname()[1]), p.text())
    src = source(port, 2, "2M", 23)
    rc = src.wait(60)
    ok, why = intact(snk, out, 2)
    result("2 verified streams through it", rc == 0 and ok, why)
    p.stop()
    ls.close()
    stray.close()
    os.unlink(conf.name)


def not_ours():
    """LISTEN_PID of another process: the sockets are not for us; readiness
    still comes once the proxy's own listener accepts."""
    ls = listener()
    note = Notify()
    p = Proxy(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"], [ls],
              listen_pid=1, notify=note)
    ready = note.wait("READY=1")
    m = re.search(r"listening on 127\.0\.0\.1:(\d+) \((.*)\)", p.text())
    accepts = False
    if ready and m:
        try:
            socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=2).close()
            accepts = True
        except OSError:
            pass
    result("LISTEN_PID not ours: ignored, it binds its own", m and int(m.group(1)) !=
           ls.getsockname()[1] and "systemd" not in m.group(2), p.text())
    result("READY=1 when its own listener accepts", ready and accepts, "%s %s" % (note.got,
                                                                                  accepts))
    p.stop()
    ls.close()


def main():
    try:
        by_address()
        by_name()
        not_ours()
    finally:
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        shutil.rmtree(TMP, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
