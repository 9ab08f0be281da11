"""Redis Cluster resharding: a real 3-master cluster of redis-server processes
(127.0.0.1, free ports, one temp dir each, stopped by PID), one gateway on it,
sales A and C on one master, B on another.

1. Sale A's slot is put in migration by hand (CLUSTER SETSLOT IMPORTING on
   the target, MIGRATING on the source). Redis 7.0 then refuses A's reserve
   script with TRYAGAIN on both nodes (a multi-key command whose keys are not
   all there, and a sale's users/orders/idem hashes need not exist): A's
   buyers get 503, nothing is sold. Sale B, on another, healthy master, must
   sell on as before: the circuit breaker is per master, so A's refusals do
   not shut B out (it was one breaker for the whole cluster, and B's buyers
   got ~50% 503 "unavailable" while A's slot moved).
2. The keys are MIGRATEd (the old master answers ASK, the target TRYAGAIN:
   still nothing sold), then the slot is given to the target (SETSLOT NODE
   on every master): the gateway follows the MOVED, loads the scripts on
   the new master (NOSCRIPT -> EVAL) and A sells out exactly: every 202 has
   its order on the new master, no order lacks a 202, stock 0, nobody twice.
3. Sale C, on A's old master, sells again: the probe that an open breaker
   lets through and that is redirected (ASK, MOVED) settles that breaker
   (it stayed half-open for good, and C answered 503 ever after).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary  # noqa: E402
from fleet import NOLIMITS, Cluster, Crowd, need_redis, rcmd, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

STOCK_A = 300
cluster = Cluster(n=3, replicas=0)
gws = []
try:
    ports = cluster.ports
    gws = start_fleet("redis-cluster://127.0.0.1:%d" % ports[0], 1, NOLIMITS)
    g = gws[0]

    def slot(sale):
        return rcmd(ports[0], "CLUSTER", "KEYSLOT", "{sale:%s}:meta" % sale)

    a = "ra"
    src = cluster.master_of(slot(a), ports[0])
    b = next("rb%d" % i for i in range(1000)
             if cluster.master_of(slot("rb%d" % i), ports[0]) != src)
    dst = next(p for p in ports if p not in (src, cluster.master_of(slot(b), ports[0])))
    # C: another slot on A's master (it shares that master's breaker)
    c = next("rc%d" % i for i in range(1000)
             if cluster.master_of(slot("rc%d" % i), ports[0]) == src and slot("rc%d" % i) != slot(a))
    print("sale %s slot %d on %d (moves to %d); sale %s on %d" %
          (a, slot(a), src, dst, b, cluster.master_of(slot(b), ports[0])))
    g.put_sale(a, stock=STOCK_A, per_user_limit=1)
    g.put_sale(b, stock=100000, per_user_limit=1)
    g.put_sale(c, stock=100000, per_user_limit=1)
    ids = {p: rcmd(p, "CLUSTER", "MYID") for p in ports}

    # 1. A's slot in migration: A is refused (TRYAGAIN), B sells on
    eq(rcmd(dst, "CLUSTER", "SETSLOT", slot(a), "IMPORTING", ids[src]), "OK", "IMPORTING")
    eq(rcmd(src, "CLUSTER", "SETSLOT", slot(a), "MIGRATING", ids[dst]), "OK", "MIGRATING")
    ca = Crowd([g.port], ["a%05d" % i for i in range(100000)], a, nthreads=3,
               deadline_s=2.5).run(wait=False)
    cb = Crowd([g.port], ["b%05d" % i for i in range(100000)], b, nthreads=3,
               deadline_s=2.5).run(wait=False)
    ca.join(10)
    cb.join(10)
    print("during the migration: A %r, B %r" % (ca.counts, cb.counts))
    eq(len(ca.accepted), 0, "A sells nothing while its slot migrates (TRYAGAIN)")
    check(sum(ca.counts.values()) > 100, "A's buyers were answered (%d)" % sum(ca.counts.values()))
    nb = sum(cb.counts.values())
    check(nb > 100 and len(cb.accepted) > 100, "B sold meanwhile (%d of %d)" %
          (len(cb.accepted), nb))
    unavailable_b = cb.counts.get((503, "unavailable"), 0)
    eq(unavailable_b, 0, "no 503 unavailable for B, on a healthy master (%d of %d)" %
       (unavailable_b, nb))

    # 2. the keys move and the slot is the target's: A sells out there, exactly
    keys = rcmd(src, "CLUSTER", "GETKEYSINSLOT", slot(a), 100)
    eq(rcmd(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys), "OK",
       "MIGRATE %r" % keys)
    # the keys are on the target, the slot still migrating: the old master
    # answers ASK, the target TRYAGAIN (A's idem hash does not exist)
    ca2 = Crowd([g.port], ["e%05d" % i for i in range(100000)], a, nthreads=2,
                deadline_s=1.5).run(wait=False)
    ca2.join(10)
    print("keys moved, slot migrating: A %r" % ca2.counts)
    eq(len(ca2.accepted), 0, "A sells nothing while its slot migrates (ASK, then TRYAGAIN)")
    for p in ports:
        rcmd(p, "CLUSTER", "SETSLOT", slot(a), "NODE", ids[dst])
    ok, _ = wait_for(lambda: cluster.master_of(slot(a), src) == dst, 5)
    check(ok, "the slot is the target's")
    users = ["c%05d" % i for i in range(STOCK_A * 2)]
    cc = Crowd([g.port], users + users[:100], a, nthreads=6, deadline_s=15,
               retry_codes=(503,)).run(wait=False)
    cc.join(20)
    print("after the migration: A %r" % cc.counts)
    eq(len(cc.accepted), STOCK_A, "A sold exactly its stock on the new master")
    eq(len(set(u for _, _, u in cc.accepted)), STOCK_A, "nobody twice")
    want = set(o for _, o, _ in cc.accepted)
    got = set(rcmd(dst, "HKEYS", "{sale:%s}:orders" % a))
    eq((len(want - got), len(got - want)), (0, 0), "new master's orders == the 202s")
    eq(rcmd(dst, "HGET", "{sale:%s}:meta" % a, "left"), "0", "stock 0 on the new master")
    check("NOSCRIPT" not in g.logs(200000), "no NOSCRIPT error left unhandled")
    # The old master's breaker opened on A's TRYAGAINs; its probes then got
    # ASK and went on to the target. A redirect must settle the probe on the
    # node that answered it, or that breaker stays half-open for good and C,
    # still on the old master, never sells again.
    cc2 = Crowd([g.port], ["d%05d" % i for i in range(300)], c, nthreads=3,
                deadline_s=5, retry_codes=(503,)).run(wait=False)
    cc2.join(10)
    print("C after the migration: %r" % cc2.counts)
    eq(len(cc2.accepted), 300, "C, on the old master, sells after the handover")
finally:
    for g in gws:
        g.stop()
        g.cleanup()
    cluster.cleanup()
finish()
