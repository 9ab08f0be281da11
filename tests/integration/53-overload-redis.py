"""A Redis that stops answering (DEBUG SLEEP) gets fast 503 overloaded
(reason redis_limit: the request never reached Redis) instead of a crowd of
requests each waiting for its timeout; the adaptive limit records the drops
and refusals, and buys are accepted again once Redis answers.
The same burst against a gateway with overload.adaptive=false waits for the
timeouts (or the old breaker) and never says redis_limit: the difference is
the limit, not the load."""
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402
from fleet import Redis  # noqa: E402

need_binary("flashgate")
redis = Redis(aof=False, extra=["--enable-debug-command", "local"]).start()

COMMON = ["--inventory", redis.url, "--inventory-redis-timeout", "100ms", "--kafka-brokers",
          "none", "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
          "--overload-limit-initial", "4", "--overload-limit-min", "2", "--threads", "1"]


def burst(g, sale, tag, n=160, conc=32):
    """Holds Redis for 1.2 s and sends n buys from conc clients meanwhile."""
    t = threading.Thread(target=lambda: redis.cmd("DEBUG", "SLEEP", "1.2", timeout=10))
    t.start()
    time.sleep(0.1)

    def one(i):
        r = g.buy(sale, "%s-%d" % (tag, i))
        return (r.status, (r.json or {}).get("error"), (r.json or {}).get("reason"),
                r.headers.get("retry-after"), (r.json or {}).get("message", ""))

    with ThreadPoolExecutor(conc) as ex:
        out = list(ex.map(one, range(n)))
    t.join(10)
    return out


def stats(g):
    return g.admin("GET", "/admin/v1/stats").json["overload"]


try:
    # ---- with the adaptive limit (the default) ----
    g = Gateway(*COMMON).start()
    try:
        g.put_sale("s", stock=100000, per_user_limit=1)
        for i in range(20):
            eq(g.buy("s", "warm-%d" % i).status, 202, "a healthy Redis accepts")
        out = burst(g, "s", "a")
        # Refused at once: by the limit, or by the breaker its drops opened (which of
        # the two takes a request depends on when a slow client sends it); waited:
        # a request that sat out inventory.redis_timeout.
        limited = [o for o in out if o[:3] == (503, "overloaded", "redis_limit")]
        broke = [o for o in out if o[:2] == (503, "unavailable") and "timed out" not in o[4]]
        waited = [o for o in out if o[:2] == (503, "unavailable") and "timed out" in o[4]]
        print("# adaptive: %d refused at the limit, %d by the breaker, %d timed out, %d other" %
              (len(limited), len(broke), len(waited),
               len(out) - len(limited) - len(broke) - len(waited)))
        check(len(limited) >= 8, "the Redis limit refuses part of the burst at once: %d of %d" %
              (len(limited), len(out)))
        check(len(limited) + len(broke) >= len(out) // 2,
              "most of the burst is refused at once: %d of %d" %
              (len(limited) + len(broke), len(out)))
        check(len(waited) < len(limited) + len(broke),
              "refusals at once outnumber timeouts: %d vs %d" %
              (len(limited) + len(broke), len(waited)))
        check(all(o[3] is not None and 1 <= int(o[3]) <= 3 for o in limited),
              "every redis_limit 503 has a Retry-After within 1..3")
        s = stats(g)
        red = s["limits"]["redis"]
        check(red["rejected"] >= len(limited), "stats count the refusals: %r" % red)
        check(red["drops"] >= 1, "stats count the timeouts as drops: %r" % red)
        check(red["limit"] >= 2, "the limit never goes below its minimum: %r" % red)
        check("breaker" in red, "the Redis breaker state is shown: %r" % red)
        # Redis answers again: buys go through (the limit lets its slots out again).
        ok = 0
        for i in range(40):
            if g.buy("s", "after-%d" % i).status == 202:
                ok += 1
            time.sleep(0.01)
        check(ok >= 35, "buys are accepted again after the stall: %d of 40" % ok)
        log = g.logs(200000)
        check(log.count("circuit breaker") == 0, "no log line per breaker event")
    finally:
        g.cleanup()

    # ---- the same burst without it ----
    g = Gateway(*COMMON, "--overload-adaptive=false").start()
    try:
        g.put_sale("s", stock=100000, per_user_limit=1)
        out = burst(g, "s", "b")
        limited = [o for o in out if o[2] == "redis_limit"]
        print("# not adaptive: %d redis_limit, %d unavailable" %
              (len(limited), len([o for o in out if o[1] == "unavailable"])))
        eq(len(limited), 0, "without the limit nothing is refused before Redis")
        check("redis" not in stats(g)["limits"] or stats(g)["limits"]["redis"]["rejected"] == 0,
              "and no refusal is counted")
    finally:
        g.cleanup()

    # ---- a slow admin operation does not hold up the admin /healthz ----
    # The admin listener runs on a fixed pool of threads (gw_admin.c): two admin
    # writes stuck behind a stalled Redis (one in its call, one on the admin lock)
    # hold two of them; a load balancer's probe must still be answered meanwhile.
    g = Gateway(*COMMON, "--inventory-redis-timeout", "5s").start()
    try:
        g.put_sale("slow", stock=10, per_user_limit=1)
        sleeper = threading.Thread(target=lambda: redis.cmd("DEBUG", "SLEEP", "1.5", timeout=10))
        sleeper.start()
        time.sleep(0.1)
        writes = [threading.Thread(target=g.put_sale, args=("w%d" % i,),
                                   kwargs={"stock": 5, "per_user_limit": 1}) for i in range(2)]
        for t in writes:  # apart, so that each is accepted by a thread of its own
            t.start()
            time.sleep(0.1)
        pending = sum(1 for t in writes if t.is_alive())
        h = [request(g.admin_port, "GET", "/healthz", timeout=5).status for _ in range(5)]
        still = sum(1 for t in writes if t.is_alive())
        eq(pending, 2, "both admin writes wait for the stalled Redis")
        eq(h, [200] * 5, "the admin /healthz answers while they wait")
        eq(still, 2, "and it answered before either write finished")
        for t in writes:
            t.join(10)
        sleeper.join(10)
        eq(g.admin("GET", "/admin/v1/sales/w1").status, 200, "the writes went through after")
    finally:
        g.cleanup()
finally:
    redis.cleanup()
finish()
