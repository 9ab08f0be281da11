"""Persons across a fleet (docs/identity.md "Persons"): three gateways on one
redis-server, identity.mode=jwt with one JWK set file and
identity.person_claim=person, tokens minted by flashgate-token with --person.

  - per_user_limit counts per person: two accounts of one person buying on
    different gateways get one 202 and one 409 limit_per_user (a third account
    on the third gateway too), another person buys; Redis holds the mark
    under the person, never under an account, and the spooled order keeps the
    account as user_id with the person beside it;
  - one lottery entry per person: a second account of an entered person on the
    same gateway is refused 409 already_entered (neither the entry id nor a
    status token in it), the same account again gets its own entry back; a
    second account of the person on another gateway is refused alike at
    entry (the fleet's mark of the person, taken with the first entry), and
    the account's own retry there gets its entry back; one entrant of the
    fleet's draw (its Redis entry keyed by the person, the account in the
    value); the entry reads entered on every gateway before the draw (with
    its status token only) and its outcome on every gateway after;
  - no oversell: each sale's units held never pass its stock, in Redis and in
    the spools.
Bounded: ~30 requests, one 1 s lottery window (~9 s)."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, check, eq, finish, need_binary, request, rfc3339  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-token")
need_redis()

TMP = tempfile.mkdtemp(prefix="fg-personfleet-")
ISSUER = os.path.join(TMP, "issuer")  # the shop's login service: its key
LOT_STOCK = 3


def token(user, person):
    out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER,
                          "--person", person, user], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError("flashgate-token: %s" % out.stderr)
    return out.stdout.strip()


def buy(g, sale, tok, ip="10.1.0.1"):
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale, body={"qty": 1},
                   headers={"X-Forwarded-For": ip, "Authorization": "Bearer " + tok},
                   timeout=10)


def spooled(g, sale, kind=None):
    """The spool's orders of the sale (kind None), or its events of that type."""
    out = subprocess.run([os.path.join(BIN, "flashgate-spool"), "dump", "--data-dir", g.data_dir],
                         capture_output=True, text=True, timeout=60, check=True)
    recs = [json.loads(ln) for ln in out.stdout.splitlines()]
    recs = [r.get("event", r) for r in recs]  # an event is {"event":{...},"pos":...}
    return [r for r in recs if r.get("sale_id") == sale and r.get("type") == kind]


os.makedirs(ISSUER)
subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER, "--init", "--jwks"],
               capture_output=True, check=True, timeout=20)
jwks = os.path.join(TMP, "jwks.json")
with open(jwks, "w") as f:
    f.write(subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER, "--jwks"],
                           capture_output=True, text=True, check=True, timeout=20).stdout)

# every token minted before the clock starts: a flashgate-token run costs ~0.5 s
# under a sanitizer, and the lottery's window below must not wait for them
TOK = {u: token(u, p) for u, p in (("acct-a", "p-1"), ("acct-b", "p-1"), ("acct-c", "p-1"),
                                   ("acct-d", "p-2"), ("lot-a", "p-3"), ("lot-b", "p-3"),
                                   ("lot-c", "p-3"))}
TOK.update({"solo-%d" % i: token("solo-%d" % i, "q-%d" % i) for i in range(6)})

redis = Redis(aof=False)
gws = []
try:
    redis.start()
    gws = start_fleet(redis, 3, extra=(
        "--set", "identity.mode=jwt", "--set", "identity.jwks_file=" + jwks,
        "--set", "identity.person_claim=person",
        "--server-trusted-proxies", "127.0.0.1/32",
        "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0",
        "--set", "limits.subnet_rps=0"))
    g1, g2, g3 = gws

    # --- per_user_limit per person, across gateways ---
    g1.put_sale("pf", stock=100, per_user_limit=1)
    # the early window opens 0.5 s from now and the window closes 9 s from now:
    # the per-person buys below run in between, slowly under a sanitizer
    starts = int(time.time()) + 8
    r = g1.admin("PUT", "/admin/v1/sales/pl", body={
        "stock": LOT_STOCK, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 1000, "fair_early_ms": 7500})
    eq(r.status, 201, "lottery sale created through gw1")
    ok, _ = wait_for(lambda: all(g.admin("GET", "/admin/v1/sales/pl").json.get("fair_window_ms")
                                 == 1000 and g.admin("GET", "/admin/v1/sales/pf").status == 200
                                 for g in gws), 5)
    check(ok, "both sales reach every gateway")

    ra = buy(g1, "pf", TOK["acct-a"])
    rb = buy(g2, "pf", TOK["acct-b"], ip="10.1.0.2")
    rc = buy(g3, "pf", TOK["acct-c"], ip="10.1.0.3")
    eq(ra.status, 202, "acct-a of p-1 buys on gw1")
    eq((rb.status, rb.json.get("error")), (409, "limit_per_user"),
       "acct-b of the same person on gw2: per_user_limit (%r)" % rb)
    eq((rc.status, rc.json.get("error")), (409, "limit_per_user"),
       "acct-c of the same person on gw3: per_user_limit")
    rd = buy(g2, "pf", TOK["acct-d"], ip="10.1.0.4")
    eq(rd.status, 202, "another person's account buys on gw2")
    eq(redis.cmd("HGET", "{sale:pf}:users", "p-1"), "1", "Redis holds p-1's unit under the person")
    eq(redis.cmd("HGET", "{sale:pf}:users", "acct-a"), None, "and nothing under the account")
    recs = spooled(g1, "pf")
    eq([(x["user_id"], x.get("person")) for x in recs], [("acct-a", "p-1")],
       "the spooled order keeps the account as user_id and names the person")
    r = request(g1.port, "GET", "/v1/orders/%s" % ra.json["order_id"],
                headers={"Authorization": "Bearer " + TOK["acct-a"]}, timeout=10)
    eq(r.status, 200, "the account reads its order without the status token")
    r = request(g1.port, "GET", "/v1/orders/%s" % ra.json["order_id"],
                headers={"Authorization": "Bearer " + TOK["acct-b"]}, timeout=10)
    check(r.status != 200, "another account of the person does not (%d)" % r.status)
    # an operator's cancel gives the unit back to the person (the inventory names the
    # person, not the account), so another account of the person may buy again
    r = g1.admin("POST", "/admin/v1/orders/%s/cancel" % ra.json["order_id"], body={"reason": "t"})
    check(r.status in (200, 202), "acct-a's order cancelled: %r" % r)
    ok, _ = wait_for(lambda: redis.cmd("HGET", "{sale:pf}:users", "p-1") is None, 5)
    check(ok, "the cancel released p-1's mark in Redis")
    eq([x.get("person") for x in spooled(g1, "pf", "release")], ["p-1"],
       "the release event names the person")
    rb = buy(g2, "pf", TOK["acct-b"], ip="10.1.0.2")
    eq(rb.status, 202, "then acct-b of p-1 buys on gw2 (%r)" % rb)

    # --- one lottery entry per person ---
    la, lb, lc = TOK["lot-a"], TOK["lot-b"], TOK["lot-c"]
    solo = [TOK["solo-%d" % i] for i in range(6)]
    time.sleep(max(0.0, starts - 7.5 + 0.1 - time.time()))  # the early window is open
    ea = buy(g1, "pl", la, ip="10.2.0.1")
    eq((ea.status, ea.json.get("status")), (202, "entered"), "lot-a of p-3 enters on gw1 (%r)" % ea)
    ec = buy(g1, "pl", lc, ip="10.2.0.3")
    eq((ec.status, ec.json.get("reason")), (409, "already_entered"),
       "lot-c of the same person on gw1: 409 already_entered (%r)" % ec)
    check("order_id" not in ec.json and "status_token" not in ec.json and
          ea.json["order_id"] not in ec.raw.decode() and
          ea.json["status_token"] not in ec.raw.decode(),
          "the 409 gives neither the other account's entry id nor its token")
    again = buy(g1, "pl", la, ip="10.2.0.1")
    eq((again.status, again.json.get("order_id"), again.json.get("duplicate")),
       (202, ea.json["order_id"], True), "lot-a again: its own entry back")
    # the fleet's mark of p-3 (taken at gw1's entry) refuses another account anywhere
    eb = buy(g2, "pl", lb, ip="10.2.0.2")
    eq((eb.status, eb.json.get("reason")), (409, "already_entered"),
       "lot-b of p-3 on gw2: 409 already_entered, as on one gateway (%r)" % eb)
    check("order_id" not in eb.json and "status_token" not in eb.json and
          ea.json["order_id"] not in eb.raw.decode() and
          ea.json["status_token"] not in eb.raw.decode(),
          "gw2's 409 gives neither the other account's entry id nor its token")
    again = buy(g3, "pl", la, ip="10.2.0.1")
    eq((again.status, again.json.get("order_id"), again.json.get("duplicate")),
       (202, ea.json["order_id"], True), "lot-a again through gw3: its own entry back")
    # an entry is readable on every gateway before the draw, with its status token only
    for g in (g2, g3):
        r = g.get("/v1/orders/%s?token=%s" % (ea.json["order_id"], ea.json["status_token"]))
        eq((r.status, r.json.get("status")), (200, "entered"),
           "gw%d reads gw1's entry as entered (%r)" % (gws.index(g) + 1, r))
        r = g.get("/v1/orders/%s?token=%s" % (ea.json["order_id"], "0" * 43))
        eq(r.status, 404, "without its status token gw%d knows no such entry" %
           (gws.index(g) + 1))
    others = {}
    for i in range(6):
        r = buy(gws[i % 3], "pl", solo[i], ip="10.3.0.%d" % (i + 1))
        eq((r.status, r.json.get("status")), (202, "entered"), "solo-%d enters" % i)
        others["solo-%d" % i] = r.json["order_id"]
    check(time.time() < starts + 1, "entries made inside the window (else the test proves nothing)")

    def drawn():
        return all(g.admin("GET", "/admin/v1/sales/pl/draw").json["state"] == "drawn" for g in gws)
    time.sleep(max(0.0, starts + 1 - time.time()))
    ok, waited = wait_for(drawn, 15)
    check(ok, "every gateway knows the draw (%.1f s after the close)" % waited)
    d = g3.admin("GET", "/admin/v1/sales/pl/draw").json
    eq(d["entrants"], 7, "7 entrants: p-3 once and the 6 others")
    p3 = [e for e in d["entries"] if e["user_id"] in ("lot-a", "lot-b", "lot-c")]
    eq(len(p3), 1, "one entry of p-3 in the draw: %r" % p3)
    drawn_id = p3[0]["order_id"]
    # the frozen entrants (:e renamed at the draw)
    ent = redis.cmd("HGET", "{flashgate:fair:pl}:drawn", "p-3") or ""
    check(ent.startswith(drawn_id + " ") and ent.split()[-1] in ("@lot-a", "@lot-b"),
          "the fleet's entry is keyed by the person, the account in its value: %r" % ent)
    eq(redis.cmd("HEXISTS", "{flashgate:fair:pl}:drawn", "lot-a") +
       redis.cmd("HEXISTS", "{flashgate:fair:pl}:drawn", "lot-b"), 0, "not by an account")
    eq(drawn_id, ea.json["order_id"], "the drawn entry is lot-a's, the only one p-3 was given")
    eq(ent.split()[-1], "@lot-a", "and names lot-a")
    # after the draw every gateway reads the entry's outcome alike
    outcome = [e["outcome"] for e in d["entries"] if e["order_id"] == drawn_id][0]
    for g in gws:
        r = g.get("/v1/orders/%s?token=%s" % (ea.json["order_id"], ea.json["status_token"]))
        if outcome == "won":
            check(r.status == 200 and r.json.get("status") != "entered",
                  "gw%d reads lot-a's entry won (%r)" % (gws.index(g) + 1, r))
        else:
            eq((r.status, r.json.get("error")), (410, "sold_out"),
               "gw%d reads lot-a's entry lost (%r)" % (gws.index(g) + 1, r))
    won = [e for e in d["entries"] if e["outcome"] == "won"]
    eq(len(won), LOT_STOCK, "the stock allocated exactly")
    eq(len({e["user_id"] for e in won}), LOT_STOCK, "one unit per winner")

    # --- no oversell, in Redis and in the spools ---
    for sale, stock in (("pf", 100), ("pl", LOT_STOCK)):
        s = g2.admin("GET", "/admin/v1/sales/" + sale).json
        check(0 <= s["accepted_units"] <= stock and s["stock_left"] == stock - s["accepted_units"],
              "%s: %d of %d units held, %d left" % (sale, s["accepted_units"], stock,
                                                    s["stock_left"]))
        released = {x["order_id"] for g in gws for x in spooled(g, sale, "release")}
        units = sum(x["qty"] for g in gws for x in spooled(g, sale)
                    if x["order_id"] not in released)
        eq(units, s["accepted_units"],
           "%s: the spools hold exactly the units Redis holds (%d released)" % (sale, len(released)))
        marks = redis.cmd("HGETALL", "{sale:%s}:users" % sale) or []
        vals = [int(v) for v in marks[1::2]] if isinstance(marks, list) else \
            [int(v) for v in marks.values()]
        check(all(v <= 1 for v in vals), "%s: no person over per_user_limit: %r" % (sale, marks))
    lot = [x for g in gws for x in spooled(g, "pl")]
    eq(sorted(x["order_id"] for x in lot), sorted(e["order_id"] for e in won),
       "every winner's order spooled once")
    for x in lot:
        if x["user_id"] in ("lot-a", "lot-b"):
            eq(x.get("person"), "p-3", "a winner's order names its person")
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
    subprocess.run(["rm", "-rf", TMP], check=False)
finish()
