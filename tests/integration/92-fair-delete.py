"""Start-window lottery: deleting a sale deletes its lottery. A sale created
again under the same id then has a new lottery, on every gateway: the Redis
inventory's DELETE removes the lottery's keys in Redis (entries, draw, seed,
:won, :done) and every gateway its own record of the draw, else a new sale
under the id with a start window would be refused with 409 lottery_drawn.
In a fleet the deleting gateway leaves a tombstone in the lottery
configuration, and a gateway that still holds the old draw drops it at its
next poll, or at once when it is asked to configure the id; one down across
both the deletion and the creation again (it never reads the tombstone) drops
its copy by the lottery's generation, its entry kept out of the new lottery
(docs/fleet.md). With the memory
inventory the id of a sale deleted with orders held stays refused (409, by
the inventory: the spool replays those orders), and one deleted without
orders gets a new lottery, across a restart too."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, Gateway, need_binary, rfc3339  # noqa: E402
from fleet import Redis, need_redis, rcmd, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

LIMITS = ("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0")


def put_lottery(g, sale, stock, length=1):
    """A lottery whose 1 s window is the whole sale (length 1) or its first second."""
    # The API's timestamps are whole seconds: it starts 1 to 2 s from now, room for
    # every gateway to learn of the lottery first (the fleet polls its lottery
    # configuration every half second) and for the entries before the window closes.
    starts = int(time.time()) + 2
    r = g.admin("PUT", "/admin/v1/sales/" + sale, body={
        "stock": stock, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "ends_at": rfc3339(starts + length), "fair_window_ms": 1000, "fair_early_ms": 3600000})
    return r, starts + length


def draw_of(g, sale):
    return g.admin("GET", "/admin/v1/sales/%s/draw" % sale).json


def drawn(gws, sale):
    for g in gws:
        ok, _ = wait_for(lambda: draw_of(g, sale).get("state") == "drawn", 20)
        eq(ok, True, "%s: drawn on gateway %d" % (sale, g.port))
    return draw_of(gws[0], sale)


def delete_when_ended(g, sale, ends):
    time.sleep(max(0.0, ends + 0.2 - time.time()))  # the sale must have ended to be deleted
    r = g.admin("DELETE", "/admin/v1/sales/" + sale)
    eq((r.status, r.json.get("deleted")), (200, True), "%s: an ended sale is deleted" % sale)


def lottery(gws, sale, stock, creator, users, length=1):
    """A lottery created through creator, entries through every gateway in turn, drawn."""
    r, ends = put_lottery(creator, sale, stock, length)
    eq((r.status, r.json.get("reason")), (201, None), "%s: created (stock %d)" % (sale, stock))
    for g in gws:  # every gateway has this lottery, not the old one's draw
        ok, _ = wait_for(lambda: draw_of(g, sale).get("state") == "open" and
                         g.admin("GET", "/admin/v1/sales/" + sale).json.get("fair_window_ms")
                         == 1000, 5)
        eq(ok, True, "%s: a new, open lottery on gateway %d" % (sale, g.port))
    ids = []
    for i, u in enumerate(users):
        r = gws[i % len(gws)].buy(sale, u)
        eq((r.status, r.json.get("status"), r.json.get("duplicate")), (202, "entered", None),
           "%s: entry of %s" % (sale, u))
        ids.append(r.json["order_id"])
    d = drawn(gws, sale)
    eq((d["entrants"], d["won_orders"]), (len(users), min(stock, len(users))),
       "%s: the draw has this lottery's entrants only" % sale)
    eq(sorted(e["order_id"] for e in d["entries"]), sorted(ids), "%s: its own entries" % sale)
    return d, ends


# ---- a fleet of two gateways on one Redis
redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 2, extra=LIMITS)
    a, b = gws
    ok, _ = wait_for(lambda: all(g.admin("GET", "/admin/v1/stats").json["fleet"]["members"] == 2
                                 for g in gws), 10)
    eq(ok, True, "two members")
    d1, ends = lottery(gws, "fdel", 1, a, ["u1", "u2"])

    delete_when_ended(a, "fdel", ends)
    left = rcmd(redis.port, "KEYS", "{flashgate:fair:fdel}:*")
    eq(left, [], "no key of the deleted sale's lottery is left in Redis")
    conf = rcmd(redis.port, "HGET", "{flashgate:fair}:conf", "fdel")
    eq(conf in (b"-", "-"), True, "its configuration is a tombstone (%r)" % (conf,))

    # created again through b, which still holds the old draw: a new lottery, not 409
    d2, ends = lottery(gws, "fdel", 2, b, ["u1", "u3"])
    check(d2["seed"] != d1["seed"], "a new draw, a new seed")

    # deleted through b, created again through b at once: a learns it from the fleet
    delete_when_ended(b, "fdel", ends)
    # a second of sale after the draw: the buy below meets a drawn sale, not an ended one
    d3, ends = lottery(gws, "fdel", 1, b, ["u2", "u4", "u5"], length=2)
    check(d3["seed"] not in (d1["seed"], d2["seed"]), "a third draw")
    r = a.buy("fdel", "u6")
    eq(r.status in (409, 410), True, "after its draw, first-come as usual (sold out): %d" % r.status)

    # a DELETE of a sale that is gone is 404 and changes nothing
    delete_when_ended(a, "fdel", ends)
    r = b.admin("DELETE", "/admin/v1/sales/fdel")
    eq((r.status, r.json.get("error")), (404, "unknown_sale"), "deleted twice: 404")

    # b down across the deletion and the creation again: it takes an entry of an open
    # lottery and is killed; the lottery is drawn without it, deleted and created again
    # through a. b never reads the tombstone: at its start the new lottery's generation
    # tells it its copy is another lottery's, dropped, not re-keyed into the new one.
    r, ends = put_lottery(a, "fdown", 1)
    eq(r.status, 201, "fdown: created")
    ok, _ = wait_for(lambda: draw_of(b, "fdown").get("state") == "open", 5)
    eq(ok, True, "fdown: open on b")
    old = b.buy("fdown", "u1").json
    eq(old.get("status"), "entered", "fdown: u1 entered through b")
    b.kill9()
    eq(a.buy("fdown", "u2").json.get("status"), "entered", "fdown: u2 entered through a")
    drawn([a], "fdown")
    delete_when_ended(a, "fdown", ends)
    r, ends = put_lottery(a, "fdown", 2)
    eq(r.status, 201, "fdown: created again through a, b down")
    b.start()
    ok, _ = wait_for(lambda: draw_of(b, "fdown").get("state") == "open", 5)
    eq(ok, True, "fdown: the new lottery open on b")
    ids = []
    for g, u in ((a, "u3"), (b, "u4")):
        # b answers 503 (retry) until its first poll read the fleet's configuration: the
        # copy it loaded may be (here is) the deleted lottery's
        ok, _ = wait_for(lambda: g.buy("fdown", u).json.get("status") == "entered", 5)
        eq(ok, True, "fdown: %s entered" % u)
        ids.append(g.buy("fdown", u).json.get("order_id"))
    d4 = drawn(gws, "fdown")
    eq((d4["entrants"], sorted(e["order_id"] for e in d4["entries"])), (2, sorted(ids)),
       "fdown: the new lottery has its own entries only, not b's %s" % old["order_id"])
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()

# ---- one gateway, memory inventory
g = Gateway(*LIMITS, "--kafka-brokers", "none").start()
try:
    # deleted with orders held (its winner's): the inventory keeps the id from being reused
    r, ends = put_lottery(g, "mheld", 1)
    eq(r.status, 201, "mheld: created")
    eq(g.buy("mheld", "u1").json.get("status"), "entered", "mheld: entry")
    drawn([g], "mheld")
    delete_when_ended(g, "mheld", ends)
    r, _ = put_lottery(g, "mheld", 1)
    eq((r.status, r.json.get("error"), r.json.get("reason")), (409, "conflict", None),
       "mheld: the id of a sale deleted with orders held stays refused, by the inventory")

    # deleted without orders (nobody entered): a new lottery under the id
    r, ends = put_lottery(g, "mfree", 1)
    eq(r.status, 201, "mfree: created")
    d1 = drawn([g], "mfree")
    eq(d1["entrants"], 0, "mfree: nobody entered")
    delete_when_ended(g, "mfree", ends)
    d2, _ = lottery([g], "mfree", 1, g, ["u1", "u2"])
    check(d2["seed"] != d1["seed"], "mfree: a new draw")
    g.kill9()
    g.start()
    d3 = draw_of(g, "mfree")
    eq((d3["state"], d3["seed"], d3["entries"]), ("drawn", d2["seed"], d2["entries"]),
       "mfree: after a restart, the new lottery's draw, nothing of the old one")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()
finish()
