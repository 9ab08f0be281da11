"""Start-window lottery across a fleet of three gateways on one real Redis:
the window set through one gateway reaches all; a bot-heavy crowd enters
through every gateway (bots send their buy to all three, repeatedly), and a
gateway killed -9 in the middle of the window keeps its entries; one
draw for the sale, not one per gateway: every gateway reports the same seed,
entrants (each user once) and winners; the stock is allocated exactly (Redis
and the admin views agree), every winner's order is in exactly one spool,
every gateway answers for every entry (losers 410 with their position), and
the bots' units stay within the 5-sigma level of their share of entrants."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, rfc3339  # noqa: E402
from fgq import hyper_limit  # noqa: E402
from fleet import BIN, Redis, need_redis, spool_orders, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

STOCK = 40
PEOPLE, BOTS = 180, 120



redis = Redis().start()
gws = []
try:
    # every entry must be answered 202: a 1 s Redis timeout, as in 60-fleet, so
    # that an fsync stall under ASan is not mistaken for a lost entry
    gws = start_fleet(redis, 3, extra=("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
                                       "--set", "inventory.redis_timeout=1s"))
    g0 = gws[0]
    starts = int(time.time()) + 4
    r = g0.admin("PUT", "/admin/v1/sales/ff", body={
        "stock": STOCK, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 3000, "fair_early_ms": 3500})
    eq(r.status, 201, "sale with a lottery created through one gateway")
    ok, _ = wait_for(lambda: all(g.admin("GET", "/admin/v1/sales/ff").json.get("fair_window_ms") == 3000
                                 for g in gws), 5)
    check(ok, "every gateway has the window within a second or so")
    # starts_at is whole seconds: the early window may open up to ~0.5 s from now
    # (an entry before it is 425 not_started, as it should be)
    time.sleep(max(0.0, starts - 3.5 + 0.05 - time.time()))

    # --- entries through every gateway ---
    entries, tokens, where = {}, {}, {}
    users = ["p%03d" % i for i in range(PEOPLE)] + ["b%03d" % i for i in range(BOTS)]
    # every other person sends Idempotency-Key "-": a valid key, and the word the
    # entry log and the fleet push once used for "no key" too
    dash = {u for i, u in enumerate(users) if u.startswith("p") and i % 2 == 0}
    for i, u in enumerate(users):
        targets = gws if u.startswith("b") else [gws[i % 3]]
        reps = 3 if u.startswith("b") else 1
        for _ in range(reps):
            for g in targets:
                r = g.buy("ff", u, key="-" if u in dash else None)
                eq((r.status, r.json.get("status")), (202, "entered"), "entry of %s" % u)
                oid = r.json["order_id"]
                tokens[oid] = r.json["status_token"]
                where.setdefault(u, set()).add(oid)
                entries.setdefault(u, oid)
    # a gateway killed -9 in the middle of the window keeps its entries (its local log)
    gws[2].kill9()
    gws[2].start()
    u = users[2]  # a person who entered through gws[2]
    r = gws[2].buy("ff", u)
    eq((r.status, r.json.get("order_id")), (202, entries[u]), "entry kept across a kill -9")
    check(time.time() < starts + 3, "entries made inside the window (else the test proves nothing)")

    # --- one draw for the sale ---
    def drawn():
        return all(g.admin("GET", "/admin/v1/sales/ff/draw").json["state"] == "drawn" for g in gws)
    time.sleep(max(0, starts + 3 - time.time()))
    ok, waited = wait_for(drawn, 20)
    check(ok, "every gateway knows the draw (%.1f s after the close)" % waited)
    ds = [g.admin("GET", "/admin/v1/sales/ff/draw").json for g in gws]
    eq(len({d["seed"] for d in ds}), 1, "one seed across the fleet")
    eq([d["entrants"] for d in ds], [PEOPLE + BOTS] * 3, "each user entered once, fleet-wide")
    orders = [[(e["position"], e["user_id"], e["outcome"]) for e in d["entries"]] for d in ds]
    check(orders[0] == orders[1] == orders[2], "the same draw order and outcomes on every gateway")
    won = [e for e in ds[0]["entries"] if e["outcome"] == "won"]
    eq(len(won), STOCK, "stock exactly allocated")
    eq(sorted(e["position"] for e in won), list(range(1, STOCK + 1)), "winners are the first drawn")
    for g in gws:
        s = g.admin("GET", "/admin/v1/sales/ff").json
        eq((s["stock_left"], s["accepted_units"]), (0, STOCK), "inventory view (port %d)" % g.port)
    spooled = []
    for g in gws:
        spooled += spool_orders(g, "ff")
    eq(sorted(spooled), sorted(e["order_id"] for e in won), "every winner's order in one spool, once")
    for e in won:
        check(e["order_id"] in where[e["user_id"]], "a winner's order id is an entry id it was given")
    keys = {}
    for g in gws:
        out = subprocess.run([os.path.join(BIN, "flashgate-spool"), "dump", "--data-dir", g.data_dir],
                             capture_output=True, text=True, timeout=60, check=True)
        for line in out.stdout.splitlines():
            rec = json.loads(line)
            if "order_id" in rec:
                keys[rec["order_id"]] = rec.get("idem_key", "")
    won_dash = [e for e in won if e["user_id"] in dash]
    check(len(won_dash) > 0, "some winners entered with Idempotency-Key \"-\"")
    eq({keys[e["order_id"]] for e in won_dash}, {"-"},
       "a winner's order keeps the Idempotency-Key \"-\" it entered with (through the fleet push)")

    # --- any gateway answers for any entry ---
    for i, e in enumerate(ds[0]["entries"][:60]):
        g = gws[i % 3]
        r = g.get("/v1/orders/%s?token=%s" % (e["order_id"], tokens[e["order_id"]]))
        if e["outcome"] == "won":
            eq((r.status, r.json["status"]), (200, "queued"), "winner via port %d" % g.port)
        else:
            eq((r.status, r.json["error"], r.json["draw_position"]), (410, "sold_out", e["position"]),
               "loser via port %d" % g.port)

    # --- fairness: the bots' units against their share of entrants ---
    bots_won = sum(1 for e in won if e["user_id"].startswith("b"))
    limit = hyper_limit(PEOPLE + BOTS, BOTS, STOCK)
    print("fleet: bots %d of %d entrants, won %d of %d (5-sigma level %d)"
          % (BOTS, PEOPLE + BOTS, bots_won, STOCK, limit))
    check(bots_won <= limit, "bots' units within the 5-sigma level of their share of entrants")
    r = gws[1].buy("ff", "late")
    eq((r.status, r.json["error"]), (410, "sold_out"), "after the draw: first-come")
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
