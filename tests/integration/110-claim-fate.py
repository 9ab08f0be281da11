"""A fleet's admission-token claim whose outcome the gateway never learns:
Redis is stopped (SIGSTOP) while the claim's SET NX waits in its socket, the
buy answers 503 after inventory.redis_timeout, and Redis runs the claim when
it resumes. The buyer retries with the same token and no Idempotency-Key: the
gateway gives such a claim back (a compare-and-delete on the claim's own
value, retried by the lottery thread), so the retry buys instead of reading
403 admission_spent for the token's whole lifetime. The order then spends the
token: a third buy with it is 403.

A replayed 202 keeps the token of the buy that claimed it. Gateway A (its
Redis through a proxy that lets A's reserve reach Redis and loses its reply)
answers 503 and gives the token back while its order stands in Redis; the
keyed retry on gateway B claims the token anew, takes A's order over and
answers a replayed 202. The token is spent by that order: a buy with it and a
new key is 403: given back with the replayed 202, it would let that buy make
a second order."""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402
from fleet import NO_LIMITS, Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()


def queue_token(g, sale, user):
    for _ in range(200):
        q = request(g.port, "GET", "/v1/sales/%s/queue?user_id=%s" % (sale, user))
        if q.status == 200 and q.json.get("admission_token"):
            return q.json["admission_token"]
        time.sleep(0.05)
    return None


def buy(g, sale, user, tok, key=None):
    h = {"X-Admission-Token": tok}
    if key:
        h["Idempotency-Key"] = key
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale,
                   body={"qty": 1, "user_id": user}, headers=h, timeout=30)


class LossyProxy:
    """A TCP proxy to Redis for one gateway. Once a command carrying `trigger`
    passes (the reserve of the buy's Idempotency-Key), Redis runs it but its
    connection hears nothing more, and only the admission-token scripts (the
    "wrjti" keys) reach Redis from the gateway: the buy times out with its
    order reserved, and its release of the order stays unsent."""

    def __init__(self, redis_port, trigger):
        self.redis_port = redis_port
        self.trigger = trigger
        self.fired = threading.Event()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
                s = socket.create_connection(("127.0.0.1", self.redis_port))
            except OSError:
                return
            self.socks += [c, s]
            conn = {"deaf": False}
            threading.Thread(target=self._up, args=(c, s, conn), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c, conn), daemon=True).start()

    def _up(self, c, s, conn):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                if not self.fired.is_set() and self.trigger in d:
                    conn["deaf"] = True
                    self.fired.set()
                elif self.fired.is_set() and b"wrjti" not in d:
                    continue
                s.sendall(d)
        except OSError:
            pass

    def _down(self, s, c, conn):
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                if not conn["deaf"]:
                    c.sendall(d)
        except OSError:
            pass

    def close(self):
        for x in [self.lsock] + self.socks:
            try:
                x.close()
            except OSError:
                pass


def replayed_202_keeps_token(redis):
    proxy = LossyProxy(redis.port, b"k-lost-reply")
    a = Gateway("--inventory", "redis://127.0.0.1:%d" % proxy.port, "--kafka-brokers", "none",
                "--set", "inventory.redis_timeout=300ms", *NO_LIMITS)
    b = Gateway("--inventory", redis.url, "--kafka-brokers", "none",
                "--set", "inventory.redis_timeout=2s", *NO_LIMITS)
    try:
        a.start(wait=False)
        b.start()
        a.wait_ready()
        r = b.admin("PUT", "/admin/v1/sales/rp", body={
            "stock": 5, "per_user_limit": 2, "fair_window_ms": 0, "waiting_room_rate": 1000})
        eq(r.status, 201, "sale with a waiting room")
        ok, _ = wait_for(lambda: a.get("/v1/sales/rp").status == 200, 5)
        check(ok, "A sees the sale")
        tok = queue_token(b, "rp", "u2")
        check(tok is not None, "u2 is admitted")
        r = buy(a, "rp", "u2", tok, key="k-lost-reply")
        eq(r.status, 503, "A's reserve reply is lost: %r" % r)
        check(proxy.fired.is_set(), "the reserve went through the proxy")
        eq(int(redis.cmd("HLEN", "{sale:rp}:orders")), 1, "A's order stands in Redis")
        r = buy(b, "rp", "u2", tok, key="k-lost-reply")
        eq((r.status, r.headers.get("idempotent-replayed")), (202, "true"),
           "B replays A's order for the keyed retry: %r" % r)
        r = buy(b, "rp", "u2", tok, key="k-new")
        eq((r.status, (r.json or {}).get("reason")), (403, "admission_spent"),
           "the token of the order that stands is spent: %r" % r)
        eq(int(redis.cmd("HLEN", "{sale:rp}:orders")), 1, "one order for one token")
    finally:
        a.stop(sig=signal.SIGKILL)  # its Redis is cut off: no graceful stop to wait for
        for g in (a, b):
            g.cleanup()
        proxy.close()


redis = Redis().start()
gws = []
stopped = False
try:
    gws = start_fleet(redis, 1, threads=1,
                      extra=NO_LIMITS + ("--set", "inventory.redis_timeout=300ms"))
    g = gws[0]
    r = g.admin("PUT", "/admin/v1/sales/cf", body={
        "stock": 5, "per_user_limit": 2, "fair_window_ms": 0, "waiting_room_rate": 1000})
    eq(r.status, 201, "sale with a waiting room")
    tok = queue_token(g, "cf", "u1")
    check(tok is not None, "u1 is admitted")

    redis.proc.send_signal(signal.SIGSTOP)
    stopped = True
    t0 = time.time()
    r = buy(g, "cf", "u1", tok)
    eq(r.status, 503, "a buy while Redis is stopped (%.2f s)" % (time.time() - t0))
    redis.proc.send_signal(signal.SIGCONT)
    stopped = False

    # Redis now runs the stalled claim; the gateway's give-back follows it.
    t0 = time.time()
    statuses = []
    r = None
    while time.time() - t0 < 8:
        r = buy(g, "cf", "u1", tok)
        statuses.append((r.status, (r.json or {}).get("reason")))
        if r.status == 202:
            break
        time.sleep(0.2)
    eq(r.status, 202, "the same token buys after the stall (answers %s)" % statuses[-5:])
    print("the retry bought %.2f s after SIGCONT, %d attempts" % (time.time() - t0, len(statuses)))

    r = buy(g, "cf", "u1", tok)
    eq((r.status, (r.json or {}).get("reason")), (403, "admission_spent"),
       "the order spent the token")
    s = g.admin("GET", "/admin/v1/sales/cf").json
    eq((s.get("stock_left"), s.get("accepted_orders")), (4, 1), "one order, one unit")
    for g in gws:
        g.stop()
    gws = []
    replayed_202_keeps_token(redis)
finally:
    if stopped:
        redis.proc.send_signal(signal.SIGCONT)
    for g in gws:
        g.stop()
    redis.cleanup()
finish()
