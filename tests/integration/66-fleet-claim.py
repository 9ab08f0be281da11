"""Two gateways on one Redis: a keyed retry that gateway B answers 202 for an
order gateway A reserved, while A gives that order back because its client
heard 503 (A's reserve answered after A's timeout), must leave exactly one
order held, whichever of the two reaches Redis first.

Redis is held in DEBUG SLEEP so that A's reserve times out on A (503) but
runs once Redis wakes; B's retry with the same key then finds A's order.
- Claim first: A is SIGSTOPped until B has answered, so B's claim runs
  before A's give-back. B answers 202 with A's order; A's give-back is
  refused; the order stays held, in B's spool, and the user is at the limit.
  Before the claim, A's give-back released the order B had answered 202 for:
  the unit sold twice and the user past the limit.
- Give-back first: B is SIGSTOPped after it sent its reserve, so A's
  give-back runs before B's claim. B answers 503 (nothing held, no 202), and
  the next retry buys anew. Before, B answered 202 for an order that no
  longer existed.
"""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis, spool_orders, wait_for  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-spool")

NO_LIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"]
redis = Redis(aof=False, extra=["--enable-debug-command", "local"]).start()
# A times out at 300 ms; B waits up to 5 s, so it sees Redis wake up.
a = Gateway("--inventory", redis.url, "--inventory-redis-timeout", "300ms", "--node-id", "11",
            "--kafka-brokers", "none", *NO_LIMITS)
b = Gateway("--inventory", redis.url, "--inventory-redis-timeout", "5000ms", "--node-id", "12",
            "--kafka-brokers", "none", *NO_LIMITS)


def sleep_redis(seconds):
    t = threading.Thread(target=lambda: redis.cmd("DEBUG", "SLEEP", str(seconds), timeout=10))
    t.start()
    time.sleep(0.05)
    return t


def held(sale):
    """(orders held, units left) as Redis has them."""
    return (int(redis.cmd("HLEN", "{sale:%s}:orders" % sale)),
            int(redis.cmd("HGET", "{sale:%s}:meta" % sale, "left")))


def redis_orders(sale):
    return sorted(redis.cmd("HKEYS", "{sale:%s}:orders" % sale) or [])


try:
    a.start(wait=False)
    b.start()
    a.wait_ready()
    a.put_sale("claim1", stock=5, per_user_limit=1)
    a.put_sale("claim2", stock=5, per_user_limit=1)
    ok, _ = wait_for(lambda: b.get("/v1/sales/claim2").status == 200, 5)
    check(ok, "B sees the sales")

    # --- claim first: B's 202 stands, A's give-back is refused ---
    t = sleep_redis(1.0)
    r = a.buy("claim1", "alice", key="k-claim1")
    eq((r.status, (r.json or {}).get("error")), (503, "unavailable"), "A's reserve times out")
    a.proc.send_signal(signal.SIGSTOP)
    try:
        rb = b.buy("claim1", "alice", key="k-claim1")
        t.join(10)
        eq(rb.status, 202, "B accepts the keyed retry: %r" % rb)
        eq(rb.headers.get("idempotent-replayed"), "true", "with the order A reserved")
        oid = rb.json["order_id"]
        eq(held("claim1"), (1, 4), "one order held before A wakes")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    time.sleep(1.0)  # A reads its late reply and sends its give-back
    eq(held("claim1"), (1, 4), "A's give-back left the claimed order held")
    eq(redis_orders("claim1"), [oid], "the order B answered 202 for")
    check(oid in spool_orders(b, "claim1"), "B's spool holds it")
    eq(int(redis.cmd("HGET", "{sale:claim1}:users", "alice")), 1, "alice holds one unit")
    r = a.buy("claim1", "alice", key="k-claim1-other")
    eq((r.status, (r.json or {}).get("error")), (409, "limit_per_user"),
       "alice cannot buy past her limit")
    # A, asked again with the key, answers with the same order (spooled there too)
    r = a.buy("claim1", "alice", key="k-claim1")
    eq((r.status, (r.json or {}).get("order_id")), (202, oid), "A replays B's 202: %r" % r)
    eq(held("claim1"), (1, 4), "still one order")

    # --- give-back first: B's claim is refused, no 202 for a released order ---
    t = sleep_redis(1.0)
    r = a.buy("claim2", "bob", key="k-claim2")
    eq((r.status, (r.json or {}).get("error")), (503, "unavailable"), "A's reserve times out")
    res = {}
    bt = threading.Thread(target=lambda: res.update(r=b.buy("claim2", "bob", key="k-claim2")))
    bt.start()
    time.sleep(0.15)  # B has read the request and sent its reserve
    b.proc.send_signal(signal.SIGSTOP)
    try:
        t.join(10)
        # Redis ran A's reserve and B's; A's late reply gave the order back
        ok, _ = wait_for(lambda: held("claim2") == (0, 5) and
                         int(redis.cmd("HLEN", "{sale:claim2}:idem")) == 0, 5)
        check(ok, "A gave the order back: %r" % (held("claim2"),))
    finally:
        b.proc.send_signal(signal.SIGCONT)
    bt.join(15)
    rb = res.get("r")
    check(rb is not None, "B answered")
    eq((rb.status, (rb.json or {}).get("error")), (503, "unavailable"),
       "B does not answer 202 for an order given back: %r" % rb)
    eq(held("claim2"), (0, 5), "nothing held")
    eq(spool_orders(b, "claim2"), [], "B's spool holds no order of the sale")
    r = b.buy("claim2", "bob", key="k-claim2")
    eq(r.status, 202, "the next retry buys anew: %r" % r)
    check(r.headers.get("idempotent-replayed") != "true", "a new order, not a replay")
    eq(held("claim2"), (1, 4), "exactly one order held")
finally:
    for g in (a, b):
        if g.proc:
            try:
                g.proc.send_signal(signal.SIGCONT)
            except OSError:
                pass
        g.cleanup()
    redis.cleanup()
finish()
