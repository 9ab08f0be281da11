"""The public listener's connection buffers (gateway/edge/gw_h1.c): a connection holds
a buffer (its parser, the head its request's strings point into, unparsed bytes,
the unsent answer) only while it holds something, and gives it back to its
worker's free list once drained and idle for a sweep (1 s), at once when it
ends; the next connection that reads takes it. Held
here against what a buffer given back or shared too early would do, on one
worker (--threads 1: every connection takes from the same free list), with a
Redis inventory whose DEBUG SLEEP keeps buys suspended while, on other
connections:

  - buys wait for Redis with the start of a next request already behind them
    (pipelined bytes read into the buffer while the request waits);
  - heads cut in the middle, and chunked bodies cut between chunks, complete
    later;
  - pipelined requests (410, a buy that waits, a GET, 410) in one send;
  - buffer sweeps pass while all of that is held;
  - sold-out answers on other connections meanwhile, and connections that
    end after their answer (Connection: close, a malformed request) giving
    back buffers whose parser stopped in another state to the next one;
  - chunked requests whose trailer section says Connection: close (the
    parser then refuses any next message): the next connection's request
    must not inherit that.

Every answer must be its own request's, in order, on its own connection: a
202's sale_id is its URL's and its order reads back with its token under that
sale, an Idempotency-Key replayed later gives the same order, a GET names its
sale, a 410 is sold_out; after two sweeps the idle connections take buffers
again (another's, reused) for pipelined requests and a head cut across two
sweeps; then the sales' held orders are exactly the buys sent, and the exit is
clean (under ASan: no buffer leaked). Bounded: loopback, one gateway, one
redis-server, ~130 connections, ~8 s. No timed assertion: sleeps only order
the steps, timeouts are hang guards.
"""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis  # noqa: E402

need_binary("flashgate")

GUARD_S = float(os.environ.get("FG_IT_GUARD_S", "10"))  # hang guard per read
SALES = ["hb%d" % i for i in range(8)]
SLEEP_S = 2.5  # Redis held this long: every step below happens meanwhile, and at
# least two of the buffer sweeps (gw_h1.c, BUF_SWEEP_MS 1 s: a connection idle
# since the previous one gives its buffer back), which must leave every held one
SWEEP_S = 1.0


class Conn:
    """One raw keep-alive connection and the answers read from it, in order."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def answer(self):
        """(status, headers, body) of the next answer (Content-Length framed)."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body

    def _more(self):
        data = self.s.recv(65536)
        if not data:
            raise ConnectionError("closed with %r unread" % self.buf[:200])
        self.buf += data

    def close(self):
        self.s.close()


def buy(sale, user, key=None, extra=""):
    body = json.dumps({"user_id": user, "qty": 1}).encode()
    h = ("POST /v1/sales/%s/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
         "Content-Length: %d\r\n%s" % (sale, len(body), extra))
    if key:
        h += "Idempotency-Key: %s\r\n" % key
    return (h + "\r\n").encode() + body


def get_sale(sale):
    return ("GET /v1/sales/%s HTTP/1.1\r\nHost: t\r\n\r\n" % sale).encode()


def js(body):
    try:
        return json.loads(body)
    except ValueError:
        return {}


problems = []


def want(cond, what):
    if not cond:
        problems.append(what)


def want_410(ans, what):
    st, _, body = ans
    want(st == 410 and js(body).get("error") == "sold_out", "%s: want 410 sold_out, got %d %r"
         % (what, st, body[:120]))


accepted = {}  # order_id -> (sale, token, (user, key) or None)


def want_202(ans, sale, what, key=None):
    st, hdrs, body = ans
    j = js(body)
    if st != 202 or j.get("sale_id") != sale or not j.get("order_id"):
        problems.append("%s: want 202 for %s, got %d %r" % (what, sale, st, body[:160]))
        return
    want(hdrs.get("location", "").startswith("/v1/orders/%s?" % j["order_id"]),
         "%s: Location %r is not its order %s" % (what, hdrs.get("location"), j["order_id"]))
    want(j["order_id"] not in accepted, "%s: order %s answered twice" % (what, j["order_id"]))
    accepted[j["order_id"]] = (sale, j.get("status_token"), key)


def want_sale(ans, sale, what):
    st, _, body = ans
    j = js(body)
    want(st == 200 and sale in (j.get("sale_id"), j.get("id")),
         "%s: want 200 for sale %s, got %d %r" % (what, sale, st, body[:160]))


redis = Redis(aof=False, extra=["--enable-debug-command", "local"]).start()
# The adaptive limit on Redis is off: this test counts one 202 per buy sent, and
# on a loaded machine the limit may refuse a buy its stalls held (503
# redis_limit, the overload tests' subject, not this one's).
g = Gateway("--inventory", redis.url, "--inventory-redis-timeout", "10s", "--kafka-brokers", "none",
            "--overload-adaptive=false",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()
conns = []
try:
    for s in SALES:
        g.put_sale(s, stock=1000, per_user_limit=1)
    g.put_sale("gone", stock=0, per_user_limit=1)
    sent = {s: 0 for s in SALES}

    def opened():
        c = Conn(g.port)
        conns.append(c)
        return c

    # a warm-up buy per sale (Redis has its scripts; the sold-out cache is built)
    for i, s in enumerate(SALES):
        c = opened()
        c.send(buy(s, "warm-%d" % i))
        want_202(c.answer(), s, "warm-up buy %d" % i)
        sent[s] += 1
        c.send(buy("gone", "warm-%d" % i))
        want_410(c.answer(), "warm-up sold out %d" % i)

    sleeper = threading.Thread(target=lambda: redis.cmd("DEBUG", "SLEEP", str(SLEEP_S),
                                                        timeout=SLEEP_S + GUARD_S))
    sleeper.start()
    time.sleep(0.1)  # Redis is asleep: every buy from here waits for it

    # 1. buys that wait, each with the start of a GET behind it in the same send
    waiters = []
    for i in range(24):
        c, s = opened(), SALES[i % len(SALES)]
        c.send(buy(s, "w-%d" % i, key="kw-%d" % i) + b"GET /v1/sales/" + s.encode() + b" HTT")
        sent[s] += 1
        waiters.append((c, s, i))
    # 2. heads cut in the middle (a sold-out buy, a buy that will wait)
    cut = []
    for i in range(16):
        c = opened()
        whole = buy("gone", "c-%d" % i) if i % 2 else buy(SALES[i % 8], "c-%d" % i, key="kc-%d" % i)
        at = 20 + (i * 7) % 60
        c.send(whole[:at])
        cut.append((c, whole, at, i))
    # 3. chunked bodies cut between chunks (buys that will wait)
    chunked = []
    for i in range(8):
        c, s = opened(), SALES[(i + 3) % 8]
        body = json.dumps({"user_id": "k-%d" % i, "qty": 1}).encode()
        head = ("POST /v1/sales/%s/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n" % s).encode()
        c.send(head + b"%x\r\n" % 5 + body[:5] + b"\r\n")
        chunked.append((c, s, body, i))
    # 4. pipelined: 410, a buy that waits, a GET, 410, in one send
    piped = []
    for i in range(8):
        c, s = opened(), SALES[(i + 5) % 8]
        c.send(buy("gone", "p0-%d" % i) + buy(s, "p-%d" % i, key="kp-%d" % i) + get_sale(s) +
               buy("gone", "p1-%d" % i))
        sent[s] += 1
        piped.append((c, s, i))
    # 5. sold-out answers on other connections meanwhile: buffers taken and given back
    churn = [opened() for _ in range(8)]
    for rnd in range(15):
        ender = opened()
        if rnd % 2:
            ender.send(buy("gone", "e-%d" % rnd, extra="Connection: close\r\n"))
            want_410(ender.answer(), "churn %d: Connection: close" % rnd)
        else:
            ender.send(b"POST /v1/sales/gone/orders HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n")
            st, _, body = ender.answer()
            want(st == 400, "churn %d: a malformed head: want 400, got %d %r" % (rnd, st, body[:120]))
        for j, c in enumerate(churn):
            c.send(buy("gone", "ch-%d-%d" % (rnd, j)))
        for j, c in enumerate(churn):
            want_410(c.answer(), "churn %d/%d" % (rnd, j))
    # the cut heads and chunked bodies complete, still while Redis sleeps
    for c, whole, at, i in cut:
        c.send(whole[at:])
        if i % 2 == 0:
            sent[SALES[i % 8]] += 1
    for c, s, body, i in chunked:
        c.send(b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
        sent[s] += 1
    for c, whole, at, i in cut:
        if i % 2:
            want_410(c.answer(), "cut head %d (sold out)" % i)
    for j, c in enumerate(churn):  # and more churn after them
        c.send(buy("gone", "ch2-%d" % j))
        want_410(c.answer(), "churn after %d" % j)
    check(sleeper.is_alive(), "Redis still slept through every step above (else raise SLEEP_S)")
    sleeper.join(SLEEP_S + GUARD_S)

    # Redis answers: every waiting request gets its own answer, in order
    for c, s, i in waiters:
        want_202(c.answer(), s, "waiter %d" % i, key=("w-%d" % i, "kw-%d" % i))
        c.send(b"P/1.1\r\nHost: t\r\n\r\n")  # the GET read while the buy waited
        want_sale(c.answer(), s, "waiter %d's pipelined GET" % i)
    for c, whole, at, i in cut:
        if i % 2 == 0:
            want_202(c.answer(), SALES[i % 8], "cut head %d (buy)" % i, key=("c-%d" % i, "kc-%d" % i))
    for c, s, body, i in chunked:
        want_202(c.answer(), s, "chunked buy %d" % i)
    for c, s, i in piped:
        want_410(c.answer(), "pipelined %d: 1st" % i)
        want_202(c.answer(), s, "pipelined %d: 2nd (buy)" % i, key=("p-%d" % i, "kp-%d" % i))
        want_sale(c.answer(), s, "pipelined %d: 3rd (GET)" % i)
        want_410(c.answer(), "pipelined %d: 4th" % i)

    # 6. a trailer section that says the connection ends (llhttp then refuses
    # any further message on that parser): its buffer must not go back as a
    # clean one, or the next connection's first request gets a 400. The free
    # list is LIFO on one worker, so the next connection takes that buffer.
    for i, tr in enumerate([b"Connection: close", b"connection: CLOSE",
                            b"Connection: keep-alive, close", b"Proxy-Connection: close"]):
        a = opened()
        body = json.dumps({"user_id": "t-%d" % i, "qty": 1}).encode()
        a.send(b"POST /v1/sales/gone/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body +
               b"\r\n0\r\n" + tr + b"\r\n\r\n")
        st, hdrs, body = a.answer()
        want(st == 410, "trailer %r: want 410, got %d %r" % (tr, st, body[:120]))
        want(hdrs.get("connection", "").lower() == "close",
             "trailer %r: the answer must end the connection, got %r" % (tr, hdrs.get("connection")))
        b = opened()
        b.send(buy("gone", "after-trailer-%d" % i))
        want_410(b.answer(), "the next connection after trailer %r" % tr)

    # two sweeps later every idle connection has given its buffer back: each
    # takes one again (another connection's, its parser reused as is) for a
    # sold out, a GET and a buy pipelined, and a head cut in two
    time.sleep(2 * SWEEP_S + 0.2)
    for c, s, i in waiters:
        c.send(buy("gone", "again-%d" % i) + get_sale(s) + buy(s, "again-%d" % i)[:30])
    for c, s, i in waiters:
        want_410(c.answer(), "waiter %d after the sweep: 1st" % i)
        want_sale(c.answer(), s, "waiter %d after the sweep: 2nd" % i)
    time.sleep(2 * SWEEP_S + 0.2)  # the cut head must stay through the sweeps
    for c, s, i in waiters:
        c.send(buy(s, "again-%d" % i)[30:])
        sent[s] += 1
    for c, s, i in waiters:
        want_202(c.answer(), s, "waiter %d after the sweep: 3rd (buy)" % i)

    # the connections are still usable, and each order is what its answer said
    for order_id, (s, token, key) in sorted(accepted.items()):
        c = conns[0]
        c.send(("GET /v1/orders/%s?token=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                % (order_id, token)).encode())
        st, _, body = c.answer()
        want(st == 200 and js(body).get("sale_id") == s,
             "order %s reads back under sale %s: %d %r" % (order_id, s, st, body[:160]))
    replays = 0
    for order_id, (s, token, key) in sorted(accepted.items()):
        if not key:
            continue
        c = conns[1]
        c.send(buy(s, key[0], key=key[1]))
        st, _, body = c.answer()
        want(st == 202 and js(body).get("order_id") == order_id,
             "Idempotency-Key %s replays order %s: %d %r" % (key, order_id, st, body[:160]))
        replays += 1
    eq(replays, 24 + 8 + 8, "every keyed buy was replayed")
    for s in SALES:
        info = g.admin("GET", "/admin/v1/sales/" + s).json
        want(info.get("accepted_orders") == sent[s],
             "sale %s holds %r orders, %d were bought" % (s, info.get("accepted_orders"), sent[s]))
    eq(len(accepted), sum(sent.values()), "one 202 per buy sent")
    check(not problems, "%d wrong answers:\n  %s" % (len(problems), "\n  ".join(problems[:20])))
    check(g.alive(), "the gateway is still up")
    # the buffers of every connection and the free list are freed at exit (an
    # ASan build's LeakSanitizer makes a leak a non-zero exit)
    eq(g.stop(), 0, "the gateway's exit status after SIGTERM")
finally:
    for c in conns:
        c.close()
    g.cleanup()
    redis.cleanup()
finish()
