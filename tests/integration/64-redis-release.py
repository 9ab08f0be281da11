"""Giving units back never blocks a worker loop and never loses a unit.

1. A full spool refuses before the reserve: a refused buy costs no Redis
   script at all (before, every refused buy reserved and then released,
   synchronously, on the worker loop). Redis MONITOR sees no command that
   names a refused user.
2. Compensation gives the units back first and marks the order final after:
   a cancel whose release fails (Redis stopped) does not lose the unit; the
   release is retried until Redis answers, and only then is the order final.
"""
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis, _resp_encode, wait_for  # noqa: E402

need_binary("flashgate")
redis = Redis(aof=False).start()
g = Gateway("--inventory", redis.url, "--kafka-brokers", "none", "--spool-max-bytes", "1m",
            "--spool-segment-bytes", "256k", "--set", "limits.user_rps=0",
            "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0").start()


class Monitor:
    """Redis MONITOR on its own connection: every command Redis runs, as text."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(_resp_encode(["MONITOR"]))
        self.buf = b""
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                return
            self.buf += d

    def close(self):
        time.sleep(0.3)  # the last commands reach the monitor stream
        self.stop = True
        self.t.join(5)
        self.sock.close()
        return self.buf.decode(errors="replace")


try:
    g.put_sale("full", stock=100000, per_user_limit=1)
    key = "k" * 120  # big records: the 1 MiB spool fills after ~2,600 orders
    accepted, lock, full = [], threading.Lock(), threading.Event()

    def client(i):
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        for n in range(2000):
            if full.is_set():
                return
            c.request("POST", "/v1/sales/full/orders",
                      body=json.dumps({"user_id": "fill-%d-%d" % (i, n)}),
                      headers={"Content-Type": "application/json",
                               "Idempotency-Key": key + "%d-%d" % (i, n)})
            r = c.getresponse()
            body = json.loads(r.read())
            if r.status == 202:
                with lock:
                    accepted.append(body["order_id"])
            elif r.status == 503 and "spool is full" in body.get("message", ""):
                full.set()
                return
            # another 503 (a reserve that timed out on this loaded machine): next user
    ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    check(full.is_set(), "the spool filled (%d accepted)" % len(accepted))
    for n in range(200):  # top it up with records as small as the refused ones below
        r = g.buy("full", "pad-%d" % n)
        if r.status == 202:
            accepted.append(r.json["order_id"])
        elif "spool is full" in (r.json or {}).get("message", ""):
            break

    mon = Monitor(redis.port)
    time.sleep(0.2)
    codes = {}
    for n in range(40):
        r = g.buy("full", "refused-%03d" % n)
        codes[(r.status, (r.json or {}).get("error"))] = codes.get((r.status, (r.json or {}).get("error")), 0) + 1
    seen = mon.close()
    eq(codes, {(503, "unavailable"): 40}, "a full spool refuses every buy")
    eq(g.buy("full", "refused-x").json.get("message"), "order spool is full; try again shortly",
       "because the spool is full")
    eq(seen.count("refused-"), 0, "a refused buy sends Redis nothing: no reserve, no release")
    s = g.admin("GET", "/admin/v1/sales/full").json
    eq(s["accepted_orders"], len(accepted), "only the accepted orders hold stock")

    # 2. A cancel while Redis is stopped: the unit must come back once it runs again.
    victim = accepted[0]
    left0 = s["stock_left"]
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        c = g.admin("POST", "/admin/v1/orders/%s/cancel" % victim, body={"reason": "test"})
        check(c.status in (200, 202), "the cancel is taken: %r" % c)
        o = g.order(victim).json
        check(o["status"] == "queued",
              "not final while its units are still out (got %r)" % o["status"])
        time.sleep(3.0)  # a blocking release gives up after 2 s: the retry fails too
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    ok, _ = wait_for(lambda: g.order(victim).json["status"] == "cancelled", 20)
    check(ok, "the order is cancelled once the release went through")
    s = g.admin("GET", "/admin/v1/sales/full").json
    eq(s["stock_left"], left0 + 1, "the cancelled order's unit is back in stock")
    eq(s["accepted_orders"], len(accepted) - 1, "and no longer counted as accepted")
    st = g.admin("GET", "/admin/v1/stats").json["releases"]
    check(st["retries"] >= 1 and st["pending"] == 0,
          "the releaser retried and finished: %r" % st)
    c = g.admin("POST", "/admin/v1/orders/%s/cancel" % victim, body={"reason": "again"})
    eq((c.status, c.json.get("cancel")), (200, "already_final"), "a second cancel changes nothing")
    eq(g.admin("GET", "/admin/v1/sales/full").json["stock_left"], left0 + 1,
       "and gives nothing back twice")
finally:
    g.cleanup()
    redis.cleanup()
finish()
