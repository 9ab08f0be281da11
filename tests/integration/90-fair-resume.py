"""Start-window lottery: a draw cut by a kill -9 and resumed at the next start
reserves no entrant twice, whatever the status table kept. The draw reserves
each winner and spools its order; the gateway's status table is bounded
(orders.max_known) and evicts the oldest orders, so a resumed draw that took
its winners so far from that table would reserve an evicted winner a second
time (another unit of the stock, the user past the per-user limit, a second
order with the same id in the spool). A cut draw reads its winners from the
spool, and a finished draw names them in its own log."""
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import eq, check, finish, Gateway, need_binary, rfc3339  # noqa: E402
from fleet import wait_for  # noqa: E402

need_binary("flashgate")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none",
        "--set", "orders.max_known=1024"]
BULK = 3000  # first-come orders after the draw: every shard of the table (16 each) overflows


def drawn(g, sale):
    ok, _ = wait_for(lambda: g.admin("GET", "/admin/v1/sales/%s/draw" % sale).json["state"]
                     == "drawn", 15)
    eq(ok, True, "the draw of %s is done" % sale)
    return g.admin("GET", "/admin/v1/sales/%s/draw" % sale).json


def buy_many(g, sale, n):
    c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    ok = 0
    for i in range(n):
        c.request("POST", "/v1/sales/%s/orders" % sale, body=json.dumps({"user_id": "b%d" % i}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        ok += r.status == 202
    c.close()
    return ok


g = Gateway(*ARGS).start()
try:
    g.put_sale("fr", stock=10, per_user_limit=2, starts_at=rfc3339(time.time() + 2),
               fair_window_ms=1000, fair_early_ms=3600000)
    g.put_sale("bulk", stock=BULK, per_user_limit=1)
    for u in ("u1", "u2", "u3"):
        r = g.buy("fr", u)
        eq((r.status, r.json["status"]), (202, "entered"), "entry of " + u)
    d = drawn(g, "fr")
    winners = sorted(e["order_id"] for e in d["entries"] if e["outcome"] == "won")
    eq(len(winners), 3, "every entrant won (stock 10)")
    eq(buy_many(g, "bulk", BULK), BULK, "first-come orders of another sale after the draw")

    # kill -9 in the middle of the draw: its winners are in the spool, its log
    # has the seed and nothing after it (no winner recorded, no end)
    g.kill9()
    log = os.path.join(g.data_dir, "fair", "fr.log")
    with open(log) as fp:
        lines = fp.read().splitlines(True)
    # a journal: "%08x %08x <line>" a frame, after its magic line
    cut = max(i for i, ln in enumerate(lines) if ln[18:].startswith("D "))
    with open(log, "w") as fp:
        fp.write("".join(lines[:cut + 1]))
    g.start()
    st = g.admin("GET", "/admin/v1/stats").json["orders"]
    check(st["evicted"] >= BULK + 3 - 1024, "the replay overflowed the status table: %r" % st)

    d = drawn(g, "fr")
    eq((d["won_orders"], d["won_units"], d["lost"]), (3, 3, 0), "the resumed draw: 3 winners")
    s = g.admin("GET", "/admin/v1/sales/fr").json
    eq((s["accepted_units"], s["accepted_orders"], s["stock_left"]), (3, 3, 7),
       "each winner holds one unit: none was reserved twice")
    ids = g.spool_ids()
    eq([ids.count(w) for w in winners], [1, 1, 1], "one order per winner in the spool")
    for w in winners:
        r = g.order(w)
        eq((r.status, r.json.get("status")), (200, "queued"), "winner %s reads won" % w)

    # another restart: the finished draw names its winners in its own log
    g.kill9()
    g.start()
    d = drawn(g, "fr")
    eq((d["won_orders"], d["lost"]), (3, 0), "after another restart: still 3 winners")
    for w in winners:
        r = g.order(w)
        eq((r.status, r.json.get("status")), (200, "queued"), "winner %s still reads won" % w)
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()
finish()
