"""Pinned degradation levels answer as docs/api.md's table says, route by route:
critical routes (buy, order status, sale info, a critical proxied route) are
served at every level; a degradable route with a fallback gets it from level 1;
a degradable one without a fallback is proxied at level 1 and refused from 2;
a sheddable one is refused from level 1; at level 3 a non-critical request is
refused from its head, before its body is read. Every 503 says the level and
has a Retry-After within overload.retry_after_min..max. PUT /admin/v1/degrade
refuses bad input and changes nothing."""
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, JsonUpstream, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")


# Port 0: the kernel picks a free port, no race with other tests.
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JsonUpstream)
up_port = srv.server_address[1]
srv.daemon_threads = True
threading.Thread(target=srv.serve_forever, daemon=True).start()
UP = "http://127.0.0.1:%d" % up_port
FB = '{"items":[]}'
routes = [
    {"prefix": "/v1/recs/", "upstream": UP, "criticality": "degradable",
     "fallback": {"status": 200, "content_type": "application/json", "body": FB}},
    {"prefix": "/v1/extra/", "upstream": UP, "criticality": "degradable"},
    {"prefix": "/v1/reviews/", "upstream": UP, "criticality": "sheddable"},
    {"prefix": "/v1/cart/", "upstream": UP, "criticality": "critical"},
]
g = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(routes),
            "--overload-retry-after-min", "2", "--overload-retry-after-max", "4",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0").start()

UPSTREAM, FALLBACK, REFUSED = "upstream", "fallback", "503"


def kind(r, level):
    if r.status == 200 and r.json == {"from": "upstream"}:
        check("x-flashgate-degraded" not in r.headers, "served answers are not marked degraded")
        return UPSTREAM
    if r.status == 200 and r.raw.decode() == FB:
        eq(r.headers.get("x-flashgate-degraded"), "1", "a fallback is marked degraded")
        return FALLBACK
    if r.status == 503:
        eq(r.json.get("error"), "overloaded", "a shed route says overloaded")
        eq(r.json.get("reason"), "level_%d" % level, "the 503 names the level")
        eq(r.headers.get("x-flashgate-degraded"), "1", "a shed answer is marked degraded")
        ra = int(r.headers.get("retry-after", "0"))
        check(2 <= ra <= 4, "Retry-After %d within 2..4" % ra)
        eq(r.json.get("retry_after"), ra, "retry_after in the body matches the header")
        return REFUSED
    return repr(r)


EXPECT = {  # level -> recs, extra, reviews, cart
    0: (UPSTREAM, UPSTREAM, UPSTREAM, UPSTREAM),
    1: (FALLBACK, UPSTREAM, REFUSED, UPSTREAM),
    2: (FALLBACK, REFUSED, REFUSED, UPSTREAM),
    3: (FALLBACK, REFUSED, REFUSED, UPSTREAM),
}


def set_level(v):
    return g.admin("PUT", "/admin/v1/degrade", body={"level": v})


try:
    g.put_sale("s", stock=100, per_user_limit=1)
    eq(g.admin("GET", "/admin/v1/degrade").json["level"], 0, "the harness starts at level 0")
    n = 0
    for level in range(4):
        r = set_level(level)
        eq((r.status, r.json["level"], r.json["mode"]), (200, level, "pinned"), "pin %d" % level)
        got = tuple(kind(g.get(p), level) for p in
                    ("/v1/recs/a", "/v1/extra/a", "/v1/reviews/a", "/v1/cart/a"))
        eq(got, EXPECT[level], "level %d: recs, extra, reviews, cart" % level)
        # critical built-in routes
        n += 1
        b = g.buy("s", "user-%d" % n)
        eq(b.status, 202, "level %d: buy accepted" % level)
        eq(g.order(b.json["order_id"]).status, 200, "level %d: order status" % level)
        sale = g.get("/v1/sales/s")
        eq(sale.status, 200, "level %d: sale info" % level)
        eq(sale.json.get("stale"), True if level >= 1 else None, "level %d: stale flag" % level)
        eq(sale.headers.get("x-flashgate-degraded"), "1" if level >= 1 else None,
           "level %d: sale info marked degraded" % level)
        eq(g.get("/healthz").status, 200, "level %d: healthz" % level)
        st = g.admin("GET", "/admin/v1/stats").json["overload"]
        eq((st["level"], st["mode"]), (level, "pinned"), "stats show the level")

    # Level 3: a shed request with a body is answered from its head; the body never comes.
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.sendall(b"POST /v1/reviews/x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 100000\r\n\r\n")
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    s.close()
    check(data.startswith(b"HTTP/1.1 503"), "level 3 refuses before the body: %r" % data[:40])

    # A shed decided from the head is answered (and counted) with the level that
    # decided it, not the one in force when its body has come: shed at level 1,
    # answered after an operator set level 0, it still says level_1.
    def rejected(reason):
        text = g.admin("GET", "/metrics").raw.decode()
        key = 'flashgate_overload_rejected_total{reason="%s"} ' % reason
        return sum(int(l[len(key):]) for l in text.splitlines() if l.startswith(key))

    before = {k: rejected(k) for k in ("level_1", "other")}
    eq(set_level(1).status, 200, "pin 1 for the slow body")
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.sendall(b"POST /v1/reviews/x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 5\r\n\r\n")
    time.sleep(0.3)  # the head is read and the shed decided at level 1
    eq(set_level(0).status, 200, "pin 0 before the body comes")
    s.sendall(b"hello")
    data = b""
    try:
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            cl = [int(l.split(b":", 1)[1]) for l in head.lower().split(b"\r\n")
                  if l.startswith(b"content-length:")]
            if sep and cl and len(rest) >= cl[0]:
                break
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    s.close()
    check(data.startswith(b"HTTP/1.1 503"), "shed at level 1 stays shed: %r" % data[:40])
    body = json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")
    eq(body.get("reason"), "level_1", "the 503 names the level that shed it")
    eq((rejected("level_1") - before["level_1"], rejected("other") - before["other"]), (1, 0),
       "counted under level_1, not other")
    eq(set_level(3).status, 200, "back to level 3")

    # bad input changes nothing
    for bad in ({"level": 4}, {"level": -1}, {"level": "2"}, {"level": None}, {"lvl": 1}, {}):
        r = set_level(None) if bad is None else g.admin("PUT", "/admin/v1/degrade", body=bad)
        eq((r.status, r.json.get("error")), (400, "bad_request"), "refused: %r" % (bad,))
    r = g.admin("PUT", "/admin/v1/degrade", body="not json")
    eq(r.status, 400, "malformed JSON refused")
    eq(g.admin("GET", "/admin/v1/degrade").json["level"], 3, "the level did not change")
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 1}, token=None).status, 401,
       "the degrade route needs the admin token")
    eq(g.admin("DELETE", "/admin/v1/degrade").status, 405, "other methods: 405")

    # back to automatic: an idle gateway falls back to 0 (exit_hold 2 s per level)
    r = set_level("auto")
    eq((r.status, r.json["mode"]), (200, "auto"), "auto")
finally:
    g.cleanup()
    srv.shutdown()
finish()
