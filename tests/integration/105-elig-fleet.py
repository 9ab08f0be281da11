"""Per-sale eligibility across a fleet of two gateways on one Redis
(docs/identity.md "Eligibility"): identity.mode=jwt with one JWK set file,
identity.eligibility_claims=phone_verified and account_created_claim=created_at.
A sale given require_claims through gateway A refuses 403 not_eligible on B
(the rule travels in the fleet's fair configuration), and an eligible token
buys on B; a min_account_age_days set through B is enforced on A; B killed -9
and restarted still enforces the rule; the rule removed through A stops
refusing on B."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, check, eq, finish, need_binary, request  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-token")
need_redis()

DAY = 86400
NOW = int(time.time())
TMP = tempfile.mkdtemp(prefix="fg-eligfleet-")
ISSUER = os.path.join(TMP, "issuer")


def token(user, *claims):
    cmd = [os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER]
    for c in claims:
        cmd += ["--claim", c]
    out = subprocess.run(cmd + [user], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError("flashgate-token: %s" % out.stderr)
    return out.stdout.strip()


def buy(g, tok):
    return request(g.port, "POST", "/v1/sales/ef/orders", body={"qty": 1},
                   headers={"Authorization": "Bearer " + tok}, timeout=10)


def rule(g):
    s = g.admin("GET", "/admin/v1/sales/ef").json
    return s.get("require_claims"), s.get("min_account_age_days")


os.makedirs(ISSUER)
subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER, "--init", "--jwks"],
               capture_output=True, timeout=20, check=True)
jwks = os.path.join(TMP, "jwks.json")
with open(jwks, "w") as f:
    f.write(subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER, "--jwks"],
                           capture_output=True, text=True, timeout=20, check=True).stdout)

redis = Redis(aof=False).start()
gws = []
try:
    gws = start_fleet(redis, 2, extra=(
        "--set", "identity.mode=jwt", "--set", "identity.jwks_file=" + jwks,
        "--set", "identity.eligibility_claims=phone_verified",
        "--set", "identity.account_created_claim=created_at",
        "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"))
    a, b = gws
    old = "created_at=%d" % (NOW - 60 * DAY)
    young = "created_at=%d" % (NOW - 10 * DAY)
    r = a.admin("PUT", "/admin/v1/sales/ef", body={
        "stock": 100, "per_user_limit": 1, "require_claims": {"phone_verified": True}})
    eq(r.status, 201, "a sale with require_claims in a fleet: %s" % r.json)
    ok, waited = wait_for(lambda: rule(b) == ({"phone_verified": True}, 0), 5)
    check(ok, "the rule reaches gateway B (%.1f s)" % waited)
    r = buy(b, token("ann", old))
    eq((r.status, r.json.get("error"), r.json.get("reason")),
       (403, "not_eligible", "claim phone_verified"), "B refuses a token without the claim")
    r = buy(b, token("ann", "phone_verified=true", old))
    eq(r.status, 202, "B accepts an eligible token")

    r = b.admin("PUT", "/admin/v1/sales/ef", body={
        "stock": 100, "per_user_limit": 1, "require_claims": {"phone_verified": True},
        "min_account_age_days": 30})
    eq(r.status, 200, "an account age set through B")
    ok, _ = wait_for(lambda: rule(a) == ({"phone_verified": True}, 30), 5)
    check(ok, "the age reaches gateway A")
    r = buy(a, token("bob", "phone_verified=true", young))
    eq((r.status, r.json.get("reason")), (403, "account younger than 30 days"),
       "A refuses a young account")

    b.kill9()
    b.start()
    eq(rule(b), ({"phone_verified": True}, 30), "B keeps the rule across a kill -9")
    r = buy(b, token("cy", young))
    eq((r.status, r.json.get("error")), (403, "not_eligible"), "B still refuses after the restart")

    r = a.admin("PUT", "/admin/v1/sales/ef", body={
        "stock": 100, "per_user_limit": 1, "require_claims": {}, "min_account_age_days": 0})
    eq(r.status, 200, "the rule removed through A")
    ok, _ = wait_for(lambda: rule(b) == (None, None), 5)
    check(ok, "the removal reaches gateway B: %r" % (rule(b),))
    r = buy(b, token("dee"))
    eq(r.status, 202, "B sells to anyone again")
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
    shutil.rmtree(TMP, ignore_errors=True)
finish()
