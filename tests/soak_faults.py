#!/usr/bin/env python3
"""Fault-injecting clients for tests/soak.sh; each runs for --seconds, then
prints one line of counts ("KIND: key=value ...") and exits 0 (1 only on a
usage error or when it could not run at all: the soak judges the counts).

  resets    client resets: connect, send --min..--max random bytes (a sheaf
            stream header with id >= 1000 first, so a verifying sink never
            takes one for a stream of sheaf source), sometimes wait a little
            so that the answer is on its way, then close with SO_LINGER
            {1, 0}: the kernel sends RST.  One at a time, --gap seconds apart.
  stall     stalled clients: --conns at a time, each sends (non-blocking)
            until its socket is full or --max bytes went out and then never
            reads; it waits until the proxy closes it (poll: POLLRDHUP,
            POLLHUP or POLLERR; nothing is read), then closes with RST.
            Counts "closed" (by the proxy), "held" (its queues, FIONREAD and
            TIOCOUTQ, did not move for --hold seconds and the proxy did not
            close it) and "slow" (still moving after 2 x --hold: not stalled).
  upstream  for a proxy whose upstreams are servers.py readclose and
            blackhole: --conns workers, each connects, uploads --min..--max
            bytes of servers.py's checked stream (servers.py verifies them)
            while reading whatever comes back, and waits for the end (EOF,
            reset or error), at most --hold seconds.  Counts how each ended;
            "hung" are connections still open after --hold.
"""

import argparse
import fcntl
import os
import random
import select
import socket
import struct
import sys
import termios
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))
import servers  # noqa: E402  (the upload pattern the servers check)

RST = struct.pack("ii", 1, 0)


def connect(a):
    s = socket.create_connection((a.host, a.port), timeout=5)
    s.settimeout(None)
    return s


def reset_close(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    except OSError:
        pass
    s.close()


def run_resets(a, rnd, end):
    n = errs = 0
    junk = rnd.randbytes(1 << 20)
    while time.monotonic() < end:
        try:
            s = connect(a)
        except OSError:
            errs += 1
            time.sleep(a.gap)
            continue
        hdr = b"SHEAFST1" + struct.pack("<QQQ", 1000 + n, 1, 1 << 30)
        k = rnd.randint(a.min, a.max)
        try:
            s.setblocking(False)
            s.send(hdr + junk[:k])        # what fits: no wait on a full socket
        except OSError:
            pass
        if rnd.random() < 0.5:
            time.sleep(rnd.uniform(0, 0.02))
        reset_close(s)
        n += 1
        time.sleep(rnd.uniform(0, 2 * a.gap))
    print("resets: sent=%d connect_errors=%d" % (n, errs), flush=True)


def push_until_full(s, limit, rnd):
    s.setblocking(False)
    sent, chunk = 0, rnd.randbytes(1 << 16)
    while sent < limit:
        try:
            k = s.send(chunk[: min(len(chunk), limit - sent)])
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            return sent, False
        sent += k
    return sent, True


def queued(s):
    """(bytes waiting to be read, bytes not yet acknowledged) on s."""
    def q(req):
        return struct.unpack("i", fcntl.ioctl(s.fileno(), req, b"\0" * 4))[0]
    try:
        return q(termios.FIONREAD), q(termios.TIOCOUTQ)
    except OSError:
        return None


def wait_closed(s, hold, limit):
    """How a client that reads nothing ended: "closed" when the peer closed
    or reset s; "held" when its queues did not move for hold seconds (the
    proxy moved none of its bytes either way and did not close it); "slow"
    when bytes still moved after limit seconds (not stalled: the proxy was
    still taking and sending its bytes, only slowly)."""
    p = select.poll()
    p.register(s, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
    start = moved = time.monotonic()
    last = queued(s)
    while True:
        if p.poll(500):
            return "closed"
        now = time.monotonic()
        q = queued(s)
        if q != last:
            last, moved = q, now
        if now - moved >= hold:
            return "held"
        if now - start >= limit:
            return "slow"


def say_held(s, sent, hold):
    q = queued(s) or (-1, -1)
    try:
        local = s.getsockname()[1]
    except OSError:
        local = 0
    print("stall: port %d held: sent %d, %d unread, %d unacknowledged, nothing moved for %.0f s"
          % (local, sent, q[0], q[1], hold), flush=True)


def run_stall(a, rnd, end):
    lock = threading.Lock()
    cnt = {"stalls": 0, "closed": 0, "held": 0, "slow": 0, "connect_errors": 0, "bytes": 0}

    def worker(seed):
        r = random.Random(seed)
        while time.monotonic() < end:
            try:
                s = connect(a)
            except OSError:
                with lock:
                    cnt["connect_errors"] += 1
                time.sleep(0.2)
                continue
            sent, alive = push_until_full(s, r.randint(a.min, a.max), r)
            # a little more once the proxy's queues filled up: the socket
            # may have had room again in between
            time.sleep(0.2)
            if alive:
                more, alive = push_until_full(s, a.max, r)
                sent += more
            how = wait_closed(s, a.hold, 2 * a.hold) if alive else "closed"
            if how == "held":
                say_held(s, sent, a.hold)
            reset_close(s)
            with lock:
                cnt["stalls"] += 1
                cnt["bytes"] += sent
                cnt[how] += 1

    ts = [threading.Thread(target=worker, args=(rnd.random(),), daemon=True)
          for _ in range(a.conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.0, end - time.monotonic()) + 2 * a.hold + 10)
    print("stall: " + " ".join("%s=%d" % kv for kv in cnt.items()), flush=True)


def one_upstream(a, r, key, cnt, lock):
    """One upload through the proxy; returns how it ended."""
    try:
        s = connect(a)
    except OSError:
        return "connect_error"
    hdr = servers.header(key)
    size = r.randint(a.min, a.max)
    state = {"sent": 0, "err": None}

    def send():
        try:
            while state["sent"] < size:
                n = min(servers.CHUNK, size - state["sent"])
                s.sendall(servers.upload_bytes(hdr, key, state["sent"], n))
                state["sent"] += n
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            state["err"] = e

    t = threading.Thread(target=send, daemon=True)
    t.start()
    s.settimeout(a.hold)
    how = "eof"
    try:
        while s.recv(1 << 16):
            pass
    except socket.timeout:
        how = "hung"
    except ConnectionResetError:
        how = "reset"
    except OSError:
        how = "error"
    reset_close(s)       # also ends a sender still blocked in sendall
    t.join(5)
    with lock:
        cnt["bytes"] += state["sent"]
    return how


def run_upstream(a, rnd, end):
    lock = threading.Lock()
    cnt = {"conns": 0, "eof": 0, "reset": 0, "error": 0, "hung": 0,
           "connect_error": 0, "bytes": 0}

    def worker(seed, w):
        r = random.Random(seed)
        k = 0
        while time.monotonic() < end:
            how = one_upstream(a, r, (w * 1000003 + k * 7919) % servers.PERIOD, cnt, lock)
            k += 1
            with lock:
                cnt["conns"] += 1
                cnt[how] += 1
            if how == "connect_error":
                time.sleep(0.2)

    ts = [threading.Thread(target=worker, args=(rnd.random(), w), daemon=True)
          for w in range(a.conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.0, end - time.monotonic()) + a.hold + 10)
    print("upstream: " + " ".join("%s=%d" % kv for kv in cnt.items()), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["resets", "stall", "upstream"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--conns", type=int, default=2)
    p.add_argument("--min", type=servers.size, default=servers.size("1K"))
    p.add_argument("--max", type=servers.size, default=servers.size("256K"))
    p.add_argument("--gap", type=float, default=0.05, help="resets: mean pause (s)")
    p.add_argument("--hold", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rnd = random.Random(a.seed)
    end = time.monotonic() + a.seconds
    {"resets": run_resets, "stall": run_stall, "upstream": run_upstream}[a.kind](a, rnd, end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
