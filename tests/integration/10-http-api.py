"""Every status code of the public API against the real binary, idempotent
retries, trusted X-Forwarded-For, and bad input that changes nothing."""
import http.client
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, Gateway, need_binary, request, rfc3339  # noqa: E402

need_binary("flashgate")

NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"]


g = Gateway(*NOLIMITS, "--server-trusted-proxies", "127.0.0.1").start()
try:
    # health
    eq(g.get("/healthz").status, 200, "healthz")
    r = g.get("/readyz")
    eq(r.status, 200, "readyz")
    eq(r.json["status"], "ready", "readyz body")

    g.put_sale("s1", stock=3, per_user_limit=2)
    r = g.get("/v1/sales/s1")
    eq(r.status, 200, "GET sale")
    eq(r.headers.get("cache-control"), "public, max-age=1", "sale Cache-Control")
    eq((r.json["state"], r.json["stock_total"], r.json["stock_left"], r.json["per_user_limit"]),
       ("live", 3, 3, 2), "sale body")
    for k in ("sale_id", "state", "stock_total", "stock_left", "per_user_limit", "starts_at", "ends_at"):
        check(k in r.json, "sale body has " + k)

    # 202 and the order
    r = g.buy("s1", "u-1")
    eq(r.status, 202, "buy accepted")
    oid = r.json["order_id"]
    eq(r.json["status"], "queued", "accepted body status")
    eq((r.json["sale_id"], r.json["qty"]), ("s1", 1), "accepted body")
    check("user_id" not in r.json, "the 202 does not echo the user id")
    tok = r.json["status_token"]
    eq(tok, g.order_token(oid), "status token is the HMAC of the order id with the data dir's key")
    eq(r.headers.get("location"), "/v1/orders/%s?token=%s" % (oid, tok), "Location header")
    key = os.path.join(g.data_dir, "status.key")
    eq(oct(os.stat(key).st_mode & 0o777), oct(0o600), "status.key is mode 0600")
    r = g.order(oid)
    eq(r.status, 200, "GET order")
    eq((r.json["order_id"], r.json["status"], r.json["qty"]), (oid, "queued", 1), "order body")
    check("user_id" not in r.json, "order status never shows the user id")
    eq(g.get("/v1/orders/%s" % oid, headers={"X-Order-Token": tok}).status, 200,
       "the token also works as a header")
    # Without the right token an order does not exist (no oracle for enumeration).
    for bad in ("", "?token=", "?token=" + "A" * 22, "?token=" + tok[:-1],
                "?token=" + g.order_token(oid[:-1] + ("0" if oid[-1] != "0" else "1")),
                "?token=" + tok + "%00junk"):
        r = g.get("/v1/orders/" + oid + bad)
        eq((r.status, r.json["error"]), (404, "unknown_order"), "no order without its token: %r" % bad)
        check("u-1" not in r.raw.decode(), "no user id in the refusal")
    # Crockford base32 reads lower case as the same id: the order's own token answers
    # for either spelling, with the canonical id in the body.
    low = oid.lower()
    check(low != oid, "the order id has a letter to lower: %s" % oid)
    if low != oid:
        r = g.get("/v1/orders/%s?token=%s" % (low, tok))
        eq((r.status, r.json.get("order_id")), (200, oid), "a lower-case order id with its token")
        r = g.get("/v1/orders/%s?token=%s" % (low, g.order_token(low)))
        eq((r.status, r.json["error"]), (404, "unknown_order"),
           "a token made over the lower-case spelling is not the order's")
    eq(g.order("NOSUCHORDER00").status, 404, "unknown order 404")
    eq(g.order("NOSUCHORDER00").json["error"], "unknown_order", "unknown order code")

    # 409 limit_per_user: limit 2, holds 1, asks 2 more
    r = g.buy("s1", "u-1", qty=2)
    eq((r.status, r.json["error"]), (409, "limit_per_user"), "qty over remaining per-user limit")
    r = g.buy("s1", "u-1")
    eq(r.status, 202, "second unit within limit")
    r = g.buy("s1", "u-1")
    eq((r.status, r.json["error"]), (409, "limit_per_user"), "third unit refused")
    r = g.buy("s1", "u-2", qty=3)
    eq((r.status, r.json["error"]), (409, "limit_per_user"), "qty above per-user limit")

    # idempotency: same key, same user -> same order, no second unit
    r1 = g.buy("s1", "u-3", key="k-123")
    eq(r1.status, 202, "keyed buy")
    r2 = g.buy("s1", "u-3", key="k-123")
    eq(r2.status, 202, "keyed retry")
    eq(r2.json["order_id"], r1.json["order_id"], "retry returns the original order")
    eq(r2.headers.get("idempotent-replayed"), "true", "retry is marked replayed")
    # stock is now 0 (u-1 x2, u-3 x1)
    r = g.buy("s1", "u-4")
    eq((r.status, r.json["error"]), (410, "sold_out"), "sold out")
    r3 = g.buy("s1", "u-3", key="k-123")
    eq((r3.status, r3.json.get("order_id")), (202, r1.json["order_id"]),
       "keyed retry after sold out still finds the original")
    r = g.admin("GET", "/admin/v1/sales/s1")
    eq((r.json["stock_left"], r.json["accepted_units"], r.json["accepted_orders"]), (0, 3, 3),
       "exact counts after idempotent retries")
    eq(g.get("/v1/sales/s1").json["state"], "sold_out", "sale state sold_out")

    # unknown sale, not started, ended
    r = g.buy("nope", "u-1")
    eq((r.status, r.json["error"]), (404, "unknown_sale"), "unknown sale buy")
    eq(g.get("/v1/sales/nope").status, 404, "unknown sale GET")
    # the buy's 404 is prepared per sale id and worker (gw_buy.c, 8 ids): each id's own
    # message, past the 8 too, and a sale created after its 404 sells
    for i in range(10):
        r = g.buy("made-%d" % i, "u-1")
        eq((r.status, r.json["message"]), (404, "no sale made-%d" % i), "404 of id %d" % i)
    r = g.buy("nope", "u-1")
    eq((r.status, r.json["message"]), (404, "no sale nope"), "the first id's 404 made again")
    g.put_sale("made-3", stock=1)
    eq(g.buy("made-3", "u-1").status, 202, "a sale created after its 404 sells")
    now = time.time()
    g.put_sale("later", stock=5, starts_at=rfc3339(now + 100))
    r = g.buy("later", "u-1")
    eq((r.status, r.json["error"]), (425, "sale_not_started"), "not started")
    ra = int(r.headers.get("retry-after", "0"))
    check(95 <= ra <= 101, "Retry-After is the seconds to start (%d)" % ra)
    eq(g.get("/v1/sales/later").json["state"], "upcoming", "upcoming state")
    g.put_sale("past", stock=5, starts_at=rfc3339(now - 100), ends_at=rfc3339(now - 10))
    r = g.buy("past", "u-1")
    eq((r.status, r.json["error"]), (410, "sale_ended"), "ended")
    eq(g.get("/v1/sales/past").json["state"], "ended", "ended state")

    # Cache-Control and Vary, route by route (docs/cdn.md): only sale info may be
    # kept by a CDN, for as long as its state can stay the same; every other
    # answer (202s, refusals, order status, health) is no-store; nothing varies.
    g.put_sale("live", stock=5)
    # Level 0 pinned: a loaded machine may degrade, and then sale info says
    # max-age=5 on purpose; here the normal level's headers are checked.
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 0}).status, 200, "degrade level pinned")
    routes = [
        ("GET", "/v1/sales/live", None, 200, "public, max-age=1"),
        ("HEAD", "/v1/sales/live", None, 200, "public, max-age=1"),
        ("GET", "/v1/sales/later", None, 200, "public, max-age=1"),
        ("GET", "/v1/sales/s1", None, 200, "public, max-age=10"),
        ("GET", "/v1/sales/past", None, 200, "public, max-age=60"),
        ("GET", "/v1/sales/nosuchsale", None, 404, "public, max-age=1"),
        ("POST", "/v1/sales/live/orders", {"user_id": "cc-1"}, 202, "no-store"),
        ("POST", "/v1/sales/s1/orders", {"user_id": "cc-2"}, 410, "no-store"),
        ("POST", "/v1/sales/past/orders", {"user_id": "cc-3"}, 410, "no-store"),
        ("POST", "/v1/sales/later/orders", {"user_id": "cc-4"}, 425, "no-store"),
        ("POST", "/v1/sales/live/orders", {"user_id": ""}, 400, "no-store"),
        ("GET", "/v1/sales/live/orders", None, 405, "no-store"),
        ("GET", "/v1/orders/%s?token=%s" % (oid, g.order_token(oid)), None, 200, "no-store"),
        ("GET", "/v1/orders/NOSUCHORDER00", None, 404, "no-store"),
        ("GET", "/healthz", None, 200, "no-store"),
        ("GET", "/readyz", None, 200, "no-store"),
        ("GET", "/nothing-here", None, 404, "no-store"),
    ]
    for method, path, body, status, cc in routes:
        r = request(g.port, method, path, body=body)
        eq((r.status, r.headers.get("cache-control"), r.headers.get("vary")), (status, cc, None),
           "%s %s: status, Cache-Control, Vary" % (method, path))
    r = g.admin("GET", "/admin/v1/sales/live")
    eq((r.headers.get("cache-control"), r.headers.get("vary")), ("no-store", None),
       "admin answers: Cache-Control, Vary")

    # bad input: 400 with a message naming the problem, 405, 413, 415, 404
    g.put_sale("s2", stock=10, per_user_limit=1)
    cases = [
        ("{bad json", "malformed JSON"),
        ("[1,2]", "JSON object"),
        ("{}", "user_id"),
        ('{"user_id":""}', "user_id"),
        ('{"user_id":"has space"}', "user_id"),
        ('{"user_id":"' + "x" * 65 + '"}', "user_id"),
        ('{"user_id":42}', "user_id"),
        ('{"user_id":"ok","qty":0}', "qty"),
        ('{"user_id":"ok","qty":"1"}', "qty"),
        ('{"user_id":"ok","qty":1.5}', "qty"),
        ('{"user_id":"ok","qty":-3}', "qty"),
        ('{"user_id":"ok","user_id":"dup"}', "duplicate"),
        ('{"user_id":"ok\\u0000x"}', "JSON"),
    ]
    for body, word in cases:
        r = g.buy("s2", "x", raw=body)
        eq(r.status, 400, "400 for %r" % body)
        check(r.json and r.json.get("error") == "bad_request" and word in r.json.get("message", ""),
              "400 message for %r names %r: %r" % (body, word, r.json))
    r = g.buy("s2", "ok", key="has space")
    eq((r.status, r.json["error"]), (400, "bad_request"), "bad Idempotency-Key")
    r = g.buy("bad%21id", "ok")
    eq(r.status, 400, "bad sale id in path")
    r = request(g.port, "GET", "/v1/sales/s2/orders")
    eq((r.status, r.json["error"], r.headers.get("allow")), (405, "method_not_allowed", "POST"), "405")
    r = request(g.port, "DELETE", "/v1/sales/s2")
    eq(r.status, 405, "405 on sale")
    r = g.buy("s2", "ok", raw='{"user_id":"ok","pad":"' + "x" * 5000 + '"}')
    eq((r.status, r.json["error"]), (413, "payload_too_large"), "413")
    r = request(g.port, "POST", "/v1/sales/s2/orders", body='{"user_id":"ok"}',
                headers={"Content-Type": "text/plain"})
    eq((r.status, r.json["error"]), (415, "unsupported_media_type"), "415")
    r = request(g.port, "POST", "/v1/sales/s2/orders", body='{"user_id":"ok"}')
    eq(r.status, 415, "415 without Content-Type")
    eq(g.get("/nope").status, 404, "unknown route")
    eq(g.get("/v1/sales/s2/other").status, 404, "unknown sub-route")
    # A Content-Length beside Transfer-Encoding is a smuggling frame (RFC 9112
    # 6.1): refused (400), never read as 0 (the parser refuses it; gw_http.c
    # framing_refused the frames it takes; tests/integration/14-http1.py has the others)
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
        s.sendall(b"POST /v1/sales/s2/orders HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: -1\r\nConnection: close\r\n\r\n"
                  b"10\r\n{\"user_id\":\"te\"}\r\n0\r\n\r\n")
        head = b""
        while b"\r\n" not in head:
            d = s.recv(4096)
            if not d:
                break
            head += d
    eq(head.split(b"\r\n")[0].split(b" ")[1:2], [b"400"], "Content-Length -1 beside chunked: %r" % head[:60])
    r = g.admin("GET", "/admin/v1/sales/s2")
    eq((r.json["stock_left"], r.json["accepted_orders"]), (10, 0), "bad input changed nothing")
    r = g.buy("s2", "ok", headers={"Content-Type": "application/json; charset=utf-8"})
    eq(r.status, 202, "charset parameter accepted")
finally:
    g.cleanup()

# 429 at each scope, with Retry-After and RateLimit headers, consuming nothing
g = Gateway("--set", "limits.user_rps=1", "--set", "limits.user_burst=2",
            "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--server-trusted-proxies", "127.0.0.1").start()
try:
    g.put_sale("r1", stock=100, per_user_limit=100)
    eq(g.buy("r1", "alice").status, 202, "user burst 1")
    eq(g.buy("r1", "alice").status, 202, "user burst 2")
    r = g.buy("r1", "alice")
    eq((r.status, r.json["error"], r.json.get("scope")), (429, "rate_limited", "user"), "user 429")
    check(int(r.headers.get("retry-after", "0")) >= 1, "429 Retry-After")
    check(r.headers.get("ratelimit-policy", "").startswith('"user";q=2;w='), "RateLimit-Policy: %r" % r.headers.get("ratelimit-policy"))
    check(r.headers.get("ratelimit", "").startswith('"user";r=0;t='), "RateLimit: %r" % r.headers.get("ratelimit"))
    eq(g.buy("r1", "bob").status, 202, "another user unaffected")
    eq(g.admin("GET", "/admin/v1/sales/r1").json["accepted_units"], 3, "a 429 consumed no stock")

    # per-IP via trusted X-Forwarded-For
    r = g.admin("PATCH", "/admin/v1/limits", body={"user_rps": 0, "ip_rps": 1, "ip_burst": 1})
    eq(r.status, 200, "PATCH limits")
    xff = {"X-Forwarded-For": "203.0.113.7"}
    eq(g.buy("r1", "c1", headers=xff).status, 202, "ip burst")
    r = g.buy("r1", "c2", headers=xff)
    eq((r.status, r.json.get("scope")), (429, "ip"), "ip 429 via trusted XFF")
    eq(g.buy("r1", "c3", headers={"X-Forwarded-For": "203.0.113.8"}).status, 202, "other client IP")
    eq(g.buy("r1", "c4", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}).status, 429,
       "right-most untrusted hop is the client")
    # A trusted proxy that adds a field of its own (HAProxy's `option forwardfor`)
    # leaves the client's forged one first: the fields are one list, walked from
    # the right, so the forged address does not escape the limit (it did when only
    # the first field was read).
    hc = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    body = json.dumps({"user_id": "c5"}).encode()
    hc.putrequest("POST", "/v1/sales/r1/orders")
    hc.putheader("Content-Type", "application/json")
    hc.putheader("X-Forwarded-For", "198.51.100.99")
    hc.putheader("X-Forwarded-For", "203.0.113.7")
    hc.putheader("Content-Length", str(len(body)))
    hc.endheaders(body)
    hr = hc.getresponse()
    hbody = json.loads(hr.read() or b"{}")
    hc.close()
    eq((hr.status, hbody.get("scope")), (429, "ip"),
       "two X-Forwarded-For fields: the client is the right-most untrusted hop of both")

    # per-sale and global
    r = g.admin("PATCH", "/admin/v1/limits", body={"ip_rps": 0, "sale_rps": 1, "sale_burst": 1})
    eq(r.status, 200, "PATCH sale limit")
    time.sleep(1.1)
    eq(g.buy("r1", "d1").status, 202, "sale burst")
    r = g.buy("r1", "d2")
    eq((r.status, r.json.get("scope")), (429, "sale"), "sale 429")
    r = g.admin("PATCH", "/admin/v1/limits", body={"sale_rps": 0, "global_rps": 1, "global_burst": 1})
    time.sleep(1.1)
    eq(g.buy("r1", "e1").status, 202, "global burst")
    r = g.buy("r1", "e2")
    eq((r.status, r.json.get("scope")), (429, "global"), "global 429")
    # invalid PATCH changes nothing
    before = g.admin("GET", "/admin/v1/limits").json
    for bad in ({"user_rps": -1}, {"user_rps": "5"}, {"nope": 1}, {"user_burst": 1.5},
                {"user_rps": 5, "user_burst": 0}, {"user_rps": 0.0001},
                # within the rounding slack of 0, but not 0: not "off"
                {"global_rps": 1e-10}):
        r = g.admin("PATCH", "/admin/v1/limits", body=bad)
        eq(r.status, 400, "invalid PATCH %r refused" % bad)
    eq(g.admin("GET", "/admin/v1/limits").json, before, "refused PATCHes changed nothing")
finally:
    g.cleanup()

# Untrusted peer: X-Forwarded-For is ignored
g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=1", "--set", "limits.ip_burst=1").start()
try:
    g.put_sale("x", stock=10, per_user_limit=5)
    eq(g.buy("x", "a", headers={"X-Forwarded-For": "203.0.113.1"}).status, 202, "first")
    r = g.buy("x", "b", headers={"X-Forwarded-For": "203.0.113.2"})
    eq((r.status, r.json.get("scope")), (429, "ip"), "XFF from an untrusted peer is ignored")
finally:
    g.cleanup()
finish()
