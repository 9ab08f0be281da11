"""The worker's own loop (gateway/edge/gw_h1.c, gw_h1_run), held where an
edge-triggered loop loses things: every place it stops reading before the
socket is drained must come back to it without a new edge, and no client may
keep the worker to itself. One worker (--threads 1: every connection on the
same loop), buys held for the spool's fsync (answered from libuv's thread
pool, through uv_run inside the loop):

  - backpressure: ~3,000 pipelined requests (sale infos and held buys, ~190
    KB) sent while the client reads nothing for a second (the answers fill the
    socket, reading stops, the client's send blocks), then read: every answer,
    in order;
  - the same, the client's FIN right behind its last request: every answer,
    then the close;
  - resets: connections that reset with held buys and a full read buffer of
    pipelined requests behind them, and others that reset with answers
    unsent; then the worker still serves;
  - fairness: two connections stream pipelined requests as fast as they can
    while a third sends 100 requests one at a time: each of the third's is
    answered, the streams too. A hang guard only: the bound itself (one
    recv(2) of at most 8 KiB per connection per round of the posted list) is
    by construction, and a Python client cannot keep a socket full enough to
    show a loop that drained it to EAGAIN;
  - afterwards the worker thread idles: it uses under 0.5 s of CPU in 2 s with
    nothing to do (a loop that spins on a posted connection, a readable
    listening socket or libuv's fd would use ~2 s).

Bounded: loopback, one gateway, ~60 connections, ~10 s. Timeouts are hang
guards; the one resource bound is the idle CPU, at a quarter of a spin.
"""
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")

GUARD_S = float(os.environ.get("FG_IT_GUARD_S", "10"))  # hang guard per read
SALE = "lp"


def get_req(path="/v1/sales/" + SALE):
    return ("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode()


def buy_req(user):
    body = json.dumps({"user_id": user, "qty": 1}).encode()
    return (b"POST /v1/sales/%s/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (SALE.encode(), len(body))) + body


class Reader:
    """Answers off one socket, Content-Length framed, in order."""

    def __init__(self, s):
        self.s = s
        self.buf = b""

    def answer(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        n = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
        while len(rest) < n:
            self._more()
            rest = self.buf.split(b"\r\n\r\n", 1)[1]
        self.buf = rest[n:]
        return int(lines[0].split(" ")[1]), rest[:n]

    def eof(self):
        """True if the peer closes with nothing more to read."""
        try:
            return self.buf == b"" and self.s.recv(1) == b""
        except OSError:
            return False

    def _more(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise ConnectionError("closed with %r unread" % self.buf[:100])
        self.buf += d


def pipeline_case(name, n, fin):
    """n requests (a held buy every third) in one stream the client does not
    read for a second; then every answer, in order."""
    s = socket.create_connection(("127.0.0.1", g.port), timeout=GUARD_S)
    kinds = [(i % 3 == 0) for i in range(n)]
    data = b"".join(buy_req("%s-%d" % (name, i)) if b else get_req() for i, b in enumerate(kinds))

    def send():
        try:
            s.sendall(data)
            if fin:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=send)
    t.start()
    time.sleep(1.0)  # reading nothing: the gateway's output fills the socket
    r = Reader(s)
    problems = []
    try:
        for i, is_buy in enumerate(kinds):
            st, body = r.answer()
            want = 202 if is_buy else 200
            if st != want:
                problems.append("answer %d of %d: %d %r, want %d" % (i, n, st, body[:100], want))
                break
        if fin and not r.eof():
            problems.append("no close after the last answer")
    except (OSError, ConnectionError) as e:
        problems.append("after %d of %d answers: %s" % (i, n, e))
    t.join(GUARD_S)
    s.close()
    check(not problems, "%s: %s" % (name, "; ".join(problems)))
    if not problems:
        print("ok", name, flush=True)


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def worker_cpu_s(pid):
    """CPU seconds of the worker thread (fg-worker-0)."""
    tck = os.sysconf("SC_CLK_TCK")
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                if f.read().strip() != "fg-worker-0":
                    continue
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                p = f.read().rsplit(")", 1)[1].split()
            return (int(p[11]) + int(p[12])) / tck
        except OSError:
            pass
    return None


g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
            "--set", "spool.durability=fsync", threads=1).start()
try:
    g.put_sale(SALE, stock=1000000, per_user_limit=1000)

    pipeline_case("backpressure.pipeline-unread", 3000, fin=False)
    pipeline_case("backpressure.pipeline-unread-then-fin", 2000, fin=True)

    # Resets: with held buys and a full buffer of pipelined requests behind
    # them (reading stopped), and with answers unsent (the client reads none).
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=GUARD_S)
        s.sendall(buy_req("rst-%d" % i) + get_req() * 300)
        socks.append(s)
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=GUARD_S)
        s.sendall(get_req() * 2000)
        socks.append(s)
    time.sleep(0.3)
    for s in socks:
        reset(s)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=GUARD_S)
    s.sendall(get_req() + buy_req("after-resets"))
    r = Reader(s)
    try:
        eq((r.answer()[0], r.answer()[0]), (200, 202), "resets: the worker serves afterwards")
    except (OSError, ConnectionError) as e:
        check(False, "resets: the worker serves afterwards: %s" % e)
    s.close()

    # Fairness: two streams of pipelined requests, and one request at a time.
    stop = [False]
    streamed = [0, 0]

    def hog(k):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=GUARD_S)
        chunk = get_req() * 200

        def rd():
            try:
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        return
                    streamed[k] += d.count(b"HTTP/1.1 200")
            except OSError:
                pass

        rt = threading.Thread(target=rd, daemon=True)
        rt.start()
        try:
            while not stop[0]:
                s.sendall(chunk)
        except OSError:
            pass
        reset(s)

    hogs = [threading.Thread(target=hog, args=(k,), daemon=True) for k in range(2)]
    for t in hogs:
        t.start()
    time.sleep(0.3)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=GUARD_S)
    r = Reader(s)
    p = []
    try:
        for i in range(100):
            s.sendall(get_req())
            st, _ = r.answer()
            if st != 200:
                p.append("request %d: %d" % (i, st))
                break
    except (OSError, ConnectionError) as e:
        p.append("request %d: %s" % (i, e))
    s.close()
    stop[0] = True
    for t in hogs:
        t.join(GUARD_S)
    if min(streamed) == 0:
        p.append("a stream got no answer meanwhile: %r" % streamed)
    check(not p, "fairness.one-at-a-time-beside-two-streams: %s" % "; ".join(p))
    if not p:
        print("ok fairness.one-at-a-time-beside-two-streams (streams answered %r)" % streamed,
              flush=True)

    # Idle: nothing posted, nothing to accept, libuv's fd quiet.
    time.sleep(1.5)  # lingering closes and the held buys' answers settle
    c0 = worker_cpu_s(g.proc.pid)
    time.sleep(2.0)
    c1 = worker_cpu_s(g.proc.pid)
    if c0 is None or c1 is None:
        check(False, "idle: no fg-worker-0 thread found")
    else:
        check(c1 - c0 < 0.5, "idle: the worker used %.2f s of CPU in 2 s with nothing to do" %
              (c1 - c0))
        print("idle worker CPU over 2 s: %.2f s" % (c1 - c0), flush=True)

    check(g.alive(), "gateway alive at the end")
    eq(g.get("/healthz").status, 200, "healthz at the end")
finally:
    rc = g.stop()
    g.cleanup()
eq(rc, 0, "clean exit")
finish()
