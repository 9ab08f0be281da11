"""Start-window lottery: one draw per sale. Once a lottery has drawn, a PUT
that would change its window or open it again (starts_at moved so that the
window closes in the future) is refused with 409 "conflict", "reason":
"lottery_drawn", and changes nothing: the draw's record (seed, entrants,
positions, outcomes) is the sale's, once. Were such a PUT taken, the new
window would answer 425 and then 503 "the draw is running" to every buy in
it, and no second draw would run. A PUT that leaves the window alone still
changes the sale, and buys after the draw are first-come. On one gateway and
in a fleet (where Redis says whether the draw is done)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import eq, finish, Gateway, need_binary, rfc3339  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

LIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"]


def one_draw_only(gws, sale):
    g = gws[0]
    starts = rfc3339(time.time() + 2)
    r = g.admin("PUT", "/admin/v1/sales/" + sale, body={
        "stock": 5, "per_user_limit": 1, "starts_at": starts,
        "fair_window_ms": 1000, "fair_early_ms": 3600000})
    eq(r.status, 201, "%s: sale with a lottery, entries open" % sale)
    for gw in gws:
        ok, _ = wait_for(lambda: gw.admin("GET", "/admin/v1/sales/" + sale).json.get(
            "fair_window_ms") == 1000, 5)
        eq(ok, True, "%s: every gateway has the window" % sale)
    for i, u in enumerate(("u1", "u2")):
        r = gws[i % len(gws)].buy(sale, u)
        eq((r.status, r.json.get("status")), (202, "entered"), "%s: entry of %s" % (sale, u))
    for gw in gws:
        ok, _ = wait_for(lambda: gw.admin("GET", "/admin/v1/sales/%s/draw" % sale).json["state"]
                         == "drawn", 15)
        eq(ok, True, "%s: drawn, as every gateway sees it" % sale)
    draw = g.admin("GET", "/admin/v1/sales/%s/draw" % sale).json
    eq(draw["won_orders"], 2, "%s: both entrants won" % sale)
    before = g.admin("GET", "/admin/v1/sales/" + sale).json

    for gw in gws:  # whichever gateway is asked
        # reopen the window: starts_at later, the same window
        r = gw.admin("PUT", "/admin/v1/sales/" + sale, body={
            "stock": 5, "per_user_limit": 1, "starts_at": rfc3339(time.time() + 60),
            "fair_window_ms": 1000, "fair_early_ms": 3600000})
        eq((r.status, r.json.get("error"), r.json.get("reason")), (409, "conflict", "lottery_drawn"),
           "%s: a second window is refused" % sale)
        eq("one draw" in r.json.get("message", ""), True, "%s: the message says why" % sale)
        # another window length on the same start
        r = gw.admin("PUT", "/admin/v1/sales/" + sale, body={
            "stock": 5, "per_user_limit": 1, "starts_at": starts,
            "fair_window_ms": 5000, "fair_early_ms": 3600000})
        eq((r.status, r.json.get("reason")), (409, "lottery_drawn"),
           "%s: a window change after the draw is refused" % sale)
    time.sleep(0.7)  # past the fleet's half-second configuration poll
    for gw in gws:
        after = gw.admin("GET", "/admin/v1/sales/" + sale).json
        eq({k: after[k] for k in ("stock_total", "starts_at", "fair_window_ms", "fair_early_ms")},
           {k: before[k] for k in ("stock_total", "starts_at", "fair_window_ms", "fair_early_ms")},
           "%s: the refused PUTs changed nothing" % sale)
        d = gw.admin("GET", "/admin/v1/sales/%s/draw" % sale).json
        eq((d["state"], d["seed"], d["entries"]), ("drawn", draw["seed"], draw["entries"]),
           "%s: the draw is as it was" % sale)
    # a PUT that leaves the window where it was still changes the sale
    r = g.admin("PUT", "/admin/v1/sales/" + sale, body={
        "stock": 6, "per_user_limit": 1, "starts_at": starts,
        "fair_window_ms": 1000, "fair_early_ms": 3600000})
    eq((r.status, r.json.get("stock_total")), (200, 6), "%s: a stock change after the draw" % sale)
    r = gws[-1].buy(sale, "u3")
    eq((r.status, r.json.get("status")), (202, "queued"), "%s: first-come after the draw" % sale)


g = Gateway(*LIMITS, "--kafka-brokers", "none").start()
try:
    one_draw_only([g], "once")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()

redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 2, extra=tuple(LIMITS))
    ok, _ = wait_for(lambda: all(gw.admin("GET", "/admin/v1/stats").json["fleet"]["members"] == 2
                                 for gw in gws), 10)
    eq(ok, True, "two members")
    one_draw_only(gws, "fonce")
except Exception:
    for gw in gws:
        print(gw.logs())
    raise
finally:
    for gw in gws:
        gw.cleanup()
    redis.cleanup()
finish()
