"""Start-window lottery on one gateway: the admin API sets and
checks the window, 425 before it, 202 "entered" in it with one entry per user,
entries that survive a kill -9 in the middle of the window, one seeded draw
that allocates the stock exactly (winners are orders in the spool, losers read
410 sold_out with their draw position, waitlisted: with losers waiting, a
first-come buy is 410 too, 102-leftovers.py has the rest), and the same draw
after another restart."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, Gateway, need_binary, rfc3339  # noqa: E402

need_binary("flashgate")

NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none"]
STOCK = 5


tokens = {}


def order_url(oid):
    return "/v1/orders/%s?token=%s" % (oid, tokens[oid])


def wait_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


g = Gateway(*NOLIMITS).start()
try:
    # --- bad input changes nothing ---
    r = g.admin("PUT", "/admin/v1/sales/f0", body={"stock": 5, "fair_window_ms": 1000})
    eq((r.status, r.json["error"]), (400, "bad_request"), "a window without starts_at")
    r = g.admin("PUT", "/admin/v1/sales/f0",
                body={"stock": 5, "starts_at": rfc3339(time.time() + 60), "fair_window_ms": -1})
    eq((r.status, r.json["error"]), (400, "bad_request"), "a negative window")
    r = g.admin("PUT", "/admin/v1/sales/f0",
                body={"stock": 5, "starts_at": rfc3339(time.time() + 60), "fair_window_ms": 700000})
    eq(r.status, 400, "a window past the maximum")
    eq(g.admin("GET", "/admin/v1/sales/f0").status, 404, "no sale was made by bad input")
    eq(g.admin("GET", "/admin/v1/sales/f0/draw").status, 404, "no lottery without a sale")

    # --- the sale: entries open 3 s before the start, window 2 s after it ---
    starts = int(time.time()) + 4
    r = g.admin("PUT", "/admin/v1/sales/fs", body={
        "stock": STOCK, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 2000, "fair_early_ms": 2500})
    eq(r.status, 201, "sale with a lottery created")
    eq((r.json["fair_window_ms"], r.json["fair_early_ms"]), (2000, 2500), "window in the answer")
    eq(g.admin("GET", "/admin/v1/sales/fs").json["fair_window_ms"], 2000, "window in GET")

    r = g.buy("fs", "early-bird")
    eq((r.status, r.json["error"]), (425, "sale_not_started"), "425 before starts_at - early")

    wait_until(starts - 2.5 + 0.05)
    entries, tokens = {}, {}
    for i in range(20):
        r = g.buy("fs", "u%02d" % i)
        eq((r.status, r.json["status"]), (202, "entered"), "entry u%02d" % i)
        check(r.headers.get("location") == "/v1/orders/%s?token=%s" % (r.json["order_id"], r.json["status_token"]),
              "Location of entry")
        check("user_id" not in r.json, "the user id is not echoed")
        tokens[r.json["order_id"]] = r.json["status_token"]
        check(int(r.headers.get("retry-after", "0")) >= 1, "Retry-After points at the draw")
        entries["u%02d" % i] = r.json["order_id"]
    r = g.buy("fs", "u03")
    eq((r.status, r.json["order_id"], r.json.get("duplicate")), (202, entries["u03"], True),
       "a second buy of a user returns the first entry")
    r = g.get(order_url(entries["u05"]))
    eq((r.status, r.json["status"]), (200, "entered"), "GET of an entry before the draw")
    eq(g.get("/v1/orders/" + entries["u05"]).status, 404, "an entry without its token is unknown")
    eq(g.admin("GET", "/admin/v1/sales/fs").json["stock_left"], STOCK, "entries take no stock")

    # --- kill -9 in the middle of the window: entries are durable ---
    g.kill9()
    g.start()
    check(time.time() < starts + 2, "restarted inside the window (else the test proves nothing)")
    r = g.buy("fs", "u07")
    eq((r.status, r.json["order_id"]), (202, entries["u07"]), "entry of before the restart kept")
    for i in range(20, 30):
        r = g.buy("fs", "u%02d" % i)
        eq((r.status, r.json["status"]), (202, "entered"), "entry u%02d after restart" % i)
        entries["u%02d" % i] = r.json["order_id"]
        tokens[r.json["order_id"]] = r.json["status_token"]
    check(len(set(entries.values())) == 30, "30 distinct entry ids")
    d = g.admin("GET", "/admin/v1/sales/fs/draw").json
    eq((d["state"], d["entrants"], d["duplicates"] >= 1), ("open", 30, True),
       "30 entrants, the duplicate (counted since the restart) not among them")

    # --- the draw ---
    wait_until(starts + 2)
    deadline = time.time() + 15
    while time.time() < deadline:
        d = g.admin("GET", "/admin/v1/sales/fs/draw").json
        if d["state"] == "drawn":
            break
        time.sleep(0.05)
    eq(d["state"], "drawn", "the draw ran when the window closed")
    check(len(d["seed"]) == 16, "the seed is recorded")
    eq(sorted(e["position"] for e in d["entries"]), list(range(1, 31)), "positions 1..30")
    eq([e["position"] for e in d["entries"]], list(range(1, 31)), "entries listed in draw order")
    won = [e for e in d["entries"] if e["outcome"] == "won"]
    eq((len(won), d["won_units"]), (STOCK, STOCK), "stock exactly allocated")
    eq([e["position"] for e in won], list(range(1, STOCK + 1)), "winners are the first drawn")
    eq({e["user_id"]: e["order_id"] for e in d["entries"]}, entries, "every entrant drawn once")
    s = g.admin("GET", "/admin/v1/sales/fs").json
    eq((s["stock_left"], s["accepted_units"], s["accepted_orders"]), (0, STOCK, STOCK),
       "inventory holds the winners only")
    eq(sorted(g.spool_ids()), sorted(e["order_id"] for e in won), "winners are in the spool, once")
    for e in d["entries"]:
        r = g.get(order_url(e["order_id"]))
        if e["outcome"] == "won":
            eq((r.status, r.json["status"]), (200, "queued"), "winner's order")
        else:
            eq((r.status, r.json["error"], r.json["draw_position"], r.json["entrants"],
                r.json["status"], r.json["waitlist_position"]),
               (410, "sold_out", e["position"], 30, "waitlisted", e["position"] - STOCK),
               "loser reads sold_out with its position, waitlisted")
    r = g.buy("fs", "late-comer")
    eq((r.status, r.json["error"]), (410, "sold_out"), "after the draw: sold out to the waitlist")
    eq(r.json.get("waitlist"), True, "the 410 says the losers wait for freed units")
    r = g.buy("fs", "u03")
    check(r.status in (409, 410), "an entrant buying again after the draw gets no second unit")

    # --- a restart after the draw keeps it ---
    g.stop()
    g.start()
    d2 = g.admin("GET", "/admin/v1/sales/fs/draw").json
    eq((d2["state"], d2["seed"], d2["entries"]), ("drawn", d["seed"], d["entries"]),
       "the draw is the same after a restart")
    eq(sorted(g.spool_ids()), sorted(e["order_id"] for e in won), "no winner spooled twice")
    st = g.admin("GET", "/admin/v1/stats").json["fair"]
    eq((st["entries"], st["won_orders"]), (30, STOCK), "stats")

    # --- fair by default: a new sale with a start and no word on its lottery gets
    # sales.default_fair_window_ms (1000) and default_fair_early_ms (1000); "fair_window_ms": 0
    # is first-come; a waiting room, an update, or a window already over get no default ---
    soon = rfc3339(time.time() + 600)
    r = g.admin("PUT", "/admin/v1/sales/dflt", body={"stock": 5, "starts_at": soon})
    eq((r.status, r.json.get("fair_window_ms"), r.json.get("fair_early_ms")), (201, 1000, 1000),
       "a new sale with starts_at gets the default window and early acceptance")
    eq(g.admin("GET", "/admin/v1/sales/dflt/draw").json["fair_window_ms"], 1000,
       "and its lottery")
    r = g.buy("dflt", "d1")
    eq((r.status, r.json["error"]), (425, "sale_not_started"), "425 before it as ever")
    r = g.admin("PUT", "/admin/v1/sales/fcfs", body={"stock": 5, "starts_at": soon,
                                                     "fair_window_ms": 0})
    eq((r.status, "fair_window_ms" in r.json), (201, False), "fair_window_ms 0: first-come")
    eq(g.admin("GET", "/admin/v1/sales/fcfs/draw").status, 404, "no lottery")
    r = g.admin("PUT", "/admin/v1/sales/fcfs", body={"stock": 6, "starts_at": soon})
    eq((r.status, "fair_window_ms" in r.json), (200, False), "an update keeps it first-come")
    r = g.admin("PUT", "/admin/v1/sales/room", body={"stock": 5, "starts_at": soon,
                                                     "waiting_room_rate": 10})
    eq((r.status, "fair_window_ms" in r.json), (201, False), "a waiting room gets no window")
    r = g.admin("PUT", "/admin/v1/sales/past", body={"stock": 5,
                                                     "starts_at": rfc3339(time.time() - 60)})
    eq((r.status, "fair_window_ms" in r.json), (201, False), "a start long past gets no window")
    r = g.admin("PUT", "/admin/v1/sales/early", body={"stock": 5, "starts_at": soon,
                                                      "fair_early_ms": 300})
    eq((r.status, r.json.get("fair_window_ms"), r.json.get("fair_early_ms")), (201, 1000, 300),
       "fair_early_ms alone: the default window with it")

    # --- the subnet limit (a bot signal beside per-IP): on by default (unit.gw_config), off
    # here by NOLIMITS, then set at run time ---
    g.put_sale("plain", stock=100, per_user_limit=1, fair_window_ms=0)
    eq(g.admin("GET", "/admin/v1/limits").json["subnet_rps"], 0, "subnet limit off by the flags")
    r = g.admin("PATCH", "/admin/v1/limits", body={"subnet_rps": 0.001, "subnet_burst": 2})
    eq(r.status, 200, "subnet limit set at run time")
    got = [g.buy("plain", "sn%d" % i) for i in range(3)]
    eq([x.status for x in got], [202, 202, 429], "the third buy from 127.0.0.0/24 is refused")
    eq(got[2].json["scope"], "subnet", "refused by the subnet scope")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()
finish()
