#!/usr/bin/env python3
"""PROXY protocol through sheaf proxy, byte for byte (proxy_protocol.sh).

Each case starts an upstream in this process (it records every connection's
bytes until EOF), runs `$SHEAF proxy` in front of it, drives clients, stops
the proxy with SIGTERM and checks what the upstream got and the proxy's
counters. The expected headers are written out from the specification
(haproxy.org/download/2.6/doc/proxy-protocol.txt), not by the code tested.
Prints "ok CASE" or "FAIL CASE: why" per case; exits 1 if any failed.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

SHEAF = os.environ["SHEAF"]
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
failed = 0


class Upstream:
    """Accepts on host, records each connection's bytes until EOF."""

    def __init__(self, host):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ls = socket.socket(fam, socket.SOCK_STREAM)
        self.ls.bind((host, 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            rec = bytearray()
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self.read, args=(c, rec), daemon=True).start()

    def read(self, c, rec):
        c.settimeout(20)
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                with self.lock:
                    rec += b
        except OSError:
            pass
        c.close()

    def got(self, n, timeout=10):
        """The bytes of the first n connections, once all ended or timed out."""
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if len(self.conns) >= n:
                    break
            time.sleep(0.02)
        time.sleep(0.3)
        with self.lock:
            return [bytes(r) for r in self.conns]


class Proxy:
    def __init__(self, listen, upstream, *args):
        self.p = subprocess.Popen([SHEAF, "proxy", "--listen", listen, "--upstream", upstream]
                                  + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        line = self.p.stdout.readline()
        m = re.search(r"listening on (\S+):(\d+) ", line)
        if not m:
            raise RuntimeError("proxy did not start: " + line + self.p.stderr.read())
        self.port = int(m.group(2))

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=20)
        m = re.search(r"stats (\{.*\})", out)
        return json.loads(m.group(1)) if m else {}, self.p.returncode, err


def result(name, ok, why=""):
    global failed
    if ok:
        print("ok " + name)
    else:
        failed += 1
        print("FAIL %s: %s" % (name, why))


def client(host, port, chunks, delay=0.0, read=False):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((host, port))
    for c in chunks:
        s.sendall(c)
        if delay:
            time.sleep(delay)
    src = s.getsockname()[:2]
    s.shutdown(socket.SHUT_WR)
    closed = b""
    try:
        closed = s.recv(1)
    except OSError:
        pass
    s.close()
    return src, closed


def v2(fam, src, dst, sport, dport):
    if fam == socket.AF_INET:
        body = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack("!HH", sport, dport)
        return SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body
    body = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack("!HH", sport, dport)
    return SIG + b"\x21\x21" + struct.pack("!H", len(body)) + body


def send_cases():
    payload = bytes(range(256)) * 4096  # 1 MiB behind the header
    for host, fam, tag in (("127.0.0.1", socket.AF_INET, "TCP4"), ("::1", socket.AF_INET6, "TCP6")):
        for ver in (1, 2):
            name = "send-proxy-v%d %s" % (ver, "IPv4" if fam == socket.AF_INET else "IPv6")
            up = Upstream(host)
            lh = "[%s]" % host if ":" in host else host
            px = Proxy("%s:0" % lh, "%s:%d" % (lh, up.port),
                       "--send-proxy" if ver == 1 else "--send-proxy-v2")
            (cip, cport), _ = client(host, px.port, [payload])
            got = up.got(1)
            st, rc, err = px.stop()
            if ver == 1:
                want = ("PROXY %s %s %s %d %d\r\n" % (tag, cip, host, cport, px.port)).encode()
            else:
                want = v2(fam, cip, host, cport, px.port)
            result(name, len(got) == 1 and got[0] == want + payload and rc == 0,
                   "upstream got %r... (%d bytes), want %r + %d bytes; rc %s %s"
                   % (got[0][:60] if got else None, len(got[0]) if got else 0, want,
                      len(payload), rc, err.strip()[-200:]))


def accept_cases():
    data = os.urandom(300000)
    hdr1 = b"PROXY TCP4 198.51.100.7 203.0.113.9 40000 443\r\n"
    hdr2 = v2(socket.AF_INET6, "2001:db8::1", "2001:db8::2", 51234, 8443)
    cases = [
        # name, client chunks, delay, extra args, expected upstream bytes
        ("accept v1, forward the rest", [hdr1 + data[:1000], data[1000:]], 0, [], data),
        ("accept v2 IPv6 byte by byte", [hdr2[i:i + 1] for i in range(len(hdr2))] + [data],
         0.002, [], data),
        ("accept v1 -> send v2", [hdr1, data], 0, ["--send-proxy-v2"],
         v2(socket.AF_INET, "198.51.100.7", "203.0.113.9", 40000, 443) + data),
        ("accept v2 -> send v1", [hdr2 + data], 0, ["--send-proxy"],
         b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 8443\r\n" + data),
        ("accept v2 LOCAL", [SIG + b"\x20\x00\x00\x00" + data], 0, [], data),
    ]
    for name, chunks, delay, extra, want in cases:
        up = Upstream("127.0.0.1")
        px = Proxy("127.0.0.1:0", "127.0.0.1:%d" % up.port, "--accept-proxy", *extra)
        client("127.0.0.1", px.port, chunks, delay)
        got = up.got(1)
        st, rc, err = px.stop()
        bad = sum(st.get(k, -1) for k in ("pp_malformed", "pp_oversized", "pp_late"))
        result(name, len(got) == 1 and got[0] == want and bad == 0 and rc == 0,
               "upstream got %d connections, first %r... (%d bytes), want %r... (%d); "
               "refusals %d rc %s" % (len(got), got[0][:50] if got else None,
                                      len(got[0]) if got else 0, want[:50], len(want), bad, rc))


def refuse_cases():
    big = SIG + b"\x21\x11" + struct.pack("!H", 600) + bytes(600)
    cases = [
        ("refuse malformed (HTTP)", [b"GET / HTTP/1.0\r\n\r\n"], 0, "pp_malformed"),
        ("refuse malformed v1 (two spaces)", [b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"], 0,
         "pp_malformed"),
        ("refuse malformed v1 (+80)", [b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n"], 0, "pp_malformed"),
        ("refuse truncated (EOF inside)", [b"PROXY TCP4 1.2.3.4"], 0, "pp_malformed"),
        ("refuse oversized v2", [big], 0, "pp_oversized"),
        ("refuse oversized v1 (no CRLF)", [b"PROXY UNKNOWN " + b"x" * 200], 0, "pp_oversized"),
        ("refuse late", [b"PROXY TCP4 1.2.3.4 ", b"5.6.7.8 1 2\r\n"], 1.0, "pp_late"),
    ]
    for name, chunks, delay, counter in cases:
        up = Upstream("127.0.0.1")
        px = Proxy("127.0.0.1:0", "127.0.0.1:%d" % up.port, "--accept-proxy",
                   "--header-timeout", "400")
        try:
            client("127.0.0.1", px.port, chunks, delay)
        except OSError:
            pass  # the proxy closed it: what the case wants
        got = up.got(0, timeout=0.5)
        st, rc, err = px.stop()
        result(name, not got and st.get(counter) == 1 and rc == 0,
               "upstream connections %d, %s = %s, rc %s" % (len(got), counter, st.get(counter), rc))


send_cases()
accept_cases()
refuse_cases()
sys.exit(1 if failed else 0)
