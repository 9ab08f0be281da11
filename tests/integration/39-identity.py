"""Buyer identity on the buy route (docs/identity.md): identity.mode=jwt with the
data dir's key and tokens minted by flashgate-token; the hostile tokens answered
401 with their reason and nothing changed; the impersonation, lockout and
Idempotency-Key probes failing for the attacker; order status by
the verified buyer; identity.mode=header from a trusted and an untrusted peer;
config errors named at start."""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import (BIN, bearer_headers, check, eq, finish, identity_gateway,  # noqa: E402
                IDENTITY_HEADER, mint_token, need_binary, request)

need_binary("flashgate")
need_binary("flashgate-token")

TMP = tempfile.mkdtemp(prefix="fg-id-")


def b64(obj):
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def buy(g, sale, token=None, body=None, ip="10.0.0.1", key=None, headers=None, source="127.0.0.1"):
    extra = {"Idempotency-Key": key} if key else {}
    extra.update(headers or {})
    return g.post_order(sale, body, bearer_headers(token, ip, extra), source)


def metric(g, name):
    r = g.admin("GET", "/metrics")
    if r.status != 200:
        r = g.get("/metrics")
    for line in r.raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# ---- jwt mode, the data dir's key ----
g = identity_gateway("jwt", "--set", "identity.leeway_s=0").start()
other = os.path.join(TMP, "other")
try:
    key = os.path.join(g.data_dir, "identity.key")
    check(os.path.exists(key), "jwt mode creates <data-dir>/identity.key")
    eq(oct(os.stat(key).st_mode & 0o777), oct(0o600), "identity.key is mode 0600")
    alice = mint_token(g.data_dir, "alice")
    victim = mint_token(g.data_dir, "victim-42")
    mallory = mint_token(g.data_dir, "mallory")
    os.makedirs(other)
    foreign = mint_token(other, "alice", "--init")  # another data dir's key
    short = mint_token(g.data_dir, "alice", "--ttl", "1")

    g.put_sale("s1", stock=10, per_user_limit=1)
    # a valid token buys as its user, the body's user_id omitted
    r = buy(g, "s1", alice)
    eq(r.status, 202, "a valid token buys")
    alice_oid = r.json["order_id"]
    eq(buy(g, "s1", alice, ip="10.0.0.2").json.get("error"), "limit_per_user",
       "the second buy of the same verified user meets per_user_limit")
    # the body's user_id may name the verified user itself
    r = buy(g, "s1", victim, body={"user_id": "victim-42", "qty": 1}, ip="10.0.1.1")
    eq(r.status, 202, "a body user_id equal to the verified user is fine")
    victim_oid = r.json["order_id"]
    left = g.stock_left("s1")
    eq(left, 8, "two units taken")

    # hostile tokens: 401 with the reason, nothing changed
    h, p, s = alice.split(".")
    _, _, s2 = victim.split(".")
    time.sleep(2.2)  # `short` expires (leeway 0)
    hostile = [
        ("no token", None, "missing"),
        ("expired", short, "expired"),
        ("another data dir's key", foreign, "unknown_kid"),
        ("another token's signature", "%s.%s.%s" % (h, p, s2), "bad_signature"),
        ("alg none", "%s.%s." % (b64({"alg": "none", "typ": "JWT"}), p), None),
        ("alg none, signature kept", "%s.%s.%s" % (b64({"alg": "none"}), p, s), "bad_alg"),
        ("garbage", "not-a-token", "malformed"),
        ("padding", alice + "=", "malformed"),
        ("trailing dot", alice + ".", "malformed"),
        ("64 KiB", "a" * 65536, None),
    ]
    for what, tok, reason in hostile:
        r = buy(g, "s1", tok, body={"user_id": "mallory", "qty": 1}, ip="10.0.2.1")
        if what == "64 KiB":
            check(r.status in (401, 431), "%s: refused (%d)" % (what, r.status))
            continue
        eq(r.status, 401, "%s: 401" % what)
        eq((r.json or {}).get("error"), "unauthorized", "%s: error unauthorized" % what)
        if reason:
            eq(r.json.get("reason"), reason, "%s: reason" % what)
        else:
            check(r.json.get("reason") in ("malformed", "bad_alg", "bad_header"),
                  "%s: a reason (%r)" % (what, r.json.get("reason")))
        check(r.headers.get("www-authenticate", "").startswith("Bearer"),
              "%s: WWW-Authenticate Bearer" % what)
    r = buy(g, "s1", None, headers={"Authorization": "Basic YWxpY2U6eA=="}, ip="10.0.2.2")
    eq((r.status, r.json.get("reason")), (401, "missing"), "another scheme is no bearer token")
    eq(g.stock_left("s1"), left, "hostile tokens took no stock")
    r = buy(g, "s1", mallory, ip="10.0.2.3")
    eq(r.status, 202, "mallory's first buy with its own token (its per-user state untouched)")
    left -= 1

    # impersonation: the victim's id in the body with mallory's token
    g.put_sale("s2", stock=5, per_user_limit=1)
    r = buy(g, "s2", mallory, body={"user_id": "victim-43", "qty": 1}, ip="10.0.3.1")
    eq((r.status, r.json.get("error")), (403, "identity_mismatch"), "impersonation refused")
    eq(g.stock_left("s2"), 5, "impersonation took no stock")
    victim43 = mint_token(g.data_dir, "victim-43")
    eq(buy(g, "s2", victim43, ip="10.0.3.2").status, 202, "the impersonated victim still buys")

    # lockout: mallory hammers naming the victim; the victim's bucket is untouched
    g.put_sale("s3", stock=50, per_user_limit=1)
    victim44 = mint_token(g.data_dir, "victim-44")
    codes = set()
    for i in range(12):
        r = buy(g, "s3", mallory, body={"user_id": "victim-44", "qty": 1}, ip="10.0.4.%d" % (i + 1))
        codes.add(r.status)
        r = buy(g, "decoy", mallory, body={"user_id": "victim-44"}, ip="10.0.4.%d" % (i + 1))
    check(codes <= {403, 429}, "the hammering gets 403/429 only: %r" % codes)
    eq(buy(g, "s3", victim44, ip="10.0.4.200").status, 202,
       "the victim's buy after the hammering is 202 (its per-user bucket untouched)")

    # Idempotency-Key: mallory reusing the victim's key gets no victim order back
    g.put_sale("s4", stock=10, per_user_limit=2)
    victim45 = mint_token(g.data_dir, "victim-45")
    k = "lt-s4-victim-45"
    r = buy(g, "s4", victim45, key=k, ip="10.0.5.1")
    eq(r.status, 202, "the victim's keyed buy")
    v_oid, v_tok = r.json["order_id"], r.json["status_token"]
    r = buy(g, "s4", victim45, key=k, ip="10.0.5.1")
    eq((r.status, r.json.get("order_id"), r.headers.get("idempotent-replayed")),
       (202, v_oid, "true"), "the victim's own retry replays its order")
    r = buy(g, "s4", mallory, key=k, ip="10.0.5.2")
    check(v_oid not in r.raw.decode() and v_tok not in r.raw.decode(),
          "mallory with the victim's Idempotency-Key gets neither its order id nor its token")
    check(r.headers.get("idempotent-replayed") is None, "and no replay")
    check(v_oid not in r.headers.get("location", ""), "nor its Location")

    # order status: the verified buyer without the status token, nobody else
    path = "/v1/orders/" + v_oid
    eq(request(g.port, "GET", path, headers={"Authorization": "Bearer " + victim45}).status, 200,
       "the buyer reads its order with its own token, without the status token")
    eq(request(g.port, "GET", path, headers={"Authorization": "Bearer " + mallory}).status, 404,
       "another verified user does not")
    eq(request(g.port, "GET", path).status, 404, "nor an anonymous request")
    eq(request(g.port, "GET", path, headers={"Authorization": "Bearer " + foreign}).status, 404,
       "nor a token of another key")
    eq(g.order(v_oid, token=v_tok).status, 200, "the status token works as before")
    eq(request(g.port, "GET", "/v1/orders/" + alice_oid,
               headers={"Authorization": "Bearer " + alice}).status, 200, "alice reads hers")
    eq(request(g.port, "GET", "/v1/orders/" + victim_oid,
               headers={"Authorization": "Bearer " + alice}).status, 404, "not the victim's")

    # answers that need no identity: sold out, unknown sale, not started
    g.put_sale("gone", stock=1, per_user_limit=1)
    eq(buy(g, "gone", alice, ip="10.0.6.1").status, 202, "the last unit")
    r = buy(g, "gone", None, ip="10.0.6.2")
    eq((r.status, r.json.get("error")), (410, "sold_out"), "sold out answered without a token")
    r = buy(g, "nosuch", None, ip="10.0.6.3")
    eq((r.status, r.json.get("error")), (404, "unknown_sale"), "unknown sale without a token")
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    g.put_sale("later", stock=1, per_user_limit=1, starts_at=later)
    r = buy(g, "later", None, ip="10.0.6.4")
    eq((r.status, r.json.get("error")), (425, "sale_not_started"), "not started without a token")
    r = buy(g, "s1", None, body="{\"qty\":", ip="10.0.6.5",
            headers={"Content-Type": "application/json"})
    eq(r.status, 400, "a broken body is 400 before any token")

    # the start-window lottery through the buy route: entries keyed by the verified user
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + 15))
    g.put_sale("lot", stock=5, per_user_limit=1, starts_at=starts, fair_window_ms=2000,
               fair_early_ms=20000)
    victim46 = mint_token(g.data_dir, "victim-46")
    r = buy(g, "lot", victim46, ip="10.0.7.1")
    eq((r.status, r.json.get("status")), (202, "entered"), "the victim's lottery entry")
    e_oid, e_tok = r.json.get("order_id"), r.json.get("status_token")
    r = buy(g, "lot", mallory, body={"user_id": "victim-46", "qty": 1}, ip="10.0.7.2")
    eq((r.status, r.json.get("error")), (403, "identity_mismatch"),
       "an entry in the victim's name is refused")
    r = buy(g, "lot", mallory, ip="10.0.7.3")
    eq((r.status, r.json.get("status")), (202, "entered"), "mallory's own entry")
    check(e_oid not in r.raw.decode() and e_tok not in r.raw.decode() and
          not r.json.get("duplicate"), "mallory's entry is its own, not the victim's duplicate")
    r = buy(g, "lot", victim46, ip="10.0.7.4")
    eq((r.status, r.json.get("duplicate"), r.json.get("order_id")), (202, True, e_oid),
       "the victim's second entry is its own duplicate")

    # cookie: not configured, so ignored
    r = buy(g, "s1", None, headers={"Cookie": "fg=" + alice}, ip="10.0.6.6")
    eq((r.status, r.json.get("reason")), (401, "missing"), "no identity.cookie: a cookie is no token")

    # metrics
    eq(metric(g, 'flashgate_identity_verifications_total{result="expired"}'), 1.0,
       "one expired verification counted")
    check((metric(g, 'flashgate_identity_verifications_total{result="ok"}') or 0) >= 10,
          "ok verifications counted")
    check((metric(g, "flashgate_identity_cache_hits_total") or 0) >= 1, "cache hits counted")
    eq(metric(g, "flashgate_identity_jwks_keys"), 1.0, "one key (the data dir's)")
    check((metric(g, 'flashgate_identity_refused_total{reason="identity_mismatch"}') or 0) >= 13,
          "identity mismatches counted")
    if shutil.which("promtool"):
        m = g.admin("GET", "/metrics").raw
        p = subprocess.run(["promtool", "check", "metrics"], input=m, capture_output=True,
                           timeout=30)
        eq((p.returncode, p.stdout + p.stderr), (0, b""), "promtool check metrics")
    r = g.admin("GET", "/admin/v1/config")
    eq(r.status, 200, "config dump")
    check('"identity.mode"' in r.raw.decode() and "jwt" in r.raw.decode(),
          "/admin/v1/config shows identity.mode")
    check(g.alive(), "jwt gateway alive")
finally:
    g.stop()
    g.cleanup()

# ---- jwt mode with a cookie ----
g = identity_gateway("jwt", "--set", "identity.cookie=fg_session").start()
try:
    g.put_sale("c1", stock=2, per_user_limit=1)
    tok = mint_token(g.data_dir, "carol")
    r = buy(g, "c1", None, headers={"Cookie": "theme=dark; fg_session=" + tok}, ip="10.1.0.1")
    eq(r.status, 202, "the identity.cookie carries the token")
    r = buy(g, "c1", None, headers={"Cookie": "fg_session=junk"}, ip="10.1.0.2")
    eq((r.status, r.json.get("reason")), (401, "malformed"), "a bad cookie token is 401")
finally:
    g.stop()
    g.cleanup()

# ---- header mode ----
g = identity_gateway("header").start()
try:
    g.put_sale("h1", stock=5, per_user_limit=1)
    hdr = {IDENTITY_HEADER: "dave"}
    r = buy(g, "h1", None, headers=hdr, source="127.0.0.2", ip="10.2.0.1")
    eq((r.status, r.json.get("error")), (403, "forbidden"), "the header from an untrusted peer")
    eq(g.stock_left("h1"), 5, "and nothing taken")
    r = buy(g, "h1", None, headers=hdr, ip="10.2.0.2")
    eq(r.status, 202, "the header from the trusted proxy is the user")
    r = buy(g, "h1", None, headers=hdr, ip="10.2.0.3")
    eq((r.status, r.json.get("error")), (409, "limit_per_user"), "keyed on the header's user")
    r = buy(g, "h1", None, ip="10.2.0.4")
    eq((r.status, r.json.get("reason")), (401, "missing"), "no header from the proxy: 401")
    r = buy(g, "h1", None, headers={IDENTITY_HEADER: "bad user!"}, ip="10.2.0.5")
    eq((r.status, r.json.get("reason")), (401, "bad_subject"), "an invalid user in the header")
    r = buy(g, "h1", None, headers=hdr, body={"user_id": "erin"}, ip="10.2.0.6")
    eq((r.status, r.json.get("error")), (403, "identity_mismatch"), "body user_id vs header")
finally:
    g.stop()
    g.cleanup()

# ---- config errors are named at start ----
for args, key in ((["--set", "identity.mode=header"], "identity.header"),
                  (["--set", "identity.algorithms=none"], "identity.algorithms"),
                  (["--set", "identity.mode=sometimes"], "identity.mode"),
                  (["--set", "identity.mode=header", "--set", "identity.header=X-U"],
                   "server.trusted_proxies"),
                  (["--set", "identity.jwks_url=ftp://x/"], "identity.jwks_url")):
    p = subprocess.run([os.path.join(BIN, "flashgate"), "--data-dir", os.path.join(TMP, "cfg"),
                        "--check-config"] + args, capture_output=True, text=True, timeout=20)
    check(p.returncode != 0 and key in p.stderr, "%s refused naming %s: %r" % (args, key, p.stderr[-300:]))

shutil.rmtree(TMP, ignore_errors=True)
finish()
