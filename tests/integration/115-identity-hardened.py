"""Buyer identity against a proxy that appends, a JWKS that goes stale, a
cross-site form and a key oracle (docs/identity.md): two identity headers or
two Authorization fields are 400 duplicate_identity with nothing charged; a
plain-http identity.jwks_url off loopback is refused by --check-config and
the start alike; a set whose refresh fails past identity.jwks_max_stale
verifies nothing (503 stale_keys, /readyz 503, the metric) until a fetch
succeeds; with identity.cookie a buy or a registration without a JSON
Content-Type or X-Requested-With is 403 csrf; a keyed buy without a valid
token on a sold-out sale gets one answer whether or not an order holds the
key; while buys are shed, a token whose user cannot be read is 401 before
any signature check."""
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import (BIN, bearer_headers, check, eq, finish, identity_gateway,  # noqa: E402
                IDENTITY_HEADER, mint_token, need_binary, request, rfc3339, Resp)

need_binary("flashgate")
need_binary("flashgate-token")

TMP = tempfile.mkdtemp(prefix="fg-idh-")


def raw_post(port, path, fields, body=b'{"qty":1}'):
    """POST with the header fields as given (a list of pairs: repeats kept)."""
    head = "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" % path
    for k, v in fields:
        head += "%s: %s\r\n" % (k, v)
    head += "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.encode() + body)
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    hdr, _, payload = data.partition(b"\r\n\r\n")
    lines = hdr.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(x.split(": ", 1)) for x in lines[1:] if ": " in x]
    return Resp(status, headers, payload)


def metric(g, name):
    r = g.admin("GET", "/metrics")
    for line in r.raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def buy(g, sale, token=None, ip="10.0.0.1", key=None, headers=None, body=None):
    extra = {"Idempotency-Key": key} if key else {}
    extra.update(headers or {})
    return g.post_order(sale, body, bearer_headers(token, ip, extra))


# ---- header mode: a second identity header is refused, not read ----
g = identity_gateway("header").start()
try:
    g.put_sale("h1", stock=5, per_user_limit=1)
    path = "/v1/sales/h1/orders"
    r = raw_post(g.port, path, [(IDENTITY_HEADER, "victim-dup"), (IDENTITY_HEADER, "proxy-user")])
    eq((r.status, r.json.get("reason")), (400, "duplicate_identity"),
       "two identity headers (an appending proxy): 400")
    check(IDENTITY_HEADER in r.json.get("message", ""), "the 400 names the header: %r" % r.json)
    r = raw_post(g.port, path, [(IDENTITY_HEADER.lower(), "a"), (IDENTITY_HEADER.upper(), "a")])
    eq(r.status, 400, "the same header in two spellings is two headers")
    eq(g.stock_left("h1"), 5, "nothing charged")
    r = raw_post(g.port, path, [(IDENTITY_HEADER, "proxy-user")])
    eq(r.status, 202, "one identity header buys")
    check((metric(g, 'flashgate_identity_refused_total{reason="duplicate_identity"}') or 0) >= 2,
          "duplicates counted")
finally:
    g.stop()
    g.cleanup()

# ---- jwt mode: two Authorization fields, and the sold-out key oracle ----
g = identity_gateway("jwt").start()
try:
    alice = mint_token(g.data_dir, "alice")
    g.put_sale("a1", stock=5, per_user_limit=1)
    path = "/v1/sales/a1/orders"
    r = raw_post(g.port, path, [("Authorization", "Bearer " + alice),
                                ("Authorization", "Bearer garbage")])
    eq((r.status, r.json.get("reason")), (400, "duplicate_identity"),
       "a valid token then garbage: 400, not a buy")
    r = raw_post(g.port, path, [("Authorization", "Bearer garbage"),
                                ("Authorization", "Bearer " + alice)])
    eq(r.status, 400, "garbage then a valid token: 400")
    eq(g.stock_left("a1"), 5, "nothing charged")

    # a sold-out sale: a keyed buy without a valid token gets the same answer
    # whether some order holds that key or not
    g.put_sale("so", stock=1, per_user_limit=1)
    r = buy(g, "so", alice, key="alice-so", ip="10.0.1.1")
    eq(r.status, 202, "alice buys the last unit with a predictable key")
    eq(g.stock_left("so"), 0, "sold out")
    held = buy(g, "so", None, key="alice-so", ip="10.0.1.2")
    free = buy(g, "so", None, key="nobody-so", ip="10.0.1.3")
    bad = buy(g, "so", "x.y.z", key="alice-so", ip="10.0.1.4")
    eq((held.status, held.json.get("error")), (free.status, free.json.get("error")),
       "no token: the held key answers as a free one (%d / %d)" % (held.status, free.status))
    eq((bad.status, bad.json.get("error")), (free.status, free.json.get("error")),
       "a bad token: the held key answers as a free one")
    eq(free.status, 410, "both sold out")
    r = buy(g, "so", alice, key="alice-so", ip="10.0.1.5")
    eq(r.status, 202, "alice's own retry still gets her order back")
finally:
    g.stop()
    g.cleanup()

# ---- while shedding: an unreadable claim is 401 before any signature ----
g = identity_gateway("jwt", "--set", "overload.shed_buys=true",
                     "--set", "server.admin_debug_routes=true").start()
try:
    g.put_sale("sh", stock=5, per_user_limit=1)
    r = g.admin("PUT", "/admin/v1/debug/overload", body={"user_cut": 64})
    eq(r.status, 200, "the user cut pinned: buys are shed by user priority")
    h, _, s = mint_token(g.data_dir, "erin").split(".")
    before = metric(g, 'flashgate_identity_verifications_total{result="bad_signature"}') or 0
    r = buy(g, "sh", h + ".e30." + s, ip="10.0.2.1")  # claims {}: no user to read
    eq((r.status, r.json.get("reason")), (401, "bad_subject"),
       "a token with no readable user while shedding: 401 (%r)" % r)
    eq(metric(g, 'flashgate_identity_verifications_total{result="bad_signature"}') or 0, before,
       "refused before its signature was checked")
    eq(g.stock_left("sh"), 5, "nothing charged")
finally:
    g.stop()
    g.cleanup()

# ---- cookie mode: a state-changing request needs the CSRF proof ----
g = identity_gateway("jwt", "--set", "identity.cookie=fg_session",
                     "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0",
                     "--set", "limits.subnet_rps=0").start()
try:
    tok = mint_token(g.data_dir, "carol")
    cookie = {"Cookie": "fg_session=" + tok}
    g.put_sale("c1", stock=5, per_user_limit=1)
    # the buy takes application/json only (415 otherwise): a form cannot post it
    r = request(g.port, "POST", "/v1/sales/c1/orders", body=b'{"qty":1}',
                headers=dict(cookie, **{"Content-Type": "text/plain"}))
    eq(r.status, 415, "a cookie buy as a cross-site form")
    eq(g.stock_left("c1"), 5, "nothing charged")
    r = request(g.port, "POST", "/v1/sales/c1/orders", body={"qty": 1}, headers=cookie)
    eq(r.status, 202, "the JSON Content-Type is the proof")
    r = request(g.port, "POST", "/v1/sales/c1/orders", body={"qty": 1},
                headers={"Authorization": "Bearer " + mint_token(g.data_dir, "dan")})
    eq(r.status, 202, "a bearer token needs no proof")
    now = time.time()
    r = g.admin("PUT", "/admin/v1/sales/reg", body={
        "stock": 5, "starts_at": rfc3339(now + 60), "fair_window_ms": 1000,
        "registration_opens_at": rfc3339(now - 1), "registration_closes_at": rfc3339(now + 30)})
    check(r.status in (200, 201), "a sale with registration: %r" % r)
    r = request(g.port, "POST", "/v1/sales/reg/registrations", headers=cookie)
    eq((r.status, r.json.get("reason")), (403, "csrf"), "a cookie registration with no body: 403")
    r = request(g.port, "POST", "/v1/sales/reg/registrations",
                headers=dict(cookie, **{"X-Requested-With": "fetch"}))
    eq(r.status, 201, "with X-Requested-With it registers")
    eq((metric(g, 'flashgate_identity_refused_total{reason="csrf"}') or 0), 1.0, "csrf counted")
finally:
    g.stop()
    g.cleanup()

# ---- identity.jwks_url over plain http: loopback or opted in ----
cfg = os.path.join(TMP, "cfg")
for url, ok in (("http://keys.example.com/jwks.json", False),
                ("http://127.0.0.1:9/jwks.json", True),
                ("https://keys.example.com/jwks.json", True)):
    p = subprocess.run([os.path.join(BIN, "flashgate"), "--data-dir", cfg, "--check-config",
                        "--set", "identity.jwks_url=" + url], capture_output=True, text=True,
                       timeout=20)
    eq(p.returncode == 0, ok, "--check-config with %s: %r" % (url, p.stderr[-300:]))
    if not ok:
        check("identity.jwks_url" in p.stderr and "jwks_allow_http" in p.stderr,
              "the refusal names the key and the opt-in: %r" % p.stderr[-300:])
p = subprocess.run([os.path.join(BIN, "flashgate"), "--data-dir", cfg, "--check-config",
                    "--set", "identity.jwks_url=http://keys.example.com/jwks.json",
                    "--set", "identity.jwks_allow_http=true"], capture_output=True, text=True,
                   timeout=20)
eq(p.returncode, 0, "identity.jwks_allow_http opts in: %r" % p.stderr[-300:])
p = subprocess.run([os.path.join(BIN, "flashgate"), "--data-dir", cfg, "--listen", "127.0.0.1:0",
                    "--set", "identity.jwks_url=http://keys.example.com/jwks.json"],
                   capture_output=True, text=True, timeout=20)
check(p.returncode != 0 and "jwks_allow_http" in p.stderr,
      "the start refuses it as --check-config does: %r" % p.stderr[-300:])

# ---- identity.jwks_max_stale ----
shop = os.path.join(TMP, "shop")
os.makedirs(shop)
mint_token(shop, "bob", "--init")
jwks = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", shop, "--jwks"],
                      capture_output=True, text=True, timeout=20, check=True).stdout.encode()
state = {"up": True}


class Keys(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if state["up"]:
            self.send_response(200)
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)
        else:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *a):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/jwks.json" % srv.server_address[1]
g = identity_gateway("jwt", "--set", "identity.jwks_url=" + url,
                     "--set", "identity.jwks_refresh=1s", "--set", "identity.jwks_min_refetch=1s",
                     "--set", "identity.jwks_max_stale=2s").start()
try:
    bob = mint_token(shop, "bob")
    g.put_sale("st", stock=10, per_user_limit=1)
    eq(buy(g, "st", bob, ip="10.0.3.1").status, 202, "fresh keys verify")
    eq(metric(g, "flashgate_identity_jwks_stale"), 0.0, "not stale")
    state["up"] = False
    deadline = time.time() + 15
    r = None
    while time.time() < deadline:
        r = buy(g, "st", bob, ip="10.0.3.2")
        if r.status == 503:
            break
        time.sleep(0.3)
    eq((r.status, r.json.get("reason")), (503, "stale_keys"),
       "past identity.jwks_max_stale the keys verify nothing")
    eq(g.get("/readyz").status, 503, "/readyz says so")
    check("jwks_max_stale" in g.get("/readyz").raw.decode(), "and why")
    eq(metric(g, "flashgate_identity_jwks_stale"), 1.0, "the metric says so")
    state["up"] = True
    deadline = time.time() + 15
    while time.time() < deadline:
        r = buy(g, "st", bob, ip="10.0.3.3")
        if r.status != 503:
            break
        time.sleep(0.3)
    check(r.status not in (401, 503),
          "a good fetch ends it: bob verifies again (then meets his limits): %r" % r)
    eq(g.get("/readyz").status, 200, "ready again")
finally:
    g.stop()
    g.cleanup()
    srv.shutdown()

shutil.rmtree(TMP, ignore_errors=True)
finish()
