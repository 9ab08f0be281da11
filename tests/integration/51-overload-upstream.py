"""A proxied route's upstream (a small HTTP server run by this test) that works,
then becomes slow, then fails: answers pass through while it works (hop-by-hop
headers dropped, X-Forwarded-For the peer, bodies both ways); slow and failing
answers become the route's fallback with X-Flashgate-Degraded: 1; its breaker
opens (the upstream then sees at most the probe), closes again once it
answers; and buys in the same run are all accepted meanwhile. A client's own
X-Forwarded-For fields never reach the upstream; a client that resets its
connection ends its transfer. Every fallback is counted as degraded with its
cause (timeout, error, breaker, a full limit on a second gateway, the level),
in /metrics and /admin/v1/stats alike, and none as a 503 rejection. Every
proxied answer is counted with the status it was sent with (a fallback's own
status, an upstream's 404 or 500), in the replies, flashgate_responses_total
and the access log; a failed exchange without a fallback (502, 504) is not a
degraded answer; the overload summary line reports the fallbacks by cause."""
import http.server
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402
from fleet import wait_for  # noqa: E402

need_binary("flashgate")

MODE = {"mode": "ok", "hits": 0}
LOCK = threading.Lock()
HOLD = threading.Event()  # /hold/...: answered once set (holds a limit's only slot)


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body=b""):
        if self.path.startswith("/v1/hang/"):
            # holds the transfer far past the client's patience, within the route's timeout
            time.sleep(3)
            mode = "ok"
        elif self.path.startswith("/hold/"):
            HOLD.wait(5)
            mode = "ok"
        elif self.path.startswith("/status/"):
            # /status/.../NNN: answers status NNN whatever MODE says
            code = int(self.path.rstrip("/").rsplit("/", 1)[1])
            out = b'{"status":%d}' % code
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        else:
            with LOCK:
                MODE["hits"] += 1
                mode = MODE["mode"]
        if mode == "slow":
            time.sleep(0.6)
        if mode == "fail":
            out = b'{"error":"boom"}'
            self.send_response(500)
        else:
            out = json.dumps({"path": self.path, "method": self.command,
                              "xff": self.headers.get("X-Forwarded-For"),
                              "secret": self.headers.get("X-Hop"),
                              "conn": self.headers.get("Connection"),
                              "ctype": self.headers.get("Content-Type"),
                              "body": body.decode()}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Upstream", "yes")
        self.send_header("Keep-Alive", "timeout=5")
        self.end_headers()
        try:
            self.wfile.write(out)
        except OSError:
            pass

    def do_GET(self):
        self._answer()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self._answer(self.rfile.read(n))

    def log_message(self, *a):
        pass


# Port 0: the kernel picks a free port, no race with other tests.
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
up_port = srv.server_address[1]
srv.daemon_threads = True
threading.Thread(target=srv.serve_forever, daemon=True).start()

FALLBACK = '{"items":[],"fallback":true}'
routes = [{"prefix": "/v1/recs/", "upstream": "http://127.0.0.1:%d" % up_port,
           "timeout_ms": 200, "criticality": "degradable",
           "fallback": {"status": 200, "content_type": "application/json", "body": FALLBACK}},
          {"prefix": "/v1/hang/", "upstream": "http://127.0.0.1:%d" % up_port,
           "timeout_ms": 5000, "criticality": "sheddable"}]
g = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(routes),
            "--proxy-breaker-failures", "3", "--proxy-breaker-cooldown", "600ms",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()


def recs(path="/v1/recs/x?a=1&b=x%20y"):
    return request(g.port, "GET", path, headers={"Connection": "keep-alive, X-Hop",
                                                 "X-Hop": "drop-me",
                                                 "X-Forwarded-For": "203.0.113.9"})


def up_stats(route="/v1/recs/"):
    return g.admin("GET", "/admin/v1/stats").json["overload"]["limits"]["upstream:" + route]


def answers(gw):
    """What the gateway counted of its answers: 503 overloaded by reason
    (flashgate_overload_rejected_total), fallbacks by cause
    (flashgate_overload_degraded_total) and the proxy route's answers by status
    and code ("503_fallback", from flashgate_responses_total) from /metrics; the
    same fallbacks (overload.degraded), the shed per criticality, the replies
    and the upstream limits from the stats."""
    rej, deg, resp = {}, {}, {}
    for line in gw.admin("GET", "/metrics").raw.decode().splitlines():
        for name, into in (('flashgate_overload_rejected_total{reason="', rej),
                           ('flashgate_overload_degraded_total{reason="', deg)):
            if line.startswith(name):
                reason, _, val = line[len(name):].partition('"} ')
                into[reason] = int(float(val))
        if line.startswith('flashgate_responses_total{route="proxy",'):
            labels, _, val = line.partition("} ")
            status = re.search(r'status="(\d+)"', labels).group(1)
            code = re.search(r'code="([^"]*)"', labels).group(1)
            resp[status + "_" + code] = int(float(val))
    st = gw.admin("GET", "/admin/v1/stats").json
    return {"rejected": rej, "degraded": deg, "responses": resp,
            "stats_degraded": dict(st["overload"].get("degraded") or {}),
            "shed": dict(st["overload"].get("shed") or {}),
            "replies": st["replies"], "limits": st["overload"]["limits"]}


def grew(before, after, kind):
    """The counters of `kind` that moved between two answers() snapshots."""
    keys = set(before[kind]) | set(after[kind])
    d = {k: after[kind].get(k, 0) - before[kind].get(k, 0) for k in keys}
    return {k: v for k, v in d.items() if v}


def counted_as_degraded(before, after, want, what):
    """Between the snapshots exactly `want` ({cause: n}) fallbacks were answered:
    counted as degraded with those causes in both endpoints, none as a 503.
    Before, a fallback for a full limit or an open breaker was counted as the
    503 it replaced (upstream_limit, upstream_breaker) and not as a fallback."""
    want = {k: v for k, v in want.items() if v}
    eq(grew(before, after, "degraded"), want,
       what + ": the fallbacks by cause in flashgate_overload_degraded_total")
    eq(grew(before, after, "stats_degraded"), want,
       what + ": the fallbacks by cause in the stats' overload.degraded")
    eq(grew(before, after, "rejected"), {},
       what + ": no 503 rejection counted (flashgate_overload_rejected_total)")
    replies = {k: v for k, v in grew(before, after, "replies").items()
               if k.endswith(("_fallback", "_overloaded"))}  # buys may run meanwhile
    eq(replies, {"200_fallback": sum(want.values())},
       what + ": every answer was the fallback, none a 503")


def raw_exchange(data):
    """Sends data on a new connection, reads until the server closes; the body."""
    sk = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    sk.sendall(data)
    out = b""
    while True:
        chunk = sk.recv(65536)
        if not chunk:
            break
        out += chunk
    sk.close()
    return out.split(b"\r\n\r\n", 1)


try:
    g.put_sale("s", stock=1000, per_user_limit=1)

    # ---- the upstream works: answers pass through ----
    r = recs()
    eq(r.status, 200, "proxied GET")
    check("x-flashgate-degraded" not in r.headers, "a served answer is not marked degraded")
    eq(r.headers.get("x-upstream"), "yes", "the upstream's own headers pass")
    check("keep-alive" not in r.headers, "hop-by-hop response headers are dropped")
    eq(r.json["path"], "/v1/recs/x?a=1&b=x%20y", "path and query reach the upstream")
    # The query as sent: a '+' stays a '+' (decoded and encoded again it became
    # %2B, a literal plus), an empty pair stays, nothing past the 32nd argument is cut.
    q = "q=red+shoes&&c=%2B&" + "&".join("a%d=%d" % (i, i) for i in range(40))
    eq(recs("/v1/recs/q?" + q + "#frag").json["path"], "/v1/recs/q?" + q,
       "the query reaches the upstream as sent, without the fragment")
    eq(r.json["xff"], "127.0.0.1",
       "X-Forwarded-For from a peer that is no trusted proxy is the peer alone")
    eq(r.json["secret"], None, "a header named in Connection is dropped")
    eq(r.json["conn"], None, "Connection itself is dropped")
    p = request(g.port, "POST", "/v1/recs/post", body="hello upstream",
                headers={"Content-Type": "text/plain"})
    eq((p.status, p.json["method"], p.json["body"]), (200, "POST", "hello upstream"),
       "a POST body reaches the upstream")
    eq(p.json["ctype"], "text/plain", "the client's Content-Type reaches the upstream")
    # No Content-Type from the client, none to the upstream (libcurl would add
    # application/x-www-form-urlencoded to a POST body of its own accord).
    _, raw = raw_exchange(b"POST /v1/recs/bare HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                          b"Connection: close\r\n\r\nhi")
    bare = json.loads(raw or b"{}")
    eq((bare.get("body"), bare.get("ctype")), ("hi", None),
       "a body without a Content-Type reaches the upstream without one")
    # A body over proxy.max_body is refused from its head (the body is never read).
    sk = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    sk.sendall(b"POST /v1/recs/big HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: %d\r\n\r\n" % (2 << 20))
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = sk.recv(4096)
            if not chunk:
                break
            head += chunk
    except socket.timeout:
        pass
    sk.close()
    check(head.startswith(b"HTTP/1.1 413"), "a body over proxy.max_body is refused: %r" % head[:40])
    eq(up_stats()["breaker"], "closed", "breaker closed while it works")

    # X-Forwarded-For from a client (no trusted proxy here): its own fields,
    # however many, are addresses it made up; the upstream gets the peer alone
    # (a trusted proxy's list, joined and whole: 77-proxy-hostile).
    head, body = raw_exchange(b"GET /v1/recs/xff HTTP/1.1\r\nHost: x\r\n"
                              b"X-Forwarded-For: 203.0.113.9\r\n"
                              b"X-Forwarded-For: 198.51.100.7, 198.51.100.8\r\n"
                              b"Connection: close\r\n\r\n")
    eq(json.loads(body)["xff"], "127.0.0.1",
       "a client's X-Forwarded-For fields are dropped, the peer sent alone")

    # A client that resets its connection while its transfer runs: the transfer
    # ends then (its upstream slot free, counted), not at the upstream's answer
    # (3 s) or the route's timeout (5 s). A half-close still gets its answer
    # (14-http1 "halfclose.*").
    aborts_before = g.admin("GET", "/admin/v1/stats").json.get("proxy_client_aborts")
    sk = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    sk.sendall(b"GET /v1/hang/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    ok, _ = wait_for(lambda: up_stats("/v1/hang/")["inflight"] == 1, 2)
    check(ok, "the transfer runs")
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sk.close()  # RST
    ok, waited = wait_for(lambda: up_stats("/v1/hang/")["inflight"] == 0, 2)
    check(ok, "the transfer ends when its client resets, not at the upstream's answer: %r" %
          (up_stats("/v1/hang/"),))
    eq(g.admin("GET", "/admin/v1/stats").json.get("proxy_client_aborts"), aborts_before + 1,
       "and is counted")
    eq(up_stats("/v1/hang/")["drops"], 0, "a client's abort is not the upstream's drop")

    # ---- slow (past the route's timeout): fallback, and buys meanwhile are accepted ----
    MODE["mode"] = "slow"
    before = answers(g)

    def slow_one(_):
        x = recs()
        return x.status, x.raw.decode(), x.headers.get("x-flashgate-degraded")

    def buy_one(i):
        return g.buy("s", "u%d" % i).status

    with ThreadPoolExecutor(16) as ex:
        slow = ex.map(slow_one, range(12))
        buys = ex.map(buy_one, range(60))
        slow, buys = list(slow), list(buys)
    check(all(s == (200, FALLBACK, "1") for s in slow),
          "a slow upstream's requests get the fallback with X-Flashgate-Degraded: 1: %r" %
          slow[:3])
    eq(buys.count(202), 60, "every buy in the same run is accepted")
    st = up_stats()
    check(st["breaker_opens"] >= 1, "timeouts in a row open the breaker: %r" % st)
    check(st["drops"] >= 3, "the timeouts are counted as drops: %r" % st)
    after = answers(g)
    # each timeout is a drop; what came after the breaker opened, its refusal
    timeouts = after["limits"]["upstream:/v1/recs/"]["drops"] - \
        before["limits"]["upstream:/v1/recs/"]["drops"]
    counted_as_degraded(before, after, {"upstream_timeout": timeouts,
                                        "upstream_breaker": 12 - timeouts}, "a slow upstream")

    # ---- failing (500): open breaker, the upstream sees at most probes ----
    MODE["mode"] = "fail"
    time.sleep(0.7)  # past the cool-down: a probe goes out and fails
    for _ in range(3):
        recs()
    with LOCK:
        hits_before = MODE["hits"]
    before = answers(g)
    outs = [recs() for _ in range(20)]
    after = answers(g)
    with LOCK:
        hits = MODE["hits"] - hits_before
    check(all(o.status == 200 and o.raw.decode() == FALLBACK and
              o.headers.get("x-flashgate-degraded") == "1" for o in outs),
          "a failing upstream's requests get the fallback")
    check(hits <= 1, "the open breaker keeps requests off the upstream: %d reached it" % hits)
    # the breaker refused all but a probe (whose 500 is the upstream's error)
    counted_as_degraded(before, after, {"upstream_breaker": 20 - hits, "upstream_error": hits},
                        "an open breaker")
    eq(up_stats()["breaker"] in ("open", "half_open"), True, "the breaker is open")
    eq(g.buy("s", "after-fail").status, 202, "buys still accepted")

    # ---- recovered: after the cool-down the probe succeeds and the breaker closes ----
    MODE["mode"] = "ok"
    deadline = time.time() + 5
    served = None
    while time.time() < deadline:
        served = recs()
        if served.headers.get("x-upstream") == "yes":
            break
        time.sleep(0.1)
    check(served is not None and served.headers.get("x-upstream") == "yes",
          "the upstream serves again after the cool-down")
    eq(up_stats()["breaker"], "closed", "the probe's success closes the breaker")
    log = g.logs(200000)
    check(log.count("upstream failed") == 0, "no log line per upstream failure at info level")
    end = answers(g)
    eq(sum(end["degraded"].values()), end["replies"].get("200_fallback", 0),
       "every fallback of the run is counted as degraded, once")
    eq(end["stats_degraded"], end["degraded"], "the stats and /metrics count the same fallbacks")
finally:
    g.cleanup()

# ---- a full limit: a second gateway whose upstream limit is one request ----
# The held request takes the only slot; the others are refused by the limit and
# answered with the fallback. The dependency's `rejected` still counts them (the
# limit refused them, whatever the route answered instead).
held_routes = [{"prefix": "/v1/held/", "upstream": "http://127.0.0.1:%d/hold" % up_port,
                "timeout_ms": 5000, "criticality": "degradable",
                "fallback": {"status": 200, "content_type": "application/json",
                             "body": FALLBACK}}]
g2 = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(held_routes),
             "--set", "overload.limit_min=1", "--set", "overload.limit_max=1",
             "--set", "overload.limit_initial=1",
             "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()
try:
    def held_stats():
        return g2.admin("GET", "/admin/v1/stats").json["overload"]["limits"]["upstream:/v1/held/"]

    HOLD.clear()
    with ThreadPoolExecutor(1) as ex:
        first = ex.submit(request, g2.port, "GET", "/v1/held/first")
        ok, _ = wait_for(lambda: held_stats()["inflight"] == 1, 3)
        check(ok, "the held request takes the limit's only slot: %r" % (held_stats(),))
        before = answers(g2)
        outs = [request(g2.port, "GET", "/v1/held/%d" % i) for i in range(5)]
        after = answers(g2)
        HOLD.set()
        first = first.result()
    check(all(o.status == 200 and o.raw.decode() == FALLBACK and
              o.headers.get("x-flashgate-degraded") == "1" for o in outs),
          "a full limit's refusals get the fallback: %r" % [(o.status, o.raw[:60]) for o in outs])
    eq((first.status, first.headers.get("x-upstream")), (200, "yes"),
       "the held request is served by the upstream")
    counted_as_degraded(before, after, {"upstream_limit": 5}, "a full limit")
    eq(after["limits"]["upstream:/v1/held/"]["rejected"] -
       before["limits"]["upstream:/v1/held/"]["rejected"], 5,
       "the limit's own count of its refusals")

    # the level: a degradable route with a fallback is degraded at level 1
    before = answers(g2)
    eq(g2.admin("PUT", "/admin/v1/degrade", body={"level": 1}).status, 200, "pin level 1")
    lv = request(g2.port, "GET", "/v1/held/level")
    eq(g2.admin("PUT", "/admin/v1/degrade", body={"level": 0}).status, 200, "pin level 0")
    eq((lv.status, lv.raw.decode(), lv.headers.get("x-flashgate-degraded")),
       (200, FALLBACK, "1"), "level 1 answers the fallback")
    counted_as_degraded(before, answers(g2), {"level_1": 1}, "level 1")
finally:
    HOLD.set()
    g2.cleanup()

# ---- the status sent: a fallback's own, an upstream's own ----
# Each proxied answer is counted with the status the client got, in the stats'
# replies and flashgate_responses_total alike (the `<status>_<code>` keys).
# Before, every fallback counted as 200_fallback (a 503 or 429 fallback too)
# and every upstream answer as 200_proxied (a 404 or 500 passed through too).
# A failed exchange on a route without a fallback is a 502 or 504: not marked
# X-Flashgate-Degraded (promised for fallbacks and shed answers only), nor
# counted as shed or degraded; before, it was marked and counted nowhere.
# A socket bound but not listening: connections to it are refused (ours, no
# other test can take its port meanwhile).
dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
dead.bind(("127.0.0.1", 0))
dead_port = dead.getsockname()[1]
FB503, FB429 = '{"busy":503}', '{"busy":429}'
code_routes = [
    {"prefix": "/v1/fb503/", "upstream": "http://127.0.0.1:%d/status" % up_port,
     "timeout_ms": 2000, "criticality": "sheddable",
     "fallback": {"status": 503, "content_type": "application/json", "body": FB503}},
    {"prefix": "/v1/fb429/", "upstream": "http://127.0.0.1:%d" % dead_port,
     "timeout_ms": 2000, "criticality": "degradable",
     "fallback": {"status": 429, "content_type": "application/json", "body": FB429}},
    {"prefix": "/v1/code/", "upstream": "http://127.0.0.1:%d/status" % up_port,
     "timeout_ms": 2000, "criticality": "degradable"},
    {"prefix": "/v1/dead/", "upstream": "http://127.0.0.1:%d" % dead_port,
     "timeout_ms": 2000, "criticality": "degradable"},
    # the upstream's /v1/hang/ answers after 3 s: past this route's 200 ms
    {"prefix": "/v1/late/", "upstream": "http://127.0.0.1:%d/v1/hang" % up_port,
     "timeout_ms": 200, "criticality": "sheddable"}]
g3 = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(code_routes),
             "--proxy-breaker-failures", "10", "--access-log-sample", "1",
             "--log-summary-interval", "200ms",
             "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()
try:
    before = answers(g3)
    got = {}
    for path in ("/v1/fb503/500", "/v1/fb503/500", "/v1/fb429/x", "/v1/code/404",
                 "/v1/code/500", "/v1/code/201", "/v1/code/200", "/v1/dead/x", "/v1/late/x"):
        o = request(g3.port, "GET", path)
        got.setdefault(path, []).append((o.status, o.headers.get("x-flashgate-degraded")))
        if path.startswith("/v1/fb"):
            eq(o.raw.decode(), FB503 if "503" in path else FB429, path + ": the fallback's body")
    after = answers(g3)
    eq(got, {"/v1/fb503/500": [(503, "1")] * 2, "/v1/fb429/x": [(429, "1")],
             "/v1/code/404": [(404, None)], "/v1/code/500": [(500, None)],
             "/v1/code/201": [(201, None)], "/v1/code/200": [(200, None)],
             "/v1/dead/x": [(502, None)], "/v1/late/x": [(504, None)]},
       "each answer's status, and X-Flashgate-Degraded only on the fallbacks")
    sent = {"503_fallback": 2, "429_fallback": 1, "404_proxied": 1, "500_proxied": 1,
            "201_proxied": 1, "200_proxied": 1, "502_bad_gateway": 1, "504_gateway_timeout": 1}
    eq(grew(before, after, "replies"), sent,
       "the stats' replies count each answer with the status sent")
    eq(grew(before, after, "responses"), sent,
       "flashgate_responses_total{route=\"proxy\"} counts each answer with the status sent")
    eq(grew(before, after, "degraded"), {"upstream_error": 3},
       "the fallbacks by cause; the 502 and 504 are not degraded answers")
    eq(grew(before, after, "stats_degraded"), {"upstream_error": 3},
       "the stats' overload.degraded alike")
    eq(grew(before, after, "shed"), {"sheddable": 2, "degradable": 1},
       "shed: the fallbacks, not the 502 or 504")
    eq(grew(before, after, "rejected"), {}, "no 503 overloaded counted")
    # And each path as sent: the access line's path was not NUL-terminated,
    # so after a failed exchange it came out with stack bytes after it
    # ("path=/v1/fb503/500U").
    def access_log():
        n = {}
        for m in re.finditer(r"mod=access .* path=(\S*) route=proxy status=(\d+) code=(\w+) ",
                             g3.logs(200000)):
            k = "%s %s_%s" % m.groups()
            n[k] = n.get(k, 0) + 1
        return n

    logged = {"/v1/fb503/500 503_fallback": 2, "/v1/fb429/x 429_fallback": 1,
              "/v1/code/404 404_proxied": 1, "/v1/code/500 500_proxied": 1,
              "/v1/code/201 201_proxied": 1, "/v1/code/200 200_proxied": 1,
              "/v1/dead/x 502_bad_gateway": 1, "/v1/late/x 504_gateway_timeout": 1}
    wait_for(lambda: access_log() == logged, 2)
    eq(access_log(), logged,
       "the access log (sampled at 1) has each answer with its path and the status sent: %r" %
       [x for x in g3.logs(200000).splitlines() if "mod=access" in x])

    # The overload summary line (every 200 ms here) reports the fallbacks by
    # cause; they may fall in two summaries, so they are summed.
    def summed():
        n, by = 0, {}
        for m in re.finditer(r'mod=overload msg=summary .*? degraded=(\d+) degraded_by="([^"]*)"',
                             g3.logs(200000)):
            n += int(m.group(1))
            for kv in filter(None, m.group(2).split(",")):
                k, _, v = kv.partition("=")
                by[k] = by.get(k, 0) + int(v)
        return n, by

    ok, _ = wait_for(lambda: summed()[0] >= 3, 3)
    eq(summed(), (3, {"upstream_error": 3}),
       "the overload summary reports the fallbacks by cause: %r" %
       re.findall(r"mod=overload msg=summary .*", g3.logs(200000))[-2:])
finally:
    g3.cleanup()
    dead.close()
    srv.shutdown()
finish()
