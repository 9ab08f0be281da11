"""The embedded default of buyer identity (docs/identity.md "The embedded default
key"): a gateway started with no identity setting verifies bearer tokens
(identity.mode=jwt) against the public half of <data-dir>/identity.key, which it
generates at its first start (mode 0600), keeps across restarts and never
serves; a buy without a token is 401 and takes nothing; flashgate-token's token
buys. When identity.jwks_file or identity.jwks_url is set, the data dir's key
is not trusted: its tokens are 401 even though the file is there. README's
curl walk-through's 202 sample has the fields of the real answer. On a sold-out
sale a keyed buy whose key no order holds is 410 with nothing verified, and the
buyer's keyed retry still gets the order back."""
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, check, eq, finish, Gateway, need_binary, request  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-token")

TMP = tempfile.mkdtemp(prefix="fg-iddef-")


def token(data_dir, user, *opts):
    out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", data_dir]
                         + list(opts) + [user], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError("flashgate-token: %s" % out.stderr)
    return out.stdout.strip()


def buy(g, sale, tok=None, body=None):
    h = {"Content-Type": "application/json"}
    if tok:
        h["Authorization"] = "Bearer " + tok
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale,
                   body=json.dumps(body if body is not None else {"qty": 1}), headers=h)


def stock_left(g, sale):
    return g.get("/v1/sales/" + sale).json["stock_left"]


def metric(g, name):
    for line in g.admin("GET", "/metrics").raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def config_mode(g):
    """identity.mode's entry in /admin/v1/config: {"source": ..., "value": ...}."""
    m = re.search(r'"identity\.mode":(\{[^}]*\})', g.admin("GET", "/admin/v1/config").raw.decode())
    return json.loads(m.group(1)) if m else {}


def readme_sample():
    """The 202 body README's walk-through shows for the bearer-token buy."""
    text = open(os.path.join(SRC, "README.md")).read()
    walk = text[text.index("## A sale, step by step"):text.index("## API")]
    after = walk[walk.index('Bearer $A"'):] if 'Bearer $A"' in walk else ""
    m = re.search(r'^# (\{"order_id".*\})$', after, re.M)
    return json.loads(m.group(1)) if m else None


# ---- the default: jwt with the data dir's key ----
g = Gateway(identity_mode=None).start()
try:
    key = os.path.join(g.data_dir, "identity.key")
    check(os.path.exists(key), "the first start creates <data-dir>/identity.key")
    eq(oct(os.stat(key).st_mode & 0o777), oct(0o600), "identity.key is mode 0600")
    check("--set" not in " ".join(g.cmd()), "the gateway runs with no identity setting")
    r = g.admin("GET", "/admin/v1/config")
    eq(r.status, 200, "config dump")
    eq(config_mode(g), {"source": "default", "value": "jwt"},
       "/admin/v1/config: identity.mode is jwt by default")
    check("mode=jwt keys=1" in g.logs(), "the start log says jwt with one key")
    check("identity.mode=none" not in g.logs(), "no mode-none warning")

    g.put_sale("demo", stock=2, per_user_limit=1)
    r = buy(g, "demo", body={"user_id": "alice"})
    eq((r.status, (r.json or {}).get("error"), (r.json or {}).get("reason")),
       (401, "unauthorized", "missing"), "a buy with only a body user_id is 401 missing")
    eq(stock_left(g, "demo"), 2, "and takes nothing")

    alice = token(g.data_dir, "alice")
    r = buy(g, "demo", alice)
    eq(r.status, 202, "flashgate-token's token buys: %r" % r)
    sample = readme_sample()
    check(sample is not None, "README shows the bearer-token buy's 202 body")
    if sample and r.json:
        eq(sorted(sample), sorted(r.json), "README's 202 sample has the real answer's fields")
        eq({k: sample[k] for k in ("status", "sale_id", "qty")},
           {k: r.json[k] for k in ("status", "sale_id", "qty")}, "and its values")
    oid = r.json["order_id"]
    r = buy(g, "demo", alice)
    eq((r.status, r.json.get("error")), (409, "limit_per_user"), "alice's second buy")
    r = buy(g, "demo", alice, body={"user_id": "bob"})
    eq((r.status, r.json.get("error")), (403, "identity_mismatch"), "alice naming bob")
    r = request(g.port, "GET", "/v1/orders/" + oid, headers={"Authorization": "Bearer " + alice})
    eq(r.status, 200, "alice reads her order with her token, no status token")
    eq(stock_left(g, "demo"), 1, "one unit sold")

    # the private key is served nowhere: not in the config, stats, metrics or a guess
    pem = open(key).read()
    body_b64 = "".join(l for l in pem.splitlines() if "-----" not in l)
    for port, path, adm in ((g.admin_port, "/admin/v1/config", True),
                            (g.admin_port, "/admin/v1/stats", True),
                            (g.admin_port, "/metrics", True),
                            (g.port, "/identity.key", False),
                            (g.port, "/.well-known/jwks.json", False),
                            (g.port, "/v1/identity.key", False)):
        r = g.admin("GET", path) if adm else g.get(path)
        check(body_b64[:40] not in r.raw.decode(errors="replace")
              and "PRIVATE KEY" not in r.raw.decode(errors="replace"),
              "%s does not carry the private key (%d)" % (path, r.status))

    # a restart keeps the key: a token minted before it still buys
    before = open(key, "rb").read()
    carol = token(g.data_dir, "carol")
    g.stop()
    g.start()
    eq(open(key, "rb").read(), before, "a restart keeps identity.key")
    r = buy(g, "demo", carol)
    eq(r.status, 202, "a token minted before the restart buys after it")
    check(g.alive(), "default gateway alive")
finally:
    g.stop()
    g.cleanup()

# ---- a sold-out sale: a keyed buy whose key no order holds is 410, nothing verified ----
def buy_keyed(g, sale, tok, key, body=None):
    h = {"Content-Type": "application/json", "Idempotency-Key": key}
    if tok:
        h["Authorization"] = "Bearer " + tok
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale,
                   body=json.dumps(body if body is not None else {"qty": 1}), headers=h)


def verifications(g):
    """flashgate_identity_verifications_total over its results."""
    return sum(float(l.split()[-1]) for l in g.admin("GET", "/metrics").raw.decode().splitlines()
               if l.startswith("flashgate_identity_verifications_total{"))


g = Gateway(identity_mode=None).start()
try:
    g.put_sale("so", stock=1, per_user_limit=1)
    dave, erin = token(g.data_dir, "dave"), token(g.data_dir, "erin")
    r = buy_keyed(g, "so", dave, "dave-k1")
    eq(r.status, 202, "dave's keyed buy takes the last unit")
    oid = r.json["order_id"]
    eq(buy(g, "so", erin).status, 410, "the sale is sold out")
    v0 = verifications(g)
    check(v0 >= 1, "dave's buy was verified (%s)" % v0)
    for i in range(10):
        r = buy_keyed(g, "so", None, "fresh-%d" % i)
        eq((r.status, r.json.get("error")), (410, "sold_out"),
           "a fresh key without a token on a sold-out sale is 410, not 401 (%d)" % i)
        r = buy_keyed(g, "so", "garbage.token.%d" % i, "fresh-g%d" % i)
        eq((r.status, r.json.get("error")), (410, "sold_out"),
           "a fresh key with a garbage token is 410 (%d)" % i)
    r = buy_keyed(g, "so", erin, "erin-fresh")
    eq(r.status, 410, "a verified buyer's fresh key is 410")
    eq(verifications(g), v0, "no token was verified for the fresh keys")
    r = buy_keyed(g, "so", dave, "dave-k1")
    eq((r.status, (r.json or {}).get("order_id")), (202, oid),
       "dave's keyed retry after the sell-out gets his order back")
    check(verifications(g) > v0, "the retry was verified")
    r = buy_keyed(g, "so", erin, "dave-k1")
    eq(r.status, 410, "another verified user with dave's key is 410")
    check(oid not in r.raw.decode(), "and does not see dave's order")
    r = buy_keyed(g, "so", None, "dave-k1")
    eq(r.status, 410, "dave's key without a token: 410, as a key no order holds (no oracle)")
    check(oid not in r.raw.decode(), "and does not see dave's order")
    # a restart replays the order with its scoped key only: still found
    g.stop()
    g.start()
    r = buy_keyed(g, "so", dave, "dave-k1")
    eq((r.status, (r.json or {}).get("order_id")), (202, oid),
       "after a restart dave's keyed retry still gets his order back")
    eq(buy_keyed(g, "so", erin, "erin-fresh2").status, 410, "and a fresh key is 410")
    check(g.alive(), "sold-out gateway alive")
finally:
    g.stop()
    g.cleanup()

# ---- with jwks_file or jwks_url the data dir's key is not trusted ----
shop = os.path.join(TMP, "shop")  # the shop's login service's key, elsewhere
os.makedirs(shop)
shop_alice = token(shop, "alice", "--init")
jwks = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", shop, "--jwks"],
                      capture_output=True, text=True, timeout=20).stdout
jwks_path = os.path.join(TMP, "shop-jwks.json")
with open(jwks_path, "w") as f:
    f.write(jwks)


class Jwks(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = jwks.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, *a):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
threading.Thread(target=srv.serve_forever, daemon=True).start()
jwks_url = "http://127.0.0.1:%d/jwks.json" % srv.server_address[1]

for what, arg in (("jwks_file", "identity.jwks_file=" + jwks_path),
                  ("jwks_url", "identity.jwks_url=" + jwks_url)):
    data = os.path.join(TMP, "data-" + what)
    os.makedirs(data)
    own = token(data, "mallory", "--init")  # the data dir has its key, and a token of it
    g = Gateway("--set", arg, data_dir=data, identity_mode=None).start()
    try:
        g.put_sale("s", stock=3, per_user_limit=1)
        r = buy(g, "s", own)
        eq((r.status, (r.json or {}).get("error")), (401, "unauthorized"),
           "%s set: a token of the data dir's key is 401 (%s)" % (what, (r.json or {}).get("reason")))
        eq(stock_left(g, "s"), 3, "%s set: and takes nothing" % what)
        r = buy(g, "s", shop_alice)
        eq(r.status, 202, "%s set: the shop's token buys" % what)
        eq(metric(g, "flashgate_identity_jwks_keys"), 1.0, "%s set: one key, the shop's" % what)
    finally:
        g.stop()
        g.cleanup()
srv.shutdown()

# ---- mode none stays available, and says so in the config ----
g = Gateway(identity_mode="none").start()
try:
    g.put_sale("n", stock=1, per_user_limit=1)
    eq(buy(g, "n", body={"user_id": "alice"}).status, 202, "mode none: the body's user_id buys")
    check(not os.path.exists(os.path.join(g.data_dir, "identity.key")),
          "mode none generates no key")
    eq(config_mode(g).get("value"), "none", "/admin/v1/config shows mode none")
    check("identity.mode=none" not in g.logs(), "no warning on a loopback listener")
    # the raw key is the stored key: a restart's replay counts it, the retry finds its order
    g.put_sale("nk", stock=1, per_user_limit=1)
    r = buy_keyed(g, "nk", None, "bob-k", body={"user_id": "bob"})
    eq(r.status, 202, "mode none: bob's keyed buy")
    oid = (r.json or {}).get("order_id")
    g.stop()
    g.start()
    r = buy_keyed(g, "nk", None, "bob-k", body={"user_id": "bob"})
    eq((r.status, (r.json or {}).get("order_id")), (202, oid),
       "mode none: after a restart bob's keyed retry on the sold-out sale gets his order")
    eq(buy_keyed(g, "nk", None, "eve-k", body={"user_id": "eve"}).status, 410,
       "mode none: a fresh key is 410")
finally:
    g.stop()
    g.cleanup()

shutil.rmtree(TMP, ignore_errors=True)
finish()
