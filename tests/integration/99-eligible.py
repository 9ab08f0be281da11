"""Per-sale eligibility (docs/identity.md "Eligibility"): one gateway in jwt
mode with the data dir's key, identity.eligibility_claims=phone_verified,
email_verified and identity.account_created_claim=created_at. A sale requiring
phone_verified and a 30-day-old account answers 403 not_eligible, with the
reason naming what is missing, to a token without the claim, with it false or
not a boolean, too young, or of unknown age, and changes nothing (stock,
accepted units, the buyer's per-user allowance: the same buyer buys once
eligible); an eligible token buys. The lottery entry and the waiting room's
join are refused alike (no entrant, no place). The admin PUT refuses (400,
naming it) a claim not in identity.eligibility_claims, a value other than true,
and an age out of range, leaving the sale as it was; GET shows the rule."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, check, eq, finish, Gateway, need_binary, request, rfc3339  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-token")

DAY = 86400
NOW = int(time.time())


def token(g, user, *claims):
    cmd = [os.path.join(BIN, "flashgate-token"), "--data-dir", g.data_dir]
    for c in claims:
        cmd += ["--claim", c]
    out = subprocess.run(cmd + [user], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError("flashgate-token: %s" % out.stderr)
    return out.stdout.strip()


def buy(g, sale, tok):
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale, body=json.dumps({"qty": 1}),
                   headers={"Content-Type": "application/json",
                            "Authorization": "Bearer " + tok})


def sale(g, sid):
    return g.admin("GET", "/admin/v1/sales/" + sid).json


LONG = ["c%02d_" % i + "x" * 58 for i in range(14)]  # 16 names of up to 63 characters
g = Gateway("--set", "identity.eligibility_claims=phone_verified, email_verified," + ",".join(LONG),
            "--set", "identity.account_created_claim=created_at", identity_mode="jwt").start()
try:
    old = "created_at=%d" % (NOW - 60 * DAY)
    young = "created_at=%d" % (NOW - 10 * DAY)
    r = g.admin("PUT", "/admin/v1/sales/s1", body={
        "stock": 10, "per_user_limit": 1, "require_claims": {"phone_verified": True},
        "min_account_age_days": 30})
    eq(r.status, 201, "sale with an eligibility rule created: %s" % r.json)
    eq((r.json.get("require_claims"), r.json.get("min_account_age_days")),
       ({"phone_verified": True}, 30), "the PUT's answer shows the rule")
    s = sale(g, "s1")
    eq((s.get("require_claims"), s.get("min_account_age_days")),
       ({"phone_verified": True}, 30), "GET of the sale shows the rule")
    listed = {x["sale_id"]: x for x in g.admin("GET", "/admin/v1/sales").json["sales"]}
    eq(listed["s1"].get("min_account_age_days"), 30, "the sales list shows the rule")
    before = sale(g, "s1")

    cases = [
        ("no claim", token(g, "ann", old), "claim phone_verified"),
        ("claim false", token(g, "ann", "phone_verified=false", old), "claim phone_verified"),
        ("claim a string", token(g, "ann", 'phone_verified:="true"', old),
         "claim phone_verified"),
        ("another claim only", token(g, "ann", "email_verified=true", old),
         "claim phone_verified"),
        ("too young", token(g, "ann", "phone_verified=true", young),
         "account younger than 30 days"),
        ("age unknown", token(g, "ann", "phone_verified=true"), "account age unknown"),
        ("age not an integer", token(g, "ann", "phone_verified=true", 'created_at:="2020"'),
         "account age unknown"),
    ]
    for what, tok, reason in cases:
        for attempt in (1, 2):  # the second is answered from the verified-token cache
            r = buy(g, "s1", tok)
            eq((r.status, r.json.get("error"), r.json.get("reason")),
               (403, "not_eligible", reason), "%s (attempt %d)" % (what, attempt))
    after = sale(g, "s1")
    for k in ("stock_left", "accepted_units", "accepted_orders"):
        eq(after.get(k), before.get(k), "403s changed nothing: %s" % k)
    ok = token(g, "ann", "phone_verified=true", old)
    r = buy(g, "s1", ok)
    eq(r.status, 202, "eligible: the same buyer buys (their per-user allowance untouched)")
    eq(sale(g, "s1")["stock_left"], before["stock_left"] - 1, "one unit taken by the eligible buy")
    r = buy(g, "s1", ok)
    eq((r.status, r.json.get("error")), (409, "limit_per_user"),
       "and the per-user limit counts only that buy")
    m = g.admin("GET", "/metrics").raw.decode()
    check('code="not_eligible"' in m, "replies counted under code not_eligible")

    # ---- the lottery entry (same route) ----
    r = g.admin("PUT", "/admin/v1/sales/lot", body={
        "stock": 5, "starts_at": rfc3339(NOW + 30), "fair_window_ms": 2000,
        "fair_early_ms": 60000, "require_claims": {"phone_verified": True}})
    eq(r.status, 201, "lottery sale with a rule: %s" % r.json)
    r = buy(g, "lot", token(g, "bo", old))
    eq((r.status, r.json.get("reason")), (403, "claim phone_verified"), "lottery entry refused")
    eq(g.admin("GET", "/admin/v1/sales/lot/draw").json.get("entrants", 0), 0, "no entrant")
    r = buy(g, "lot", token(g, "bo", "phone_verified=true"))
    eq((r.status, r.json.get("status")), (202, "entered"), "eligible entry (no age rule)")

    # ---- registration: an ineligible person is not registered ----
    r = g.admin("PUT", "/admin/v1/sales/reg", body={
        "stock": 5, "starts_at": rfc3339(NOW + 60), "fair_window_ms": 2000,
        "registration_opens_at": rfc3339(NOW - 10), "registration_closes_at": rfc3339(NOW + 30),
        "require_claims": {"phone_verified": True}})
    eq(r.status, 201, "registration sale with a rule: %s" % r.json)

    def register(tok):
        return request(g.port, "POST", "/v1/sales/reg/registrations",
                       headers={"Authorization": "Bearer " + tok})
    r = register(token(g, "dee", old))
    eq((r.status, r.json.get("error"), r.json.get("reason")),
       (403, "not_eligible", "claim phone_verified"), "ineligible registration refused")
    eq(g.admin("GET", "/admin/v1/sales/reg/registrations").json.get("count"), 0,
       "nobody registered")
    r = register(token(g, "dee", "phone_verified=true"))
    eq(r.status, 201, "eligible: registered")

    # ---- the waiting room's join ----
    r = g.admin("PUT", "/admin/v1/sales/wr", body={
        "stock": 5, "waiting_room_rate": 100, "min_account_age_days": 30})
    eq(r.status, 201, "room sale with an age rule: %s" % r.json)

    def join(tok):
        return request(g.port, "GET", "/v1/sales/wr/queue?join=1",
                       headers={"Authorization": "Bearer " + tok})
    r = join(token(g, "cy", young))
    eq((r.status, r.json.get("error"), r.json.get("reason")),
       (403, "not_eligible", "account younger than 30 days"), "room join refused")
    eq(g.get("/v1/sales/wr/queue").json["queued"], 0, "the refused join took no place")
    r = join(token(g, "cy", old))
    eq(r.status, 200, "old enough: a place")
    eq(g.get("/v1/sales/wr/queue").json["queued"], 1, "one place taken")

    # ---- all 16 claims of 63 characters: the answer outgrows the small body ----
    every = dict({"phone_verified": True, "email_verified": True}, **{n: True for n in LONG})
    r = g.admin("PUT", "/admin/v1/sales/big", body={"stock": 1, "require_claims": every})
    eq((r.status, r.json.get("require_claims")), (201, every), "16 long names: the PUT's answer")
    eq(sale(g, "big").get("require_claims"), every, "and GET")
    eq(buy(g, "big", token(g, "eve", "phone_verified=true", "email_verified=true",
                           *[n + "=true" for n in LONG[:13]])).json.get("reason"),
       "claim " + LONG[13], "the one claim missing of 16 is named")

    # ---- admin refusals leave the sale as it was ----
    for body, needle in [
        ({"stock": 10, "require_claims": {"kyc": True}}, '"kyc" is not in identity.eligibility'),
        ({"stock": 10, "require_claims": {"phone_verified": False}}, "must be true"),
        ({"stock": 10, "require_claims": ["phone_verified"]}, "must be an object"),
        ({"stock": 10, "min_account_age_days": 36501}, "min_account_age_days"),
        ({"stock": 99, "require_claims": {"phone_verified": True, "nope": True}}, '"nope"'),
    ]:
        r = g.admin("PUT", "/admin/v1/sales/s1", body=body)
        eq(r.status, 400, "refused: %s" % json.dumps(body))
        check(needle in (r.json.get("message") or ""), "names it: %r in %r"
              % (needle, r.json.get("message")))
    s = sale(g, "s1")
    eq((s["stock_total"], s.get("require_claims"), s.get("min_account_age_days")),
       (10, {"phone_verified": True}, 30), "the sale and its rule as they were")
    r = g.admin("PUT", "/admin/v1/sales/new1", body={"stock": 1, "require_claims": {"x": True}})
    eq((r.status, g.admin("GET", "/admin/v1/sales/new1").status), (400, 404),
       "a refused create makes no sale")
    # a PUT without the fields keeps the rule; {} and 0 drop it
    g.admin("PUT", "/admin/v1/sales/s1", body={"stock": 11})
    eq(sale(g, "s1").get("require_claims"), {"phone_verified": True}, "absent: unchanged")
    g.admin("PUT", "/admin/v1/sales/s1",
            body={"stock": 11, "require_claims": {}, "min_account_age_days": 0})
    s = sale(g, "s1")
    check("require_claims" not in s and "min_account_age_days" not in s, "rule dropped")
    r = buy(g, "s1", token(g, "dee"))
    eq(r.status, 202, "without a rule anyone verified buys")
finally:
    g.stop()

# ---- the rule needs identity.mode=jwt ----
g = Gateway(identity_mode="none").start()
try:
    r = g.admin("PUT", "/admin/v1/sales/s2", body={"stock": 1, "require_claims": {"a": True}})
    eq(r.status, 400, "identity off: require_claims refused")
    check("identity.mode=jwt" in (r.json.get("message") or ""), "says identity.mode=jwt")
finally:
    g.stop()
finish()
