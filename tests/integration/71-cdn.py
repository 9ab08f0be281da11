"""A stand-in CDN: Varnish with the shipped deploy/cdn/flashgate.vcl (backend
rewritten to a loopback gateway) in front of one flashgate.

A. A crowd refreshing two sales' info through the edge for a few seconds: the
   origin sees about one request per second per sale (flashgate's own request
   counter, and Varnish's backend_req), the crowd is answered from the cache.
   A query string does not bust the cache.
B. Buy, order status and health always reach the origin (the origin counts
   every one; the edge marks them PASS), and the client address reaches
   flashgate through X-Forwarded-For (per-IP limits apply per client).
C. Sold-out sale info is kept longer (max-age=10) than live sale info
   (max-age=1): after 2.2 s the sold-out page is still a HIT, the live one is
   fetched again.
D. The waiting room's queue page (no query: the same bytes for all) is
   answered at the edge like sale info; a join (?user_id=) always reaches the
   origin, each user getting a place of their own.
E. The origin down: the edge answers 503 in flashgate's JSON error format,
   with Retry-After and no-store, for a buy and for sale info alike.
"""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from edge import Varnish  # noqa: E402

need_binary("flashgate")


def call(port, method, path, body=None, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if body is not None:
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    hd = {k.lower(): v for k, v in r.getheaders()}
    try:
        j = json.loads(data) if data else None
    except ValueError:
        j = None
    return r.status, j, hd, c


g = Gateway("--kafka-brokers", "none", "--set", "server.trusted_proxies=127.0.0.1",
            "--set", "limits.user_rps=0", "--set", "limits.global_rps=0",
            "--set", "limits.sale_rps=0", "--set", "limits.ip_rps=0.5", "--set",
            "limits.ip_burst=2")
v = None
try:
    g.start()
    v = Varnish(g.port).start()
    # Pin degrade level 0: on a loaded machine the automatic control may
    # degrade, and then sale info says max-age=5 on purpose (api.md); this
    # test is about the normal level's caching.
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 0}).status, 200, "degrade level pinned")

    def origin_requests():
        return g.admin("GET", "/admin/v1/stats").json["requests"]

    # ---- A: a crowd on sale info ----
    g.put_sale("hot", stock=1000)
    g.put_sale("warm", stock=1000)
    DURATION = 3.0
    n = [0]
    hits = [0]
    lock = threading.Lock()
    stop_at = [0.0]
    base = origin_requests()
    v0 = v.counters()

    def crowd(t):
        conn = None
        k = 0
        while time.time() < stop_at[0]:
            sale = ("hot", "warm")[k % 2]
            k += 1
            try:
                st, j, h, conn = call(v.port, "GET", "/v1/sales/" + sale, conn=conn)
            except (OSError, http.client.HTTPException):
                conn = None
                continue
            with lock:
                n[0] += 1
                hits[0] += h.get("x-cache") == "HIT" and st == 200
        if conn:
            conn.close()
    stop_at[0] = time.time() + DURATION
    t0 = time.time()
    ths = [threading.Thread(target=crowd, args=(i,)) for i in range(8)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    elapsed = time.time() - t0
    origin = origin_requests() - base
    v1 = v.counters()
    backend = v1["backend_req"] - v0["backend_req"]
    per_sale_s = origin / 2 / elapsed
    print("A: %d crowd requests in %.1f s (%d hits); origin saw %d (%.2f per sale per second); "
          "varnish backend_req %d" % (n[0], elapsed, hits[0], origin, per_sale_s, backend))
    check(n[0] >= 200, "the crowd made many requests (%d)" % n[0])
    check(2 <= origin <= 2 * (elapsed + 2),
          "the origin saw about one request per second per sale: %d in %.1f s" % (origin, elapsed))
    check(backend <= 2 * (elapsed + 2), "varnish fetched from the origin about once per second "
          "per sale (%d)" % backend)
    eq(hits[0] + origin >= n[0], True, "every crowd request not sent to the origin was a HIT")

    base = origin_requests()
    for i in range(20):
        st, j, h, _ = call(v.port, "GET", "/v1/sales/hot?cb=%d" % i)
        check(st == 200 and j["sale_id"] == "hot", "sale info with a query string")
    check(origin_requests() - base <= 1, "a query string does not bust the cache (%d to origin)"
          % (origin_requests() - base))

    # ---- B: buy, order status and health always reach the origin ----
    base = origin_requests()
    ids = []
    for i in range(20):
        st, j, h, _ = call(v.port, "POST", "/v1/sales/hot/orders", body={"user_id": "b%d" % i},
                           headers={"X-Forwarded-For": "198.51.100.%d" % (i + 1)})
        eq((st, h.get("x-cache"), h.get("cache-control")), (202, "PASS", "no-store"),
           "buy %d reaches the origin, not cacheable" % i)
        if st == 202:
            ids.append((j["order_id"], j["status_token"]))
    for oid, tok in ids[:5] * 2:
        st, j, h, _ = call(v.port, "GET", "/v1/orders/%s?token=%s" % (oid, tok))
        eq((st, j and j["order_id"], h.get("x-cache")), (200, oid, "PASS"), "order status passes")
    for _ in range(3):
        st, j, h, _ = call(v.port, "GET", "/readyz")
        eq((st, h.get("x-cache")), (200, "PASS"), "readyz passes")
    eq(origin_requests() - base, 20 + 10 + 3, "the origin saw every buy, order status and readyz")
    # The client address reaches flashgate: per-IP limit (burst 2) per client.
    codes = [call(v.port, "POST", "/v1/sales/hot/orders", body={"user_id": "ip%d" % i},
                  headers={"X-Forwarded-For": "203.0.113.50"})[0] for i in range(4)]
    check(codes.count(202) == 2 and codes.count(429) == 2,
          "one client address: its burst of 2, then 429 (%r)" % codes)
    st = call(v.port, "POST", "/v1/sales/hot/orders", body={"user_id": "ip-other"},
              headers={"X-Forwarded-For": "203.0.113.51"})[0]
    eq(st, 202, "another client address through the same edge is not limited")

    # ---- C: sold out is cached longer than live ----
    g.put_sale("one", stock=1)
    st = call(v.port, "POST", "/v1/sales/one/orders", body={"user_id": "last"},
              headers={"X-Forwarded-For": "198.51.100.200"})[0]
    eq(st, 202, "the last unit")
    st, j, h, _ = call(v.port, "GET", "/v1/sales/one")
    eq((st, j["state"], h.get("cache-control")), (200, "sold_out", "public, max-age=10"),
       "sold-out sale info says max-age=10")
    st, j, h, _ = call(v.port, "GET", "/v1/sales/hot")
    eq(h.get("cache-control"), "public, max-age=1", "live sale info says max-age=1")
    time.sleep(2.2)
    base = origin_requests()
    st, j, h, _ = call(v.port, "GET", "/v1/sales/one")
    eq((st, h.get("x-cache")), (200, "HIT"), "sold-out sale info still cached after 2.2 s")
    check(int(h.get("age", "0")) >= 2, "its Age shows it is 2 s old (%r)" % h.get("age"))
    eq(origin_requests() - base, 0, "no origin request for the sold-out page")
    st, j, h, _ = call(v.port, "GET", "/v1/sales/hot")
    eq(origin_requests() - base, 1, "the live sale's info was fetched again after 2.2 s")

    # ---- D: the waiting room's queue page at the edge, a join at the origin ----
    eq(g.admin("PUT", "/admin/v1/sales/room", body={"stock": 10, "waiting_room_rate": 1}).status,
       201, "a sale with a waiting room")
    base = origin_requests()
    conn = None
    heads = []
    for i in range(30):
        st, j, h, conn = call(v.port, "GET", "/v1/sales/room/queue", conn=conn)
        check(st == 200 and j["sale_id"] == "room" and "position" not in j,
              "the queue page through the edge (%d %r)" % (st, j))
        heads.append(h.get("x-cache"))
    conn.close()
    origin = origin_requests() - base
    check(origin <= 3, "the crowd polling the queue page stays at the edge (%d to the origin, "
          "x-cache %r)" % (origin, heads))
    base = origin_requests()
    places = []
    for i in range(2):
        st, j, h, _ = call(v.port, "GET", "/v1/sales/room/queue?user_id=w%d" % i,
                           headers={"X-Forwarded-For": "198.51.100.%d" % (150 + i)})
        eq((st, h.get("x-cache"), h.get("cache-control")), (200, "PASS", "no-store"),
           "a join reaches the origin, not cacheable")
        places.append(j and j.get("position"))
    eq(origin_requests() - base, 2, "the origin saw both joins")
    check(None not in places and len(set(places)) == 2, "each user has a place of their own: %r"
          % places)

    # ---- E: the origin does not answer ----
    g.stop()
    for method, path, body in (("POST", "/v1/sales/hot/orders", {"user_id": "down"}),
                               ("GET", "/v1/sales/gone", None)):
        for _ in range(2):
            st, j, h, _ = call(v.port, method, path, body=body,
                               headers={"X-Forwarded-For": "198.51.100.250"})
            eq((st, h.get("content-type"), j and j.get("error"), h.get("retry-after"),
                h.get("cache-control")),
               (503, "application/json", "unavailable", "1", "no-store"),
               "%s %s with the origin down: flashgate's 503" % (method, path))
finally:
    if v:
        v.cleanup()
    g.cleanup()
finish()
