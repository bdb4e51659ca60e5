#!/usr/bin/env python3
"""Clients that check the example servers (examples/) byte for byte.

  lines PORT N [--stall S]   sends N request lines (random lengths 0..1024,
                             pipelined) and checks every answer: "<len> <LINE
                             IN UPPER CASE>\\n"; with --stall, reads nothing
                             for S seconds first (the server must wait)
  echo PORT BYTES [--stall S] sends BYTES of a pattern while reading nothing
                             for S seconds, then reads it all back and checks
                             it

Prints one line "ok ..." or "BAD ..." and exits 0 or 1. Every socket has a
timeout, so a wedged server fails the check instead of hanging it.
"""
import random
import socket
import sys
import threading
import time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    return s


def pattern(n):
    base = bytes((i * 7 + 3) % 251 for i in range(65521))
    return (base * (n // len(base) + 1))[:n]


def run_sender(sock, data, errors):
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError as e:
        errors.append(str(e))


def recv_all(sock, limit):
    chunks, got = [], 0
    while True:
        b = sock.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
        got += len(b)
        if got > limit:
            break
    return b"".join(chunks)


def check(name, sock, data, expect, stall):
    errors = []
    t = threading.Thread(target=run_sender, args=(sock, data, errors))
    t.start()
    time.sleep(stall)
    got = recv_all(sock, len(expect) + 1)
    t.join(60)
    if errors or t.is_alive():
        print("BAD %s: sending failed: %s" % (name, errors or "sender stuck"))
        return 1
    if got != expect:
        i = next((k for k in range(min(len(got), len(expect))) if got[k] != expect[k]),
                 min(len(got), len(expect)))
        print("BAD %s: %d of %d bytes back, first difference at %d" %
              (name, len(got), len(expect), i))
        return 1
    print("ok %s: %d bytes back intact" % (name, len(got)))
    return 0


def main():
    args = sys.argv[1:]
    stall = 0.0
    if "--stall" in args:
        i = args.index("--stall")
        stall = float(args[i + 1])
        del args[i:i + 2]
    kind, port, n = args[0], int(args[1]), int(args[2])
    sock = connect(port)
    if kind == "echo":
        data = pattern(n)
        return check("echo", sock, data, data, stall)
    rnd = random.Random(n)
    reqs, answers = [], []
    for _ in range(n):
        line = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 -")
                     for _ in range(rnd.randrange(0, 1025)))
        reqs.append(line + b"\n")
        answers.append(b"%d %s\n" % (len(line), line.upper()))
    return check("lines", sock, b"".join(reqs), b"".join(answers), stall)


if __name__ == "__main__":
    sys.exit(main())
