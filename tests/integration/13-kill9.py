"""kill -9 of the gateway in the middle of a burst: every order answered 202
is in the spool; after a restart on the same data dir the stock, per-user
counts and order status are rebuilt from it, and the sale then sells exactly
its stock, never one more. Run for both durability modes."""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-spool")

STOCK = 20000
THREADS = 8


def hammer(port, prefix, accepted, stop, counts):
    """Keep-alive client: distinct users, records every 202's order id."""
    n = 0
    conn = None
    while not stop.is_set() and n < 5000:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            body = json.dumps({"user_id": "%s-%d" % (prefix, n)})
            conn.request("POST", "/v1/sales/k9/orders", body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            counts[r.status] = counts.get(r.status, 0) + 1
            if r.status == 202:
                accepted.append(json.loads(data)["order_id"])
            elif r.status == 410:
                return  # sold out
            n += 1
        except (OSError, http.client.HTTPException) as e:
            # the gateway died under us: stop this client
            counts["error: " + type(e).__name__] = counts.get("error: " + type(e).__name__, 0) + 1
            return


def burst(g, prefix, duration, kill_after=None, until_done=False):
    accepted, stop, counts = [], threading.Event(), {}
    ts = [threading.Thread(target=hammer, args=(g.port, "%s%d" % (prefix, i), accepted, stop, counts))
          for i in range(THREADS)]
    for t in ts:
        t.start()
    if kill_after is not None:
        time.sleep(kill_after)
        g.kill9()
    elif until_done:
        for t in ts:
            t.join(duration)
    else:
        time.sleep(duration)
    stop.set()
    for t in ts:
        t.join(30)
    return accepted, counts


for mode in ("write", "fsync"):
    args = ["--durability", mode, "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"]
    g = Gateway(*args).start()
    try:
        g.put_sale("k9", stock=STOCK, per_user_limit=1)
        acc1, counts = burst(g, "a", None, kill_after=0.3)
        check(len(acc1) > 50, "[%s] some orders accepted before the kill: %d %r" % (mode, len(acc1), counts))
        check(len(acc1) < STOCK, "[%s] killed before selling out (%d)" % (mode, len(acc1)))
        spooled = g.spool_ids()
        missing = set(acc1) - set(spooled)
        eq(len(missing), 0, "[%s] every 202 order id is in the spool after kill -9" % mode)
        eq(len(spooled), len(set(spooled)), "[%s] no duplicate records" % mode)
        # restart: state rebuilt from the spool
        g2 = Gateway(*args, data_dir=g.data_dir).start()
        try:
            s = g2.admin("GET", "/admin/v1/sales/k9").json
            eq(s["accepted_orders"], len(spooled), "[%s] accepted orders rebuilt" % mode)
            eq(s["stock_left"], STOCK - len(spooled), "[%s] stock rebuilt" % mode)
            r = g2.order(acc1[0])
            eq((r.status, r.json and r.json["status"]), (200, "queued"), "[%s] order status after restart" % mode)
            # a user who bought before the crash cannot buy again
            first_user = None
            for line in os.popen("%s/flashgate-spool dump --data-dir %s" % (os.environ.get("FLASHGATE_BIN", "build"), g.data_dir)):
                first_user = json.loads(line)["user_id"]
                break
            r = g2.buy("k9", first_user)
            eq(r.status, 409, "[%s] per-user limit survives the restart" % mode)
            # sell the rest: exactly the stock in total
            acc2, counts2 = burst(g2, "b", 30.0, until_done=True)
            total = len(spooled) + len(acc2)
            eq(total, STOCK, "[%s] total accepted over both runs == stock (%r)" % (mode, counts2))
            s = g2.admin("GET", "/admin/v1/sales/k9").json
            eq((s["stock_left"], s["accepted_units"]), (0, STOCK), "[%s] no oversell" % mode)
            eq(g2.buy("k9", "late-user").status, 410, "[%s] sold out after restart" % mode)
        finally:
            g2.cleanup()
    finally:
        g.cleanup()
finish()
