"""A fleet's admission-token claim whose outcome the gateway never learns:
Redis is stopped (SIGSTOP) while the claim's SET NX waits in its socket, the
buy answers 503 after inventory.redis_timeout, and Redis runs the claim when
it resumes. The buyer retries with the same token and no Idempotency-Key: the
gateway gives such a claim back (a compare-and-delete on the claim's own
value, retried by the lottery thread), so the retry buys; it used to read
403 admission_spent for the token's whole lifetime. The order then spends the
token: a third buy with it is 403."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, request  # noqa: E402
from fleet import NO_LIMITS, Redis, need_redis, start_fleet  # noqa: E402

need_binary("flashgate")
need_redis()


def queue_token(g, sale, user):
    for _ in range(200):
        q = request(g.port, "GET", "/v1/sales/%s/queue?user_id=%s" % (sale, user))
        if q.status == 200 and q.json.get("admission_token"):
            return q.json["admission_token"]
        time.sleep(0.05)
    return None


def buy(g, sale, user, tok, key=None):
    h = {"X-Admission-Token": tok}
    if key:
        h["Idempotency-Key"] = key
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale,
                   body={"qty": 1, "user_id": user}, headers=h, timeout=30)


redis = Redis().start()
gws = []
stopped = False
try:
    gws = start_fleet(redis, 1, threads=1,
                      extra=NO_LIMITS + ("--set", "inventory.redis_timeout=300ms"))
    g = gws[0]
    r = g.admin("PUT", "/admin/v1/sales/cf", body={
        "stock": 5, "per_user_limit": 2, "fair_window_ms": 0, "waiting_room_rate": 1000})
    eq(r.status, 201, "sale with a waiting room")
    tok = queue_token(g, "cf", "u1")
    check(tok is not None, "u1 is admitted")

    redis.proc.send_signal(signal.SIGSTOP)
    stopped = True
    t0 = time.time()
    r = buy(g, "cf", "u1", tok)
    eq(r.status, 503, "a buy while Redis is stopped (%.2f s)" % (time.time() - t0))
    redis.proc.send_signal(signal.SIGCONT)
    stopped = False

    # Redis now runs the stalled claim; the gateway's give-back follows it.
    t0 = time.time()
    statuses = []
    r = None
    while time.time() - t0 < 8:
        r = buy(g, "cf", "u1", tok)
        statuses.append((r.status, (r.json or {}).get("reason")))
        if r.status == 202:
            break
        time.sleep(0.2)
    eq(r.status, 202, "the same token buys after the stall (answers %s)" % statuses[-5:])
    print("the retry bought %.2f s after SIGCONT, %d attempts" % (time.time() - t0, len(statuses)))

    r = buy(g, "cf", "u1", tok)
    eq((r.status, (r.json or {}).get("reason")), (403, "admission_spent"),
       "the order spent the token")
    s = g.admin("GET", "/admin/v1/sales/cf").json
    eq((s.get("stock_left"), s.get("accepted_orders")), (4, 1), "one order, one unit")
finally:
    if stopped:
        redis.proc.send_signal(signal.SIGCONT)
    for g in gws:
        g.stop()
    redis.cleanup()
finish()
