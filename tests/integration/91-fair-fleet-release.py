"""Start-window lottery in a fleet: a draw resumed after a release of a
winner's reserve reserves no entrant twice. The fleet draw recorded a winner
in Redis :won after its reserve and spool; a drawer that died in between left
the reserve's idempotency key as the only trace, and a release (the order
failed or was cancelled) deletes that key. The drawer that resumed then
reserved the entrant again: a second order with the same id, which settlement
drops, and one unit held for no order. Now the reservation marks its order id
in the sale's keys in the same script, and no release deletes that mark.

The cut is made by hand, as 90-fair-resume.py does: a finished draw of one
gateway is set back in Redis to where a drawer killed between its last
winner's reserve and :won leaves it (that winner out of :won, no :done, no
lock), that winner's order is released as settlement releases a failed one,
and a second gateway joins and resumes the draw."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, rfc3339  # noqa: E402
from fleet import Redis, need_redis, rcmd, spool_orders, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

LIMITS = ("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0")
SALE = "frel"
K = "{flashgate:fair:%s}:" % SALE
S = "{sale:%s}:" % SALE
# the release script's steps (inventory/inv_redis_lua.h INV_REDIS_LUA_RELEASE), as settlement
# runs it for a failed order: the order, its claim mark, its units and its key go
RELEASE = """
local rec = redis.call('HGET', KEYS[3], ARGV[1])
if not rec then return -7 end
local u, q = string.match(rec, '^(%S+) (%d+)')
redis.call('HDEL', KEYS[4], '\\2claim\\n' .. ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
q = tonumber(q)
local left = redis.call('HINCRBY', KEYS[1], 'left', q)
if redis.call('HINCRBY', KEYS[2], u, -q) <= 0 then redis.call('HDEL', KEYS[2], u) end
local k = string.match(rec, '^%S+ %d+ (%S+)$')
if k then redis.call('HDEL', KEYS[4], u .. '\\n' .. k) end
return left
"""


def drawn(g):
    ok, _ = wait_for(lambda: g.admin("GET", "/admin/v1/sales/%s/draw" % SALE).json.get("state")
                     == "drawn", 20)
    eq(ok, True, "the draw is done on gateway %d" % g.port)
    return g.admin("GET", "/admin/v1/sales/%s/draw" % SALE).json


redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 1, extra=LIMITS)
    a = gws[0]
    r = a.admin("PUT", "/admin/v1/sales/" + SALE, body={
        "stock": 2, "per_user_limit": 1, "starts_at": rfc3339(time.time() + 2),
        "fair_window_ms": 1000, "fair_early_ms": 3600000})
    eq(r.status, 201, "sale with a lottery, stock 2")
    for i in range(5):
        r = a.buy(SALE, "u%d" % i)
        eq((r.status, r.json.get("status")), (202, "entered"), "entry of u%d" % i)
    d = drawn(a)
    order = [e for e in sorted(d["entries"], key=lambda e: e["position"])]
    eq([e["outcome"] for e in order], ["won", "won", "waitlisted", "waitlisted", "waitlisted"],
       "the first two in draw order won, the others wait")
    last, third = order[1], order[2]

    # set the draw back: the drawer died after the reserve of its last winner, before :won
    eq(rcmd(redis.port, "HDEL", K + "won", last["user_id"]), 1, "the last winner out of :won")
    rcmd(redis.port, "DEL", K + "done", K + "lock")
    # ...and that winner's order failed before anyone resumed: released, its key gone with it
    left = rcmd(redis.port, "EVAL", RELEASE, "4", S + "meta", S + "users", S + "orders",
                S + "idem", last["order_id"])
    eq(left, 1, "the released unit is back in the stock")

    b = start_fleet(redis, 1, extra=LIMITS)[0]
    gws.append(b)
    d2 = drawn(b)  # b resumes the draw: the same seed, the same order
    eq((d2["seed"], [e["order_id"] for e in d2["entries"]]),
       (d["seed"], [e["order_id"] for e in order]), "the resumed draw has the same order")
    held = rcmd(redis.port, "HKEYS", S + "orders")
    if isinstance(held, list):
        held = [x.decode() if isinstance(x, bytes) else x for x in held]
    check(last["order_id"] not in held,
          "the released winner was not reserved again (held: %r)" % held)
    eq(last["order_id"] in spool_orders(b, SALE), False, "nor spooled again")
    eq(sorted(held), sorted([order[0]["order_id"], third["order_id"]]),
       "the freed unit went to the next entrant in draw order")
    outcomes = {e["order_id"]: e["outcome"] for e in d2["entries"]}
    eq((outcomes[last["order_id"]], outcomes[third["order_id"]]), ("won", "won"),
       "the released winner stays a winner; the next entrant won the unit")
    s = b.admin("GET", "/admin/v1/sales/" + SALE).json
    eq((s["accepted_units"], s["accepted_orders"], s["stock_left"]), (2, 2, 0),
       "each unit held by one order")

    # Another cut: the drawer's spool refused its first winner (given back, recorded in :won
    # as not accepted, "-"), then it died after its second winner's reserve, before :won.
    # The resumed draw must not take the first one's mark for a winner released since.
    SALE2 = "frel2"
    K2, S2 = "{flashgate:fair:%s}:" % SALE2, "{sale:%s}:" % SALE2
    r = a.admin("PUT", "/admin/v1/sales/" + SALE2, body={
        "stock": 2, "per_user_limit": 1, "starts_at": rfc3339(time.time() + 3),
        "fair_window_ms": 1000, "fair_early_ms": 3600000})
    eq(r.status, 201, "second sale with a lottery, stock 2")
    ok, _ = wait_for(lambda: b.admin("GET", "/admin/v1/sales/" + SALE2).json.get(
        "fair_window_ms") == 1000, 5)
    eq(ok, True, "both gateways have its window")
    for i in range(5):
        r = (a, b)[i % 2].buy(SALE2, "v%d" % i)
        eq((r.status, r.json.get("status")), (202, "entered"), "entry of v%d" % i)
    SALE = SALE2
    d = drawn(a)
    drawn(b)
    order = sorted(d["entries"], key=lambda e: e["position"])
    first, second, third = order[0], order[1], order[2]
    left = rcmd(redis.port, "EVAL", RELEASE, "4", S2 + "meta", S2 + "users", S2 + "orders",
                S2 + "idem", first["order_id"])
    eq(left, 1, "the refused winner's unit was given back")
    rcmd(redis.port, "HSET", K2 + "won", first["user_id"], "-")
    eq(rcmd(redis.port, "HDEL", K2 + "won", second["user_id"]), 1, "the second out of :won")
    rcmd(redis.port, "DEL", K2 + "done", K2 + "lock")
    c = start_fleet(redis, 1, extra=LIMITS)[0]
    gws.append(c)
    d3 = drawn(c)
    outcomes = {e["order_id"]: e["outcome"] for e in d3["entries"]}
    eq([outcomes[e["order_id"]] for e in (first, second, third)], ["lost", "won", "won"],
       "the refused entrant lost, the held one won, the freed unit went on in draw order")
    held = rcmd(redis.port, "HKEYS", S2 + "orders")
    held = sorted(x.decode() if isinstance(x, bytes) else x for x in held)
    eq(held, sorted([second["order_id"], third["order_id"]]), "one order per unit")
except Exception:
    for x in gws:
        print(x.logs())
    raise
finally:
    for x in gws:
        x.cleanup()
    redis.cleanup()
finish()
