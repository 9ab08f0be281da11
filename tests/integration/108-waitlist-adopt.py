"""The fleet waitlist's adoption path: a promotion abandoned by a
gateway that does not come back is finished by another one, after the grace
(FLEET_WL_GRACE_MS, 10 s, gateway/buy/gw_waitlist_fleet.c), and only then.

Two gateways on one real Redis; a lottery of 5 entrants for 2 units draws 2
winners and waitlists 3. One gateway is killed -9 and its promotion of the
first loser is set in Redis as a gateway killed between its begin and its
reserve leaves it (pending under its owner id, no lock, no reservation), then
a unit is restocked through the other gateway. While the grace runs, nobody is
promoted and a first-come buyer is 410 with "waitlist"; after it, the other
gateway adopts the promotion: the first loser (not the second) reads won on
it, its order is in the adopter's spool once, and Redis holds it. The killed
gateway restarted afterwards promotes nobody again: each promoted loser once
in the fleet's record, each order in one spool once, no oversell."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary  # noqa: E402
from fleet import NO_LIMITS as LIMITS  # noqa: E402
from fleet import FleetLottery, Redis, need_redis, rcmd, spool_orders, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

SALE = "wa"
STOCK, ENTRANTS = 2, 5
GRACE_S = 10.0  # FLEET_WL_GRACE_MS

redis = Redis().start()
lot = FleetLottery(redis, SALE)
K, S = lot.K, lot.S
draw, outcomes, owner_of, held_orders = lot.draw, lot.outcomes, lot.owner_of, lot.held_orders
gws = []
t0 = time.time()
try:
    gws = start_fleet(redis, 2, extra=LIMITS)
    adopter, victim = gws
    token, user = lot.open(gws, STOCK, ENTRANTS, starts_in=1.5)
    want = ["won"] * STOCK + ["waitlisted"] * (ENTRANTS - STOCK)
    ok, _ = wait_for(lambda: all(outcomes(g) == want for g in gws), 20)
    check(ok, "both gateways know the draw: 2 won, 3 waitlisted")
    ids = [e["order_id"] for e in sorted(draw(adopter)["entries"], key=lambda e: e["position"])]
    first = ids[STOCK]
    ok, _ = wait_for(lambda: os.path.exists(os.path.join(victim.data_dir, "fair", "owner.id")), 5)
    check(ok, "the victim has its owner id while losers wait")
    gone = owner_of(victim)

    # the victim dies with its promotion of the first loser begun and nothing reserved
    victim.kill9()
    ok, _ = wait_for(lambda: rcmd(redis.port, "EXISTS", K + "wlock") == 0, 5)
    check(ok, "no promoter's lock held")
    rcmd(redis.port, "SET", K + "wp", "%s %s %s %d" % (user[first], first, gone,
                                                        int(time.time() * 1000)))
    rcmd(redis.port, "HINCRBY", K + "wl", "gen", 1)
    t_cut = time.time()
    eq(adopter.admin("POST", "/admin/v1/sales/%s/restock" % SALE, body={"add": 1}).status, 200,
       "a unit restocked through the adopter")

    # the grace: nobody promoted, first-come held back
    time.sleep(2.0)
    eq(outcomes(adopter), want, "during the grace the abandoned promotion is not taken over")
    r = adopter.buy(SALE, "outsider")
    eq((r.status, r.json.get("waitlist")), (410, True), "first-come is 410 while losers wait")
    after = ["won"] * (STOCK + 1) + ["waitlisted"] * (ENTRANTS - STOCK - 1)
    ok, _ = wait_for(lambda: outcomes(adopter) == after, GRACE_S + 8, step=0.1)
    waited = time.time() - t_cut
    check(ok, "the adopter promotes the first loser (%.1f s after the cut)" % waited)
    check(waited >= GRACE_S - 0.5, "not before the grace: %.1f s" % waited)
    check("did not come back adopted" in adopter.logs(20000), "the adoption is logged")
    eq(rcmd(redis.port, "EXISTS", K + "wp"), 0, "the pending promotion resolved")
    r = adopter.order(first, token[first])
    eq((r.status, r.json.get("status"), r.json.get("order_id")), (200, "queued", first),
       "the adopted promotion's order is found on the adopter")
    eq(spool_orders(adopter, SALE).count(first), 1, "in the adopter's spool once")

    # the victim comes back late: nothing promoted twice
    victim.start()
    ok, _ = wait_for(lambda: outcomes(victim) == after, 10)
    check(ok, "the restarted gateway reads the adopted promotion")
    time.sleep(0.5)  # a few waitlist polls (100 ms)
    r = victim.order(first, token[first])
    eq((r.status, r.json.get("order_id")), (200, first), "the order found through the victim")
    spooled = spool_orders(adopter, SALE) + spool_orders(victim, SALE)
    eq(sorted(spooled), sorted(ids[:STOCK + 1]), "every winner's order in one spool, once")
    eq(held_orders(), sorted(ids[:STOCK + 1]), "Redis holds 3 orders for 3 units: no oversell")
    wonmap = rcmd(redis.port, "HGETALL", K + "won")
    wonmap = dict(zip(wonmap[::2], wonmap[1::2]))
    eq({u: o for u, o in wonmap.items() if o != "-"}, {user[o]: o for o in ids[:STOCK + 1]},
       "the fleet's record: the draw's winners and the first loser, once each, nobody else")
    s = adopter.admin("GET", "/admin/v1/sales/" + SALE).json
    eq((s["stock_left"], s["accepted_units"]), (0, STOCK + 1), "no oversell")
    print("adopted %.1f s after the cut; %.1f s in all" % (waited, time.time() - t0))
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
