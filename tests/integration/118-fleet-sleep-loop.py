"""A Redis held by DEBUG SLEEP holds a worker loop for one
inventory.redis_timeout at most (gateway/buy/gw_fair_pool.c,
GW_FAIR_FAIL_FAST_AFTER; docs/fleet.md "When Redis stalls").

One gateway with one worker (--threads 1) on a redis:// inventory, with
inventory.redis_timeout=500ms, a sale with a waiting room. Redis sleeps 3 s
(DEBUG SLEEP: it holds every client, as a long script or a fork on a big
dataset does). Meanwhile, on the one worker:

- four room joins sent at once (each a blocking round trip on the worker's
  loop) all answer 503 with Retry-After 1 within 1.2 s: the first waits the
  timeout, the others then fail at once (before, three of them waited the
  timeout in turn: 1.5 s);
- a /healthz sent while they wait answers 200 within 1.2 s.

After the sleep a join gets a place again. Bounded: about 6 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, request  # noqa: E402
from fleet import NO_LIMITS, Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

TIMEOUT_S = 0.5
BOUND_S = 1.2  # one timeout and the rest at once; three timeouts in turn take 1.5 s


def join(g, user, timeout=30):
    return request(g.port, "GET", "/v1/sales/wr/queue?user_id=" + user, timeout=timeout)


red = Redis(aof=False, extra=["--enable-debug-command", "local"]).start()
g = None
try:
    g = start_fleet(red, 1, threads=1, extra=NO_LIMITS + (
        "--set", "inventory.redis_timeout=%dms" % int(TIMEOUT_S * 1000)))[0]
    r = g.admin("PUT", "/admin/v1/sales/wr", body={"stock": 5, "waiting_room_rate": 1000})
    eq(r.status, 201, "a sale with a waiting room")
    r = join(g, "w0")
    eq((r.status, r.json.get("position")), (200, 1), "a join with Redis awake")

    sleeper = socket.create_connection(("127.0.0.1", red.port), timeout=10)
    sleeper.sendall(b"DEBUG SLEEP 3\r\n")
    time.sleep(0.05)
    res = {}

    def call(name, user):
        t = time.monotonic()
        try:
            rr = join(g, user)
            res[name] = (rr.status, rr.headers.get("retry-after"), time.monotonic() - t)
        except Exception as e:  # a timeout of the client: the loop is frozen
            res[name] = (repr(e), None, time.monotonic() - t)

    t0 = time.monotonic()
    ths = [threading.Thread(target=call, args=("join w%d" % i, "w%d" % i)) for i in range(1, 5)]
    for t in ths:
        t.start()
    time.sleep(0.05)
    th = time.monotonic()
    try:
        hz = request(g.port, "GET", "/healthz", timeout=30).status
    except Exception as e:
        hz = repr(e)
    hz_s = time.monotonic() - th
    for t in ths:
        t.join(40)
    burst_s = time.monotonic() - t0
    for name in sorted(res):
        status, ra, secs = res[name]
        print("%s while Redis sleeps: %s in %.3f s" % (name, status, secs))
        eq((status, ra), (503, "1"), "%s while Redis sleeps: 503, Retry-After 1" % name)
    print("/healthz meanwhile: %s in %.3f s; the joins took %.3f s" % (hz, hz_s, burst_s))
    eq(hz, 200, "/healthz while Redis sleeps")
    check(hz_s < BOUND_S, "/healthz on the same worker answers in %.3f s < %.1f s" % (hz_s, BOUND_S))
    check(burst_s < BOUND_S, "the 4 joins are all answered in %.3f s < %.1f s" % (burst_s, BOUND_S))
    check(burst_s < 2.5, "and while Redis still sleeps (the test proves something)")

    sleeper.recv(16)  # +OK: awake
    sleeper.close()
    ok, secs = wait_for(lambda: join(g, "w5", timeout=10).status == 200, 5)
    check(ok, "a join gets a place again after the sleep (%.2f s)" % secs)
    rc, g = g.stop(), None
    eq(rc, 0, "the gateway stops cleanly")
finally:
    if g:
        g.stop()
    red.cleanup()
finish()
