"""Start-window lottery across a fleet of two gateways on one real Redis, its
per-person fairness audit enforced: an early entrant must not win more than
its share.

100 people enter one by one, e00 first, through the two gateways in turn
(e00 through the first, e01 through the second, ...); 15 units go. Fewer than
128 entrants: Redis keeps a hash that small (a listpack) in insertion order,
so the fleet reads its entrants back in the order the gateways pushed them,
each gateway its own entries in arrival order. A draw that took that order
(not gw_fair_order of the keys and the seed) would give all 15 units to the
earliest 30 arrivals (one gateway's first 15: e00, e02, ..., e28); a seeded
draw gives them about 4.5 (Hypergeometric(100, 30, 15)). The check: the
earliest 30 arrivals win at most the 5-sigma level of that spread (13,
hyper_limit below: a clean draw exceeds it with probability < 2.87e-7), and
so do the latest 30. The winners' mean arrival rank is printed (49.5 expected,
standard deviation ~6.9; 14 for the draw in arrival order)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, rfc3339  # noqa: E402
from fgq import hyper_limit  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

STOCK = 15
ENTRANTS = 100  # fewer than Redis's 128 (hash-max-listpack-entries): insertion order kept
EDGE = 30  # the earliest (and latest) arrivals audited



redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 2, extra=("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0",
                                       "--set", "limits.subnet_rps=0",
                                       "--set", "inventory.redis_timeout=1s"))
    g0 = gws[0]
    starts = int(time.time()) + 4
    r = g0.admin("PUT", "/admin/v1/sales/fa", body={
        "stock": STOCK, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 3000, "fair_early_ms": 3500})
    eq(r.status, 201, "sale with a lottery created through one gateway")
    ok, _ = wait_for(lambda: all(g.admin("GET", "/admin/v1/sales/fa").json.get("fair_window_ms") == 3000
                                 for g in gws), 5)
    check(ok, "every gateway has the window")
    time.sleep(max(0.0, starts - 3.5 + 0.05 - time.time()))

    users = ["e%02d" % i for i in range(ENTRANTS)]
    rank = {u: i for i, u in enumerate(users)}
    for i, u in enumerate(users):
        r = gws[i % 2].buy("fa", u)
        eq((r.status, r.json.get("status")), (202, "entered"), "entry of %s" % u)
    check(time.time() < starts + 3, "entries made inside the window (else the test proves nothing)")

    def drawn():
        return all(g.admin("GET", "/admin/v1/sales/fa/draw").json["state"] == "drawn" for g in gws)
    time.sleep(max(0, starts + 3 - time.time()))
    ok, waited = wait_for(drawn, 20)
    check(ok, "every gateway knows the draw (%.1f s after the close)" % waited)
    ds = [g.admin("GET", "/admin/v1/sales/fa/draw").json for g in gws]
    eq([d["entrants"] for d in ds], [ENTRANTS] * 2, "every entrant in the fleet's draw")
    orders = [[(e["position"], e["user_id"], e["outcome"]) for e in d["entries"]] for d in ds]
    check(orders[0] == orders[1], "the same draw order and outcomes on both gateways")
    won = sorted(rank[e["user_id"]] for e in ds[0]["entries"] if e["outcome"] == "won")
    eq(len(won), STOCK, "stock exactly allocated")

    # --- the per-person audit: arrival rank against the draw ---
    limit = hyper_limit(ENTRANTS, EDGE, STOCK)
    early = sum(1 for k in won if k < EDGE)
    late = sum(1 for k in won if k >= ENTRANTS - EDGE)
    mean = sum(won) / len(won)
    print("fleet draw: winners' arrival ranks %s, mean %.1f (%.1f expected); earliest %d won %d, "
          "latest %d won %d (5-sigma level %d, %.1f expected)"
          % (won, mean, (ENTRANTS - 1) / 2, EDGE, early, EDGE, late, limit, STOCK * EDGE / ENTRANTS))
    check(early <= limit, "the earliest %d arrivals won %d units, over the 5-sigma level %d of "
          "their share: a draw in arrival order" % (EDGE, early, limit))
    check(late <= limit, "the latest %d arrivals won %d units, over the 5-sigma level %d of their "
          "share" % (EDGE, late, limit))
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
