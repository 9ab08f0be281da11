"""Buyer identity across a fleet (docs/identity.md): three gateways on one
redis-server, identity.mode=jwt with one JWK set file, tokens minted from its
private key by flashgate-token.

  - a token verifies on any gateway; a token from another key on none;
  - one order per verified user across the fleet (per_user_limit 1): the same
    user buying on gw1 and then gw2 gets one 202 and one 409, and the same
    user on two gateways at once gets exactly one 202;
  - the overload control's user priority is keyed by the fleet's secret
    ({flashgate:fleet}:uprio_key in Redis): with the cut pinned to half on
    every gateway (PUT /admin/v1/debug/overload), each user is shed or let
    through alike on all three;
  - a shed buy is refused before its signature check:
    flashgate_identity_verifications_total grows by the buys let through
    only; and the token's user decides, not a body user_id naming another;
  - a lottery entry taken on gw1 is read on gw2 (once the fleet's draw is
    known there) by its verified entrant without the status token, and by
    no other verified user or anonymous request.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, check, eq, finish, need_binary, request, rfc3339  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-token")
need_redis()

TMP = tempfile.mkdtemp(prefix="fg-idfleet-")
ISSUER = os.path.join(TMP, "issuer")  # the shop's login service: its key
OTHER = os.path.join(TMP, "other")
USERS = 48                            # for the priority checks


def token_cmd(data_dir, *args):
    out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", data_dir]
                         + list(args), capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError("flashgate-token: %s" % out.stderr)
    return out.stdout.strip()


def buy(g, sale, token, body=None, ip="10.1.0.1"):
    h = {"X-Forwarded-For": ip}
    if token:
        h["Authorization"] = "Bearer " + token
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale, body=body or {"qty": 1},
                   headers=h, timeout=10)


def verifications(g):
    """flashgate_identity_verifications_total summed over its results."""
    r = g.admin("GET", "/metrics")
    n = 0
    for line in r.raw.decode().splitlines():
        if line.startswith("flashgate_identity_verifications_total{"):
            n += int(float(line.split()[-1]))
    return n


os.makedirs(ISSUER)
os.makedirs(OTHER)
token_cmd(ISSUER, "--init", "--jwks")
jwks = os.path.join(TMP, "jwks.json")
with open(jwks, "w") as f:
    f.write(token_cmd(ISSUER, "--jwks"))
token_cmd(OTHER, "--init", "--jwks")

redis = Redis(aof=False)
gws = []
try:
    redis.start()
    gws = start_fleet(redis, 3, extra=(
        "--set", "identity.mode=jwt", "--set", "identity.jwks_file=" + jwks,
        "--server-trusted-proxies", "127.0.0.1/32", "--enable-debug-routes",
        "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0"))
    g1, g2, g3 = gws
    g1.put_sale("idf", stock=1000, per_user_limit=1)
    time.sleep(1.2)  # the sale reaches every gateway's view (fleet sync)

    # A token verifies on any gateway; another key's on none.
    for i, g in enumerate(gws):
        t = token_cmd(ISSUER, "anywhere-%d" % i)
        r = buy(g, "idf", t)
        eq(r.status, 202, "gw%d accepts a token of the fleet's key: %r" % (i + 1, r))
        r = buy(g, "idf", token_cmd(OTHER, "anywhere-%d" % i))
        eq((r.status, r.json.get("reason")), (401, "unknown_kid"),
           "gw%d refuses another key's token" % (i + 1))

    # One order per verified user across the fleet: gw1 then gw2.
    bob = token_cmd(ISSUER, "bob")
    r1, r2 = buy(g1, "idf", bob), buy(g2, "idf", bob)
    eq((r1.status, r2.status), (202, 409), "bob on gw1 then gw2: one 202, one 409 (%r)" % r2)
    eq(r2.json.get("error"), "limit_per_user", "the 409 is the per-user limit")
    r = buy(g3, "idf", None, body={"qty": 1, "user_id": "bob-2"})
    eq(r.status, 401, "no token, a body user_id only: 401 on gw3")

    # The same users on two gateways at once: exactly one 202 each.
    pair = [(u, token_cmd(ISSUER, "pair-%d" % u)) for u in range(8)]
    got = {}

    def race(g, u, t):
        got.setdefault(u, []).append(buy(g, "idf", t, ip="10.2.0.%d" % (u + 1)).status)

    ths = [threading.Thread(target=race, args=(g, u, t)) for u, t in pair for g in (g2, g3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(20)
    for u, codes in sorted(got.items()):
        eq(sorted(codes), [202, 409], "pair-%d on gw2 and gw3 at once" % u)
    eq(len(got), len(pair), "every racing user answered")

    # The user-priority secret: one for the fleet, kept in Redis.
    key = redis.cmd("GET", "{flashgate:fleet}:uprio_key")
    check(isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key),
          "the fleet's user-priority secret is in Redis: %r" % (key and len(key)))

    # Shedding by user priority, the cut pinned to half on every gateway.
    toks = [(u, token_cmd(ISSUER, "prio-%d" % u)) for u in range(USERS)]
    for g in gws:
        r = g.admin("PUT", "/admin/v1/debug/overload", body={"user_cut": 64})
        eq((r.status, r.json), (200, {"user_cut": 64}), "the cut is pinned")
    for attempt in range(2):  # a minute that turns during the round reshuffles: once more
        minute = int(time.time() // 60)
        before = [verifications(g) for g in gws]
        codes = {}
        for u, t in toks:
            codes[u] = [buy(g, "idf", t, ip="10.3.%d.1" % u).status for g in gws]
        after = [verifications(g) for g in gws]
        if int(time.time() // 60) == minute:
            break
    shed = [u for u, c in codes.items() if c[0] == 503]
    let = [u for u, c in codes.items() if c[0] != 503]
    for u, c in sorted(codes.items()):
        check(c in ([503] * 3, [202, 409, 409]),
              "prio-%d: the same verdict on every gateway (shed: 503 x3; else 202, 409, 409): %r"
              % (u, c))
    check(USERS // 6 <= len(shed) <= USERS - USERS // 6,
          "about half the users are shed by a cut of 64/128: %d of %d" % (len(shed), USERS))
    for i, g in enumerate(gws):
        eq(after[i] - before[i], len(let),
           "gw%d verified only the buys it let through (%d shed, none verified)" % (i + 1, len(shed)))

    # The token's user decides, not a body user_id naming a user the cut admits.
    if shed and let:
        t = dict(toks)[shed[0]]
        v0 = verifications(g1)
        r = buy(g1, "idf", t, body={"qty": 1, "user_id": "prio-%d" % let[0]})
        eq(r.status, 503, "a shed user's token with an admitted user's id in the body: 503")
        eq(verifications(g1), v0, "and no verification spent on it")
    st = g1.admin("GET", "/admin/v1/stats").json["overload"]
    check(st.get("shed_users", 0) >= len(shed), "shed_users counts them: %r" % st.get("shed_users"))

    # The cut given back to DAGOR: nobody is shed on an idle gateway.
    for g in gws:
        eq(g.admin("PUT", "/admin/v1/debug/overload", body={"user_cut": -1}).status, 200,
           "the cut goes back to DAGOR")
    r = buy(g1, "idf", dict(toks)[shed[0]] if shed else bob)
    check(r.status in (202, 409), "an idle gateway sheds no buyer: %r" % r)
    eq(g1.admin("PUT", "/admin/v1/debug/overload", body={"user_cut": 129}).status, 400,
       "a cut beyond 128 is refused")

    # A lottery entry (not an order) read on another gateway: once the fleet's
    # draw is known there, its verified entrant reads it without the status
    # token, another verified user and an anonymous request do not.
    lot_a, lot_b = token_cmd(ISSUER, "lot-a"), token_cmd(ISSUER, "lot-b")
    starts = int(time.time()) + 3
    eq(g1.admin("PUT", "/admin/v1/sales/idl", body={
        "stock": 5, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 1000, "fair_early_ms": 2500}).status, 201, "a sale with a lottery")
    wait_for(lambda: all(g.admin("GET", "/admin/v1/sales/idl").json.get("fair_window_ms") == 1000
                         for g in gws), 5)
    time.sleep(max(0.0, starts - 2.5 + 0.1 - time.time()))
    r = buy(g1, "idl", lot_a)
    eq((r.status, r.json.get("status")), (202, "entered"), "lot-a enters on gw1")
    l_oid = r.json.get("order_id", "x")

    def read(g, token):
        h = {"Authorization": "Bearer " + token} if token else {}
        return request(g.port, "GET", "/v1/orders/" + l_oid, headers=h, timeout=10)

    ok, _ = wait_for(lambda: read(g2, lot_a).status == 200, 15)
    check(ok, "on gw2 the entrant reads its entry with its login token alone")
    eq(read(g2, lot_b).status, 404, "on gw2 another verified user does not")
    eq(read(g2, None).status, 404, "nor an anonymous request")
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
    subprocess.run(["rm", "-rf", TMP], check=False)
finish()
