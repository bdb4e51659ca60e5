#!/usr/bin/env python3
"""sheaf proxy --metrics (metrics.sh): the Prometheus endpoint.

Runs a sink (--verify --echo) and `$SHEAF proxy --metrics` with two event
loops and two upstreams, one of them dead, sends verified echo streams
through it, and checks the exposition text against what was sent: bytes
each way per frontend, connections, per-upstream connects, failures and
state, the library's totals and histograms; the answer's size shows up as
written bytes in the next scrape. Then: 404 for other paths and methods,
400/431/408 for malformed, oversized and unfinished requests, a flood of
connections past the endpoint's limit; all of that during a verified
transfer, which must arrive intact, with the metrics still served after.
promtool checks the text where it is installed. Prints "ok CASE" or
"FAIL CASE: why" per case ("skip CASE: why" without promtool).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SHEAF = os.environ["SHEAF"]
TMP = tempfile.mkdtemp(prefix="sheaf-e2e-metrics.")
failed = 0
procs = []


def result(name, ok, why=""):
    global failed
    if ok:
        print("ok metrics: " + name, flush=True)
    else:
        failed += 1
        print("FAIL metrics: %s: %s" % (name, why), flush=True)


def start(args, pattern, stream="stdout"):
    """Starts sheaf ARGS; waits for a line matching pattern; (proc, match, log)."""
    log = tempfile.NamedTemporaryFile("w+", prefix="log.", dir=TMP, delete=False)
    p = subprocess.Popen([SHEAF] + args, stdout=log if stream == "stdout" else subprocess.DEVNULL,
                         stderr=log if stream == "stderr" else subprocess.DEVNULL)
    procs.append(p)
    end = time.time() + 10
    while time.time() < end:
        with open(log.name) as f:
            m = re.search(pattern, f.read())
        if m:
            return p, m, log.name
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("sheaf %s did not start: %s" % (" ".join(args), open(log.name).read()))


def http(port, raw, timeout=10):
    """Sends raw bytes, reads until EOF: (status, head, body) or (None, why, b"")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except OSError as e:
        return None, str(e), b""
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d+) ", head)
    return (int(m.group(1)) if m else None), head.decode(errors="replace"), body


def get(port, path="/metrics"):
    return http(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())


def parse(text):
    """Exposition text -> {'name{a="b",...}': value} (labels as written)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        out[key] = float(val)
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def source(port, conns, size, seed, extra=()):
    return subprocess.Popen([SHEAF, "source", "--connect", "127.0.0.1:%d" % port, "--conns",
                             str(conns), "--bytes", size, "--verify", "--echo", "--seed", str(seed)]
                            + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def sent_by(src):
    """The bytes a finished source sent: its 'N connections, B bytes' line."""
    out = src.stdout.read()
    m = re.search(r"(\d+) connections, (\d+) bytes", out)
    return (int(m.group(2)) if m else None), out


def exact_values(mport, pport, up, dead):
    """Verified echo streams, then one scrape: every value equals what was sent."""
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    src = source(pport, 4, "8M", 3)
    rc = src.wait(120)
    n, out = sent_by(src)
    result("4 verified echo streams through the proxy", rc == 0 and n, "source %s: %s" % (rc, out))
    time.sleep(0.5)  # the pairs close
    st, head, body = http(mport, req)
    result("GET /metrics: 200, text/plain version 0.0.4",
           st == 200 and "text/plain; version=0.0.4" in head, "%s %s" % (st, head))
    v = parse(body.decode())
    fe = '{frontend="main"}'
    checks = [
        ("frontend received bytes = bytes the clients sent",
         v.get("sheaf_frontend_received_bytes_total" + fe), n),
        ("frontend sent bytes = the echo the clients got",
         v.get("sheaf_frontend_sent_bytes_total" + fe), n),
        ("frontend connections total", v.get("sheaf_frontend_connections_total" + fe), 4),
        ("frontend current connections", v.get("sheaf_frontend_current_connections" + fe), 0),
        ("no refusals", v.get('sheaf_frontend_refused_connections_total{frontend="main",'
                              'reason="no_upstream"}'), 0),
        ("all bytes received: both ways, and this request",
         v.get("sheaf_received_bytes_total"), 2 * n + len(req)),
        ("all bytes sent: both ways", v.get("sheaf_sent_bytes_total"), 2 * n),
        ("accepted: 4 clients and this scrape", v.get("sheaf_accepted_connections_total"), 5),
        ("open: this scrape only", v.get("sheaf_open_connections"), 1),
        ("pool buffers all free", v.get("sheaf_pool_free_buffers"),
         v.get("sheaf_pool_buffers")),
        ("two event loops", v.get('sheaf_info{io="%s",threads="2"}' % (
            re.search(r'sheaf_info\{io="(\w+)"', body.decode()) or [None, "?"])[1]), 1),
    ]
    u = '{frontend="main",upstream="127.0.0.1:%d"}'
    checks += [
        ("live upstream: up", v.get("sheaf_upstream_up" + u % up), 1),
        ("live upstream: one connection per client",
         v.get("sheaf_upstream_connections_total" + u % up), 4),
        ("live upstream: no failure", v.get("sheaf_upstream_connect_failures_total" + u % up), 0),
        ("live upstream: none open", v.get("sheaf_upstream_current_connections" + u % up), 0),
        ("dead upstream: down", v.get("sheaf_upstream_up" + u % dead), 0),
        ("dead upstream: every connect to it failed",
         v.get("sheaf_upstream_connect_failures_total" + u % dead),
         v.get("sheaf_upstream_connections_total" + u % dead)),
        ("library: connects = clients + the failed ones", v.get("sheaf_connects_total"),
         4 + (v.get("sheaf_upstream_connections_total" + u % dead) or -1)),
    ]
    for what, got, want in checks:
        result("%s (%s)" % (what, got), got is not None and got == want, "want %s" % want)
    fails = v.get("sheaf_upstream_connect_failures_total" + u % dead) or 0
    result("dead upstream tried at least once (%d)" % fails, fails >= 1)
    for h, total, bufs in (("recv", "sheaf_recv_completions_total", "sheaf_recv_buffers_total"),
                           ("send", "sheaf_send_completions_total", "sheaf_send_buffers_total")):
        name = "sheaf_%s_buffers_per_completion" % h
        les = ["1", "2", "4", "8", "16", "32", "64", "128", "256", "+Inf"]
        b = [v.get('%s_bucket{le="%s"}' % (name, le)) for le in les]
        ok = None not in b and all(x <= y for x, y in zip(b, b[1:])) and \
            b[-1] == v.get(name + "_count") == v.get(total) and \
            v.get(name + "_sum") == v.get(bufs) and v.get(total, 0) > 0
        result("%s histogram: cumulative buckets, count = completions, sum = buffers" % h, ok,
               "buckets %s count %s sum %s %s %s" % (b, v.get(name + "_count"),
                                                    v.get(name + "_sum"), v.get(total), v.get(bufs)))
    result("enter calls and uptime counted", v.get("sheaf_enter_calls_total", 0) > 0 and
           v.get("sheaf_uptime_seconds", 0) > 0, "%s %s" % (v.get("sheaf_enter_calls_total"),
                                                        v.get("sheaf_uptime_seconds")))
    answer = len(head) + 4 + len(body)
    st2, _, body2 = http(mport, req)
    v2 = parse(body2.decode())
    result("the first answer's %d bytes are the written bytes of the second" % answer,
           st2 == 200 and v2.get("sheaf_written_bytes_total") == answer,
           "%s written %s" % (st2, v2.get("sheaf_written_bytes_total")))
    return body


def promtool(text):
    tool = shutil.which("promtool")
    if not tool:
        print("skip metrics: promtool check metrics: promtool not installed "
              "(Debian: apt-get install prometheus)", flush=True)
        return
    p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True)
    result("promtool check metrics: no problem", p.returncode == 0 and not p.stdout.strip()
           and not p.stderr.strip(), (p.stdout + p.stderr).decode()[:500])


def bad_requests(mport):
    """Each kind of request that is not GET /metrics, and its answer."""
    for what, raw, want in (
            ("another path", b"GET / HTTP/1.1\r\n\r\n", 404),
            ("a longer path", b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
            ("another method", b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404),
            ("a query string is fine", b"GET /metrics?x=1 HTTP/1.0\n\n", 200),
            ("garbage", b"\x16\x03\x01 hello\r\n\r\n", 400),
            ("no version", b"GET /metrics\r\n\r\n", 400),
            ("lower-case method", b"get /metrics HTTP/1.1\r\n\r\n", 400),
            ("a NUL byte", b"GET /met\x00rics HTTP/1.1\r\n\r\n", 400),
            ("over 4 KiB of head", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000, 431)):
        st, head, _ = http(mport, raw)
        result("%s: %s" % (what, want), st == want, "got %s: %s" % (st, head[:80]))


def unfinished(mport):
    """Half a request: 408 after 5 s, and the connection closes."""
    t0 = time.time()
    st, head, _ = http(mport, b"GET /metr", timeout=15)
    dt = time.time() - t0
    result("half a request: 408 after %.1f s" % dt, st == 408 and 4.5 < dt < 8, "%s %s" % (st, head))


def flood(mport, held, n=40):
    """More connections than the endpoint keeps (16, `held` of them taken
    already): the rest are closed at once."""
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", mport), timeout=5))
        except OSError:
            pass
    time.sleep(0.3)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    for s in socks:
        s.close()
    result("%d idle connections at once, %d open already: %d closed at once, the rest kept"
           % (n, held, closed), closed == n - 16 + held, "want %d" % (n - 16 + held))


def undisturbed(mport, pport):
    """Bad requests during a verified transfer: it arrives whole."""
    src = source(pport, 4, "128M", 5, ["--write-size", "4K"])
    time.sleep(0.2)
    half = threading.Thread(target=unfinished, args=(mport,))
    half.start()
    time.sleep(0.2)
    bad_requests(mport)
    flood(mport, 1)
    alive = src.poll() is None
    half.join()
    rc = src.wait(120)
    n, out = sent_by(src)
    result("a verified transfer beside them: intact (%s while they ran)" %
           ("still running" if alive else "already done"), rc == 0 and n, "source %s: %s" % (rc, out))
    st, _, body = get(mport)
    v = parse(body.decode()) if st == 200 else {}
    result("metrics served after them: 200, 8 clients in all", st == 200 and
           v.get('sheaf_frontend_connections_total{frontend="main"}') == 8, "%s %s" % (
               st, v.get('sheaf_frontend_connections_total{frontend="main"}')))


def main():
    dead = free_port()
    sink, m, _ = start(["sink", "--listen", "127.0.0.1:0", "--verify", "--echo"],
                       r"listening on 127\.0\.0\.1:(\d+)", "stderr")
    up = int(m.group(1))
    proxy, _, log = start(["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:%d" % dead,
                           "--upstream", "127.0.0.1:%d" % up, "--metrics", "127.0.0.1:0",
                           "--threads", "2", "--buf-size", "1K"],
                          r"metrics at http://127\.0\.0\.1:(\d+)/metrics")
    text = open(log).read()
    pport = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", text).group(1))
    mport = int(re.search(r"metrics at http://127\.0\.0\.1:(\d+)/", text).group(1))
    body = exact_values(mport, pport, up, dead)
    promtool(body)
    undisturbed(mport, pport)
    proxy.send_signal(signal.SIGTERM)
    rc = proxy.wait(20)
    out = open(log).read()
    m = re.search(r'"pool_bufs":(\d+),"pool_free":(\d+)', out)
    result("the proxy stops clean, every buffer back", rc == 0 and m and m.group(1) == m.group(2),
           "exit %s: %s" % (rc, out[-300:]))
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(TMP, ignore_errors=True)
