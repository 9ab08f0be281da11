"""A proxied route's latency_target_ms, against a real upstream (a threaded HTTP
server run by this test) that answers every request in a flat 60 ms.

Two routes go to it, the same in all but the target: /v1/plain/ has none, so
its adaptive limit learns 60 ms as the upstream's normal and serves every call;
/v1/slow/ says a healthy answer takes at most 10 ms, so 60 ms is a queue to it,
its limit falls to the minimum (overload.limit_min, 4) and the rest of its
crowd gets the route's fallback with X-Flashgate-Degraded: 1, counted as
degraded upstream_limit. The stats show the target beside the RTT. When the
upstream answers within the target again (1 ms), the route is served by it
again within a few seconds (slow start). The target can be taken away and set
again live (PATCH /admin/v1/routes), audited, and bad input there changes
nothing. A target past the route's timeout, or
not a whole number of ms, is refused at start with the rule named.

Counts only, no latency assertions: 16 clients, each request bounded by its
timeout, 127.0.0.1 only."""
import http.client
import http.server
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, JsonUpstream, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")

# The upstream runs in a process of its own: in this one, the crowd's threads would hold
# the interpreter's lock and make its answers slower than the target for real.
DELAY = multiprocessing.Value("d", 0.060)


class Upstream(JsonUpstream):
    def delay(self):
        return DELAY.value


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


up = Server(("127.0.0.1", 0), Upstream)
base = "http://127.0.0.1:%d" % up.server_address[1]
up_proc = multiprocessing.get_context("fork").Process(target=up.serve_forever, daemon=True)
up_proc.start()
up.socket.close()  # the child serves it
FALLBACK = {"status": 200, "content_type": "application/json", "body": '{"from":"fallback"}'}
routes = [{"prefix": "/v1/plain/", "upstream": base, "timeout_ms": 1000, "fallback": FALLBACK},
          {"prefix": "/v1/slow/", "upstream": base, "timeout_ms": 1000, "latency_target_ms": 10,
           "fallback": FALLBACK}]


def crowd(port, prefix, seconds, clients=16):
    """clients keep-alive clients asking prefix for `seconds`; returns (upstream answers,
    fallbacks, other) for the whole run and for its last second."""
    end = time.time() + seconds

    def one(i):
        got = {"up": 0, "fb": 0, "other": 0, "up_last": 0, "fb_last": 0}
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        n = 0
        while time.time() < end and n < 2000:
            n += 1
            try:
                c.request("GET", "%sitem/%d" % (prefix, n))
                r = c.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException):
                got["other"] += 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                continue
            last = time.time() > end - 1.0
            if r.status == 200 and body == b'{"from":"upstream"}':
                got["up"] += 1
                got["up_last"] += last
            elif r.status == 200 and body == b'{"from":"fallback"}' and \
                    r.getheader("X-Flashgate-Degraded") == "1":
                got["fb"] += 1
                got["fb_last"] += last
                time.sleep(0.005)  # a person given the fallback does not come back at once
            else:
                got["other"] += 1
        c.close()
        return got

    total = {"up": 0, "fb": 0, "other": 0, "up_last": 0, "fb_last": 0}
    with ThreadPoolExecutor(clients) as ex:
        for g in ex.map(one, range(clients)):
            for k in total:
                total[k] += g[k]
    return total


g = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(routes),
            threads=1).start()
try:
    lim = g.admin("GET", "/admin/v1/stats").json["overload"]["limits"]
    eq(lim["upstream:/v1/slow/"].get("rtt_target_us"), 10000,
       "the stats show the route's target in us")
    check("rtt_target_us" not in lim["upstream:/v1/plain/"], "a route without one shows none")
    m = g.admin("GET", "/metrics").raw.decode()
    check('flashgate_dependency_latency_target_seconds{dependency="upstream:/v1/slow/"} 0.010000'
          in m and 'latency_target_seconds{dependency="upstream:/v1/plain/"}' not in m,
          "/metrics has the target of the route that has one, in seconds")

    plain = crowd(g.port, "/v1/plain/", 4.0)
    check(plain["up"] > 200 and plain["other"] == 0,
          "the route without a target is answered by its 60 ms upstream: %r" % plain)
    # a few fallbacks while a loaded machine (a sanitizer build beside other tests)
    # slows the upstream past what the limit learned; a target-driven cut is most
    check(plain["fb"] <= plain["up"] // 10,
          "and its limit learns 60 ms as normal: at most 10%% fallbacks: %r" % plain)

    slow = crowd(g.port, "/v1/slow/", 4.0)
    check(slow["other"] == 0, "the route with a 10 ms target answers every request: %r" % slow)
    check(slow["fb_last"] > 2 * slow["up_last"],
          "past its target the route's limit is cut: most of its last second is the "
          "fallback: %r" % slow)
    lim = g.admin("GET", "/admin/v1/stats").json["overload"]["limits"]["upstream:/v1/slow/"]
    eq(lim["limit"], 4, "its limit is at the minimum (overload.limit_min, one worker)")
    check(lim["rtt_us"] > 10000, "its RTT is past the target: %r" % lim)
    deg = g.admin("GET", "/admin/v1/stats").json["overload"]["degraded"]
    check(deg["upstream_limit"] >= slow["fb"],
          "the fallbacks are counted as degraded upstream_limit: %r" % deg)

    # ---- the target, live (PATCH /admin/v1/routes) ----
    R = g.admin("GET", "/admin/v1/routes").json["routes"]
    eq([(r["prefix"], r["latency_target_ms"], r["latency_target_ms_configured"]) for r in R],
       [("/v1/plain/", None, None), ("/v1/slow/", 10, 10)],
       "GET /admin/v1/routes lists the routes and their targets")
    n_audit = len(g.admin("GET", "/admin/v1/audit").json.get("entries", []))
    bad = [({"prefix": "/v1/slow/", "latency_target_ms": 0}, 400, "latency_target_ms must be"),
           ({"prefix": "/v1/slow/", "latency_target_ms": 1001}, 400, "timeout_ms (1000)"),
           ({"prefix": "/v1/slow/", "latency_target_ms": "20"}, 400, "latency_target_ms must be"),
           ({"prefix": "/v1/slow/"}, 400, "latency_target_ms must be"),
           ({"prefix": "/v1/slow/", "latency_target_ms": 20, "x": 1}, 400, "unknown field x"),
           ({"latency_target_ms": 20}, 400, "prefix must be"),
           ({"prefix": 7, "latency_target_ms": 20}, 400, "prefix must be"),
           ({"prefix": "/v1/nope/", "latency_target_ms": 20}, 404, "no proxied route"),
           ("[1]", 400, "JSON object")]
    for body, status, msg in bad:
        r = g.admin("PATCH", "/admin/v1/routes", body=body)
        check(r.status == status and r.json and msg in r.json.get("message", ""),
              "PATCH %r: %d naming the problem: %d %r" % (body, status, r.status, r.json))
    r = g.admin("PATCH", "/admin/v1/routes", body={"prefix": "/v1/slow/", "latency_target_ms": 5},
                token=None)
    eq(r.status, 401, "no token, no change")
    eq(g.admin("GET", "/admin/v1/routes").json["routes"], R, "bad input changed nothing")

    r = g.admin("PATCH", "/admin/v1/routes", body={"prefix": "/v1/slow/", "latency_target_ms": None})
    check(r.status == 200 and r.json["latency_target_ms"] is None and
          r.json["latency_target_ms_configured"] == 10,
          "PATCH null takes the target away, until a restart: %d %r" % (r.status, r.json))
    audit = g.admin("GET", "/admin/v1/audit").json.get("entries", [])
    check(len(audit) == n_audit + 1 and audit[-1]["what"] == "route.target" and
          audit[-1]["old"] == {"latency_target_ms": 10} and
          audit[-1]["new"] == {"latency_target_ms": None},
          "and the change is audited with the old target: %r" % audit[-1:])
    time.sleep(0.3)  # each worker's next tick
    lim = g.admin("GET", "/admin/v1/stats").json["overload"]["limits"]["upstream:/v1/slow/"]
    check("rtt_target_us" not in lim, "the stats show it gone: %r" % lim)
    freed = crowd(g.port, "/v1/slow/", 6.0)
    check(freed["up_last"] > freed["fb_last"] and freed["up_last"] > 2 * slow["up_last"],
          "without its target the route learns 60 ms as normal and is served again: %r "
          "(with it: %r)" % (freed, slow))

    r = g.admin("PATCH", "/admin/v1/routes", body={"prefix": "/v1/slow/", "latency_target_ms": 10})
    eq(r.json["latency_target_ms"], 10, "PATCH sets it back")
    DELAY.value = 0.001
    # While the crowd runs, the admin thread changes the target again and again (10 <-> 20 ms)
    # under the workers that read it: the TSan stage runs this test too.
    churn, stop = {"n": 0, "bad": 0}, threading.Event()

    def flip():
        while not stop.is_set():
            want = 20 if churn["n"] % 2 == 0 else 10
            r = g.admin("PATCH", "/admin/v1/routes",
                        body={"prefix": "/v1/slow/", "latency_target_ms": want})
            churn["n"] += 1
            churn["bad"] += r.status != 200
            time.sleep(0.05)
        g.admin("PATCH", "/admin/v1/routes", body={"prefix": "/v1/slow/", "latency_target_ms": 10})

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        back = crowd(g.port, "/v1/slow/", 5.0)
    finally:
        stop.set()
        flipper.join()
    check(churn["n"] >= 10 and churn["bad"] == 0,
          "the target was changed %d times under the crowd, each one answered 200" % churn["n"])
    check(back["up_last"] > 3 * max(1, back["fb_last"]),
          "an upstream within its target again is served by it again: %r" % back)
finally:
    g.cleanup()
    up_proc.terminate()
    up_proc.join(10)

# ---- a target past the route's timeout, or not whole ms, is refused at start ----
for bad in (2000, 0, 12.5, "10"):
    routes = [{"prefix": "/v1/x/", "upstream": base, "timeout_ms": 1000,
               "latency_target_ms": bad}]
    r = subprocess.run([os.path.join(BIN, "flashgate"), "--proxy-routes", json.dumps(routes),
                        "--check-config"], capture_output=True, text=True, timeout=30)
    check(r.returncode != 0 and "latency_target_ms must be an integer from 1 to the route's "
          "timeout_ms (1000)" in r.stderr,
          "latency_target_ms %r is refused, naming the rule: %d %r" %
          (bad, r.returncode, r.stderr[-300:]))
finish()
