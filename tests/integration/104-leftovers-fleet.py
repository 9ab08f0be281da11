"""Leftovers by lot across a fleet of three gateways on one real Redis: a
lottery with 10 entrants for 3 units draws 3 winners and waitlists the other
7, and every gateway answers each loser "waitlisted" with the same place.
While they wait, a first-come buyer gets 410 sold_out with "waitlist":true on
every gateway. Units freed anywhere (a winner's order cancelled through the
admin API of the gateway that holds it, a restock through another) go to the
losers in draw order, one loser per unit, whichever gateway promotes them,
and every gateway then reads the promoted entry as an order.

Two cuts mid-promotion: (1) by hand, as 91-fair-fleet-release.py does: a
promotion set back in Redis to where a gateway killed between its spool write
and its outcome leaves it (the outcome gone, the promotion pending under the
gateway's owner id), then that gateway killed -9 and restarted: it takes the
lock back, finds the order in its spool and records it, and promotes nobody
else for it; (2) the promoting gateway killed -9 while a cancel and a restock
are promoted, and restarted. After both: no loser twice (each promoted order
in exactly one spool, once), exactly one loser per freed unit, in draw order,
and no oversell (Redis holds as many units as were made available). At the
sale's end (ends_at) the two losers still waiting read lost on every gateway."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, rfc3339  # noqa: E402
from fleet import NO_LIMITS as LIMITS  # noqa: E402
from fleet import FleetLottery, Redis, need_redis, rcmd, spool_orders, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

SALE = "wf"
STOCK, ENTRANTS = 3, 10


def all_outcomes(gws, want, timeout=15):
    ok, waited = wait_for(lambda: all(outcomes(g) == want for g in gws), timeout)
    for g in gws:
        eq(outcomes(g), want, "outcomes in draw order on port %d" % g.port)
    return waited


def holder(gws, oid, token):
    """The gateway whose status table has the order (its answer carries accepted_at)."""
    for g in gws:
        r = g.order(oid, token)
        if r.status == 200 and "accepted_at" in r.json:
            return g
    return None



redis = Redis().start()
lot = FleetLottery(redis, SALE)
K, S = lot.K, lot.S
draw, outcomes, owner_of, held_orders = lot.draw, lot.outcomes, lot.owner_of, lot.held_orders
gws = []
t0 = time.time()
try:
    gws = start_fleet(redis, 3, extra=LIMITS)
    a = gws[0]
    token, user = lot.open(gws, STOCK, ENTRANTS, starts_in=2)
    ok, _ = wait_for(lambda: all(draw(g)["state"] == "drawn" for g in gws), 20)
    check(ok, "every gateway knows the draw")
    order = sorted(draw(a)["entries"], key=lambda e: e["position"])
    ids = [e["order_id"] for e in order]
    all_outcomes(gws, ["won"] * STOCK + ["waitlisted"] * (ENTRANTS - STOCK))
    for g in gws:
        for k, e in enumerate(order[STOCK:]):
            r = g.order(e["order_id"], token[e["order_id"]])
            eq((r.status, r.json.get("status"), r.json.get("waitlist_position"),
                r.json.get("draw_position")), (410, "waitlisted", k + 1, e["position"]),
               "a loser reads waitlisted with its place on port %d" % g.port)
        r = g.buy(SALE, "outsider")
        eq((r.status, r.json.get("error"), r.json.get("waitlist")), (410, "sold_out", True),
           "first-come while losers wait: 410 with waitlist on port %d" % g.port)

    cancelled, cancel_ports = [], set()

    def cancel(oid):
        g = holder(gws, oid, token[oid])
        check(g is not None, "some gateway holds order %s" % oid)
        r = g.admin("POST", "/admin/v1/orders/%s/cancel" % oid, body={"reason": "leftovers"})
        eq(r.status, 202, "cancel of %s through port %d" % (oid, g.port))
        cancelled.append(oid)
        cancel_ports.add(g.port)
        return g

    # (A) a winner's order cancelled: the first loser in draw order, not the outsider
    drawer = cancel(ids[0])
    tries = []
    deadline = time.time() + 10
    while True:  # at once after the cancel (the unit is free in Redis), then until promoted
        tries.append(gws[len(tries) % 3].buy(SALE, "outsider").status)
        if len(tries) >= 3 and (time.time() > deadline or outcomes(gws[2])[STOCK] == "won"):
            break
        time.sleep(0.02)
    check(tries and all(s == 410 for s in tries),
          "the outsider never bought while losers wait (%d tries: %s)" % (len(tries), set(tries)))
    all_outcomes(gws, ["won"] * (STOCK + 1) + ["waitlisted"] * (ENTRANTS - STOCK - 1))

    # (B) a restock of 2 through a gateway that is not the drawer, which promotes them (the
    # lock handed to it: whichever gateway holds the lock promotes)
    other = next(g for g in gws if g is not drawer)
    ok, _ = wait_for(lambda: os.path.exists(os.path.join(other.data_dir, "fair", "owner.id")), 5)
    check(ok, "every gateway has its owner id while losers wait")
    ok, _ = wait_for(lambda: rcmd(redis.port, "SET", K + "wlock", owner_of(other), "PX", "5000",
                                  "NX") == "OK", 10)
    check(ok, "the promoter's lock handed to port %d" % other.port)
    eq(other.admin("POST", "/admin/v1/sales/%s/restock" % SALE, body={"add": 2}).status, 200,
       "restock through port %d" % other.port)
    all_outcomes(gws, ["won"] * (STOCK + 3) + ["waitlisted"] * (ENTRANTS - STOCK - 3))
    for oid in ids[STOCK + 1:STOCK + 3]:
        eq(holder(gws, oid, token[oid]), other, "promoted by the lock's holder")
    for oid in ids[STOCK:STOCK + 3]:
        for g in gws:
            r = g.order(oid, token[oid])
            eq((r.status, r.json.get("status"), r.json.get("order_id")), (200, "queued", oid),
               "a promoted order reads queued on port %d" % g.port)

    # (1) a promotion cut by hand between its spool write and its outcome, then its
    # gateway killed -9 and restarted: the order is found in its spool, nobody else promoted
    last = ids[STOCK + 2]
    p = holder(gws, last, token[last])
    check(p is not None, "the last promotion's gateway")
    p.kill9()
    eq(rcmd(redis.port, "HDEL", K + "won", user[last]), 1, "its outcome out of :won")
    rcmd(redis.port, "SET", K + "wp", "%s %s %s %d" % (user[last], last, owner_of(p),
                                                        int(time.time() * 1000)))
    rcmd(redis.port, "HINCRBY", K + "wl", "gen", 1)
    all_outcomes([g for g in gws if g is not p],
                 ["won"] * (STOCK + 2) + ["waitlisted"] * (ENTRANTS - STOCK - 2))
    p.start()
    all_outcomes(gws, ["won"] * (STOCK + 3) + ["waitlisted"] * (ENTRANTS - STOCK - 3))
    eq(rcmd(redis.port, "EXISTS", K + "wp"), 0, "the pending promotion resolved")
    eq(spool_orders(p, SALE).count(last), 1, "the cut promotion's order in its spool once")
    check("found=spool" in p.logs(20000), "the restarted gateway found it in its spool")

    # (2) the promoter killed -9 while a cancel (of an order promoted by another gateway
    # than the drawer, through that gateway) and a restock are promoted
    w1 = ids[STOCK + 1]
    eq(cancel(w1), other, "the cancel goes through the gateway that promoted the order")
    eq(other.admin("POST", "/admin/v1/sales/%s/restock" % SALE, body={"add": 1}).status, 200,
       "restock of 1")
    ok, _ = wait_for(lambda: rcmd(redis.port, "GET", K + "wlock") is not None, 5, step=0.005)
    lock = rcmd(redis.port, "GET", K + "wlock")
    victim = next((g for g in gws if owner_of(g) == lock), None)
    check(victim is not None, "the promoter holds the lock")
    victim.kill9()
    time.sleep(0.3)
    victim.start()
    all_outcomes(gws, ["won"] * (STOCK + 5) + ["waitlisted"] * (ENTRANTS - STOCK - 5),
                 timeout=20)
    eq(rcmd(redis.port, "EXISTS", K + "wp"), 0, "no promotion left pending")

    # --- invariants ---
    for g in gws:
        r = g.buy(SALE, "outsider")
        eq((r.status, r.json.get("waitlist")), (410, True), "two losers still wait: 410")
    # 3 + 2 + 1 units made available, 2 orders cancelled: 6 held, by 6 orders
    s = a.admin("GET", "/admin/v1/sales/" + SALE).json
    eq((s["stock_left"], s["accepted_units"], s["accepted_orders"]), (0, 6, 6),
       "no oversell: each unit held by one order")
    won = ids[:STOCK + 5]
    eq(held_orders(), sorted(set(won) - set(cancelled)), "Redis holds the winners' orders")
    spooled = []
    for g in gws:
        spooled += spool_orders(g, SALE)
    eq(sorted(spooled), sorted(won), "every winner's and promoted order in one spool, once")
    wonmap = rcmd(redis.port, "HGETALL", K + "won")
    wonmap = dict(zip(wonmap[::2], wonmap[1::2]))
    eq({u: o for u, o in wonmap.items() if o != "-"}, {user[o]: o for o in won},
       "the fleet's record: one order per promoted loser")
    for oid in set(won) - set(cancelled):
        for g in gws:
            r = g.order(oid, token[oid])
            eq((r.status, r.json.get("order_id")), (200, oid), "order readable on port %d" % g.port)
    eq(len(cancel_ports), 2, "cancels through two gateways")

    # the sale ends: the two still waiting are lost on every gateway, nobody is promoted
    r = a.admin("PUT", "/admin/v1/sales/" + SALE, body={
        "stock": 6, "per_user_limit": 1, "starts_at": lot.starts_at,
        "ends_at": rfc3339(time.time() + 1.5)})
    eq(r.status, 200, "ends_at set: %s" % r.json)
    all_outcomes(gws, ["won"] * (STOCK + 5) + ["lost"] * 2)
    for g in gws:
        eq(g.order(ids[-1], token[ids[-1]]).json.get("status"), "lost",
           "a loser left at the end reads lost on port %d" % g.port)
    eq(rcmd(redis.port, "HGET", K + "wl", "ended"), "1", "the fleet records the end")
    eq(held_orders(), sorted(set(won) - set(cancelled)), "the end promoted nobody")
    print("cancels through ports %s; %.1f s" % (sorted(cancel_ports), time.time() - t0))
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
