#!/usr/bin/env python3
"""Test peers for the sheaf end-to-end tests: upstream servers and clients.

Servers (thread per connection, run until killed; each listens on
--host:--port, port 0 = any free one, and writes the bound port to
--port-file, atomically via rename).  They print one line per connection on
stdout: "conn N ok ...", "conn N BAD ..." (a byte or length that was wrong),
"conn N probe" (closed without sending a byte),
"conn N held" / "conn N closed ...".

  early      reads the first --read-first bytes of the upload, then stops
             reading while it sends --answer bytes (the answer stream: byte
             i is i % 251), then reads the rest of the upload until EOF and
             closes; like a server refusing a large upload.  --expect N:
             the upload must be N bytes long.
  echo       recv 64K, sendall it back, until EOF; then close.
  blackhole  accepts and never reads; holds every socket until killed.
  split      reads the first 8 bytes: b"STALL..." -> never reads again
             (held until killed); anything else -> echo, like `echo`.
  readclose  reads --read-first bytes, then closes: --close reset (SO_LINGER
             0: RST) or plain (close(); with unread data the kernel resets
             too, but through the ordinary close path).
  slow       a slow echo: tiny receive buffer (--rcvbuf), recv --chunk
             bytes, sleep --delay seconds, send them back.
  banner     prints "conn N accepted" at once, sends --name and a newline,
             then reads until EOF and closes ("conn N closed"); which
             upstream a client reached, and how many connections each got.

Every upload a client of this file sends starts with an 8-byte header,
b"SHPY" + key (u32 LE), followed by a pattern stream (a pseudo-random
1 MiB + 7 period, rotated by key), so servers check each upload byte for byte
(early, readclose, split echo: "BAD" on the first wrong byte).  A stalled
pusher's header is b"STALL\\0\\0\\0".

Clients:

  client     --conns N connections at once, each uploading --upload bytes
             while it reads the answer concurrently; the answer must be
             exactly the `early` answer stream of --answer bytes
             (--expect early) or the upload itself (--expect echo).  Prints
             "client: K/N ok ... in S s" and exits 0 only if every
             connection verified; after --timeout seconds (or when no
             connection moved a byte for --stall seconds) it exits 1 naming
             every unfinished connection and how far it got.
  push       --conns N connections, each writes --bytes (header + pattern,
             or --prefix STALL) and then reads until EOF or error; exits 0
             when all ended (however), printing what each sent and how it
             ended.  --progress-file: total bytes sent so far, rewritten
             every 0.2 s.
  names      --conns N connections one after the other (from --bind ADDR,
             or connection i from the i-th of ADDR,ADDR,... in turn), each reading a banner line before the next opens; prints
             "names: X Y ..." (one per connection, "-" where none came) and
             closes them all at the end.  --plan "10,+1.5,5": 10 connections,
             a 1.5 s pause, 5 more (timed in one process: no start-up delay
             between the steps).
"""

import argparse
import os
import random
import socket
import struct
import sys
import threading
import time

PERIOD = (1 << 20) + 7          # pattern period (odd, not a buffer multiple)
CHUNK = 1 << 16                 # largest slice compared or sent at once
RECV = 1 << 16
HDR = 8

_BASE = random.Random(0x5EAF).randbytes(PERIOD)
BASE2 = _BASE + _BASE[: 4 * CHUNK]
ANSWER = bytes(i % 251 for i in range(251)) * (4 * CHUNK // 251 + 2)

out_lock = threading.Lock()


def say(*a):
    with out_lock:
        print(*a, flush=True)


def size(text):
    """'16M', '256K', '1G', '123' -> bytes."""
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text[:-1] if mult > 1 else text) * mult


def header(key):
    return b"SHPY" + struct.pack("<I", key)


STALL_HDR = b"STALL\0\0\0"


def upload_bytes(hdr, key, off, n):
    """n (<= CHUNK) bytes of the upload stream with this header from offset off."""
    out = b""
    if off < HDR:
        k = min(n, HDR - off)
        out = hdr[off:off + k]
        off, n = off + k, n - k
    if n:
        s = (key + off - HDR) % PERIOD
        out += BASE2[s:s + n]
    return out


def answer_bytes(off, n):
    s = off % 251
    return ANSWER[s:s + n]


def first_diff(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i
    return min(len(a), len(b))


class Stream:
    """Checks received bytes against an expected stream, expect(off, n)."""

    def __init__(self, expect):
        self.expect = expect
        self.off = 0
        self.bad = None

    def feed(self, data):
        if self.bad:
            self.off += len(data)
            return
        pos = 0
        while pos < len(data):
            n = min(len(data) - pos, CHUNK)
            want = self.expect(self.off, n)
            got = data[pos:pos + n]
            if got != want:
                i = first_diff(got, want)
                self.bad = "byte %d is %d, want %d" % (self.off + i, got[i], want[i])
                self.off += len(data) - pos
                return
            pos += n
            self.off += n


class Upload:
    """Server side check of an upload: header, then the keyed pattern."""

    def __init__(self):
        self.hdr = b""
        self.stream = None
        self.bytes = 0
        self.bad = None

    def feed(self, data):
        self.bytes += len(data)
        if self.stream is None:
            need = HDR - len(self.hdr)
            self.hdr += data[:need]
            data = data[need:]
            if len(self.hdr) < HDR:
                return
            if self.hdr[:4] != b"SHPY":
                self.bad = "unknown upload header %r" % self.hdr
                self.stream = Stream(lambda off, n: b"")
                self.stream.bad = self.bad
                return
            key = struct.unpack("<I", self.hdr[4:])[0]
            self.stream = Stream(lambda off, n: upload_bytes(self.hdr, key, off, n))
            self.stream.off = HDR
        self.stream.feed(data)
        if self.stream.bad and not self.bad:
            self.bad = "upload " + self.stream.bad


def recv_some(c, n=RECV):
    try:
        return c.recv(n)
    except OSError:
        return b""


# ---------------------------------------------------------------- servers

held = []          # sockets a server keeps open (never read) until killed


def serve_early(c, n, a):
    up = Upload()
    while up.bytes < a.read_first:
        d = recv_some(c, min(RECV, a.read_first - up.bytes))
        if not d:
            break
        up.feed(d)
    if up.bytes == 0:
        say("conn %d probe" % n)
        return
    sent = 0
    try:
        while sent < a.answer:
            k = min(CHUNK, a.answer - sent)
            c.sendall(answer_bytes(sent, k))
            sent += k
    except OSError as e:
        say("conn %d BAD answer cut at %d of %d: %s" % (n, sent, a.answer, e))
        return
    while True:
        d = recv_some(c)
        if not d:
            break
        up.feed(d)
    if up.bad:
        say("conn %d BAD %s" % (n, up.bad))
    elif a.expect is not None and up.bytes != a.expect:
        say("conn %d BAD upload %d bytes, want %d" % (n, up.bytes, a.expect))
    else:
        say("conn %d ok upload=%d answer=%d" % (n, up.bytes, sent))


def echo_loop(c, n, first=b"", up=None):
    total = 0
    data = first
    try:
        while True:
            if data:
                if up:
                    up.feed(data)
                c.sendall(data)
                total += len(data)
            data = c.recv(RECV)
            if not data:
                break
    except OSError as e:
        say("conn %d BAD echo ended after %d bytes: %s" % (n, total, e))
        return
    if total == 0:
        say("conn %d probe" % n)
    elif up and up.bad:
        say("conn %d BAD %s" % (n, up.bad))
    else:
        say("conn %d ok echoed=%d" % (n, total))


def serve_echo(c, n, a):
    echo_loop(c, n)


def serve_blackhole(c, n, a):
    held.append(c)
    say("conn %d held" % n)
    return "keep"


def serve_split(c, n, a):
    first = b""
    while len(first) < HDR:
        d = recv_some(c, HDR - len(first))
        if not d:
            break
        first += d
    if first.startswith(b"STALL"):
        held.append(c)
        say("conn %d held" % n)
        return "keep"
    echo_loop(c, n, first, Upload())


def serve_readclose(c, n, a):
    up = Upload()
    while up.bytes < a.read_first:
        d = recv_some(c, min(RECV, a.read_first - up.bytes))
        if not d:
            break
        up.feed(d)
    if up.bytes == 0:
        say("conn %d probe" % n)
        return
    if a.close == "reset":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    say("conn %d %s closed (%s) after %d bytes" % (n, "BAD" if up.bad else "ok", a.close,
                                                   up.bytes) + (": " + up.bad if up.bad else ""))


def serve_slow(c, n, a):
    total = 0
    up = Upload()
    try:
        while True:
            d = c.recv(a.chunk)
            if not d:
                break
            up.feed(d)
            total += len(d)
            time.sleep(a.delay)
            c.sendall(d)
    except OSError as e:
        say("conn %d BAD slow echo ended after %d bytes: %s" % (n, total, e))
        return
    if total == 0:
        say("conn %d probe" % n)
    elif up.bad:
        say("conn %d BAD %s" % (n, up.bad))
    else:
        say("conn %d ok echoed=%d" % (n, total))


def serve_banner(c, n, a):
    say("conn %d accepted" % n)
    try:
        c.sendall(a.name.encode() + b"\n")
        while recv_some(c):
            pass
    except OSError:
        pass
    say("conn %d closed" % n)


SERVERS = {"banner": serve_banner, "early": serve_early, "echo": serve_echo, "blackhole": serve_blackhole,
           "split": serve_split, "readclose": serve_readclose, "slow": serve_slow}


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def run_server(a):
    srv = socket.socket(family(a.host))
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.rcvbuf:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    srv.bind((a.host, a.port))
    srv.listen(1024)
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.getsockname()[1])
        os.rename(tmp, a.port_file)
    fn = SERVERS[a.mode]

    def conn(c, n):
        try:
            if fn(c, n, a) == "keep":
                return
        except Exception as e:  # a test peer must report, not die silently
            say("conn %d BAD %s: %s" % (n, type(e).__name__, e))
        try:
            c.close()
        except OSError:
            pass

    n = 0
    while True:
        c, _ = srv.accept()
        threading.Thread(target=conn, args=(c, n), daemon=True).start()
        n += 1


# ---------------------------------------------------------------- clients

class Conn:
    def __init__(self, k):
        self.k = k
        self.sent = 0
        self.got = 0
        self.err = None
        self.ok = False
        self.how = "running"


def run_client(a):
    if a.expect == "early":
        want = a.answer
    else:
        want = a.upload
    conns = [Conn(k) for k in range(a.conns)]
    start = time.monotonic()

    def one(cs):
        key = (cs.k * 104729 + 17) % PERIOD
        hdr = header(key)
        try:
            s = socket.create_connection((a.host, a.port), timeout=a.timeout)
            s.settimeout(None)
        except OSError as e:
            cs.err = "connect: %s" % e
            return

        def send():
            try:
                while cs.sent < a.upload:
                    n = min(CHUNK, a.upload - cs.sent)
                    s.sendall(upload_bytes(hdr, key, cs.sent, n))
                    cs.sent += n
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                cs.err = cs.err or "send at %d: %s" % (cs.sent, e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        if a.expect == "early":
            chk = Stream(answer_bytes)
        else:
            chk = Stream(lambda off, n: upload_bytes(hdr, key, off, n))
        try:
            while True:
                d = s.recv(RECV)
                if not d:
                    break
                chk.feed(d)
                cs.got += len(d)
                if chk.bad:
                    break
        except OSError as e:
            cs.err = cs.err or "recv at %d: %s" % (cs.got, e)
        t.join()
        s.close()
        if chk.bad:
            cs.err = "answer " + chk.bad
        elif not cs.err and cs.got != want:
            cs.err = "answer %d bytes, want %d" % (cs.got, want)
        cs.ok = cs.err is None

    threads = [threading.Thread(target=one, args=(cs,), daemon=True) for cs in conns]
    for t in threads:
        t.start()
    last, last_move, why = -1, time.monotonic(), None
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        now = time.monotonic()
        moved = sum(cs.sent + cs.got for cs in conns)
        if moved != last:
            last, last_move = moved, now
        if now - start > a.timeout:
            why = "timeout after %.1f s" % a.timeout
        elif a.stall and now - last_move > a.stall:
            why = "stalled: no byte moved for %.1f s" % a.stall
        if why:
            break
    secs = time.monotonic() - start
    nok = sum(cs.ok for cs in conns)
    for cs in conns:
        if cs.ok:
            continue
        state = cs.err or "unfinished"
        say("client: conn %d %s: sent %d/%d, got %d/%d" % (cs.k, state, cs.sent, a.upload,
                                                         cs.got, want))
    say("client: %d/%d ok (%s, upload %d, answer %d each) in %.2f s%s" %
        (nok, a.conns, a.expect, a.upload, want, secs, "; " + why if why else ""))
    sys.stdout.flush()
    os._exit(0 if nok == a.conns and not why else 1)


def run_push(a):
    conns = [Conn(k) for k in range(a.conns)]
    hdr = STALL_HDR if a.prefix == "STALL" else None

    def one(cs):
        key = (cs.k * 7919 + 3) % PERIOD
        h = hdr or header(key)
        try:
            s = socket.create_connection((a.host, a.port), timeout=10)
            s.settimeout(None)
            while cs.sent < a.bytes:
                n = min(CHUNK, a.bytes - cs.sent)
                s.sendall(upload_bytes(h, key, cs.sent, n))
                cs.sent += n
            s.shutdown(socket.SHUT_WR)
            while True:
                d = s.recv(RECV)
                if not d:
                    break
                cs.got += len(d)
            cs.how = "eof"
        except OSError as e:
            cs.how = type(e).__name__

    threads = [threading.Thread(target=one, args=(cs,), daemon=True) for cs in conns]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if a.progress_file:
            tmp = a.progress_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % sum(cs.sent for cs in conns))
            os.rename(tmp, a.progress_file)
        time.sleep(0.2)
    for cs in conns:
        say("push: conn %d sent %d, got %d, ended: %s" % (cs.k, cs.sent, cs.got, cs.how))
    if a.progress_file:
        with open(a.progress_file + ".tmp", "w") as f:
            f.write("%d\n" % sum(cs.sent for cs in conns))
        os.rename(a.progress_file + ".tmp", a.progress_file)
    return 0


def read_line(s):
    line = b""
    try:
        while not line.endswith(b"\n"):
            d = s.recv(64)
            if not d:
                break
            line += d
    except OSError:
        pass
    return line.decode(errors="replace").strip() or "-"


def name_one(a, names):
    s = socket.socket(family(a.host))
    s.settimeout(a.timeout)
    try:
        if a.bind:
            binds = a.bind.split(",")
            s.bind((binds[len(names) % len(binds)], 0))
        s.connect((a.host, a.port))
        names.append(read_line(s))
    except OSError as e:
        names.append("!" + type(e).__name__)
    return s


def run_names(a):
    socks, names = [], []
    for step in (a.plan or str(a.conns)).split(","):
        if step.startswith("+"):
            time.sleep(float(step[1:]))
        else:
            for _ in range(int(step)):
                socks.append(name_one(a, names))
    say("names: " + " ".join(names))
    for s in socks:
        s.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=sorted(SERVERS) + ["client", "push", "names"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="servers: write the bound port here")
    p.add_argument("--read-first", type=size, default=size("1M"))
    p.add_argument("--answer", type=size, default=size("16M"))
    p.add_argument("--expect", default=None,
                   help="early: upload length (bytes); client: early|echo")
    p.add_argument("--close", choices=["reset", "plain"], default="reset")
    p.add_argument("--rcvbuf", type=size, default=0, help="listener SO_RCVBUF")
    p.add_argument("--chunk", type=size, default=4096, help="slow: bytes per recv")
    p.add_argument("--delay", type=float, default=0.001, help="slow: seconds per recv")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--upload", type=size, default=size("8M"))
    p.add_argument("--bytes", type=size, default=size("200M"), help="push: bytes per conn")
    p.add_argument("--prefix", choices=["STALL"], default=None)
    p.add_argument("--progress-file")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--stall", type=float, default=0.0)
    p.add_argument("--name", default="?", help="banner: the line it sends")
    p.add_argument("--bind", help="names: local address(es) to connect from, a,b,...")
    p.add_argument("--plan", help="names: N (connections) and +S (pause) steps, a,b,...")
    a = p.parse_args()
    if a.mode == "client":
        if a.expect not in ("early", "echo"):
            p.error("client needs --expect early|echo")
        run_client(a)
    elif a.mode == "names":
        return run_names(a)
    elif a.mode == "push":
        if not a.port:
            p.error("push needs --port")
        return run_push(a)
    else:
        if a.expect is not None:
            a.expect = size(a.expect)
        if a.mode == "slow" and not a.rcvbuf:
            a.rcvbuf = 4096
        run_server(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
