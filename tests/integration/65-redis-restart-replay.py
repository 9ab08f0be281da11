"""A keyed retry after a gateway died between its Redis reserve and its spool
write, sent to the same gateway restarted (same node id: the node id is the
same on every start): the order Redis holds is spooled and its 202 replayed.

Redis is left as such a death leaves it: the order and its idempotency key
recorded by the reserve script, the units taken, and no spool anywhere holding
the order (written here directly, with an order id minted a minute before the
gateway started). Before, the gateway took the order for one of its own still
in flight ("retry") and answered 503 to every retry for ever.
An own order minted since the start and not yet durable is still answered
"retry" (integration.63-redis-late-reserve)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis  # noqa: E402

need_binary("flashgate")

NODE = 321
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
EPOCH_MS = 1704067200000  # common/cm_id.h: 2024-01-01T00:00:00Z


def order_id(ms, node, seq):
    """common/cm_id.c: 42 bits of ms since the epoch, 10 of node, 12 of sequence,
    13 Crockford base32 characters."""
    v = ((ms - EPOCH_MS) << 22) | (node << 12) | seq
    out = ""
    for _ in range(13):
        out = CROCKFORD[v & 31] + out
        v >>= 5
    return out


redis = Redis(aof=False).start()
g = None
try:
    g = Gateway("--inventory", redis.url, "--kafka-brokers", "none", "--node-id", str(NODE),
                "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0").start()
    g.put_sale("r65", stock=10, per_user_limit=1)
    # What the reserve script leaves (inventory/inv_redis_lua.h) for a reserve of
    # a previous incarnation of this node that never reached its spool.
    oid = order_id(int(time.time() * 1000) - 60000, NODE, 7)
    user, key = "u65", "k65-retry"
    redis.cmd("HINCRBY", "{sale:r65}:meta", "left", "-1")
    redis.cmd("HSET", "{sale:r65}:users", user, "1")
    redis.cmd("HSET", "{sale:r65}:orders", oid, "%s 1 %s" % (user, key))
    redis.cmd("HSET", "{sale:r65}:idem", "%s\n%s" % (user, key), "%s 1" % oid)

    r = g.buy("r65", user, key=key)
    eq(r.status, 202, "the keyed retry is answered 202: %r" % r)
    eq((r.json or {}).get("order_id"), oid, "with the order Redis holds")
    eq(r.headers.get("idempotent-replayed"), "true", "marked as a replay")
    check(oid in g.spool_ids(), "the order is in this gateway's spool now")
    left = int(redis.cmd("HGET", "{sale:r65}:meta", "left"))
    eq(left, 9, "no second unit taken")
    again = g.buy("r65", user, key="k65-other")
    eq(again.status, 409, "the user is at the per-user limit (1): %r" % again)
finally:
    if g:
        g.cleanup()
    redis.cleanup()
finish()
