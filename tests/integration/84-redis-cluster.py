"""Redis Cluster: a real 3-master + 3-replica cluster of redis-server processes
(127.0.0.1, free ports, one temp dir each, stopped by PID), three flashgate
processes on it through a seed list (redis-cluster://a,b), and a crowd
buying a sale whose slot lives on one master.

Checks: the fleet works on the cluster (3 members, distinct node ids); the
sale sells exactly its stock across the three gateways; mid-sale, a
`CLUSTER FAILOVER` on the replica of the sale's master moves the slot (the
old master answers MOVED) and the gateways carry on without a restart (202s
after the failover); no user twice; every 202 has its order in the new
master and there is no order without a 202; stock 0 = total - units; each
gateway's spool holds exactly its 202 order ids; every gateway's admin view
agrees. Then an admin restock and a cancel go to the new master.

Then a second sale, and a kill -9 of the master of its slot mid-sale
(cluster-node-timeout 1 s): its replica is promoted by the cluster, the
gateways re-read the map and carry on; the same checks hold on the promoted
replica. The gateways run with wait_replicas=1, so a reserve is answered
only once the replica has it (Redis replication is asynchronous: without
WAIT a master crash can lose reserves it already acknowledged).

What it relies on: a MOVED or ASK reply means the script did not run, so the
gateway resends a reserve on the right master without taking units twice (a
TRYAGAIN or CLUSTERDOWN did not run either: that buyer gets 503 and retries); a reserve whose connection died after it was
sent is answered 503 and released on whichever master owns the sale by then
(the release is exactly-once per order id).
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary  # noqa: E402
from fleet import (NOLIMITS, Cluster, Crowd, need_redis, rcmd, spool_orders,  # noqa: E402
                   start_fleet, stats, wait_for)

need_binary("flashgate")
need_binary("flashgate-spool")
need_redis()

STOCK = 1500
USERS = 6000
STOCK2 = 1000
USERS2 = 4000
t_start = time.time()
cluster = Cluster()
gws = []
try:
    seeds = ("redis-cluster://127.0.0.1:%d,127.0.0.1:%d?wait_replicas=1" %
             tuple(cluster.ports[:2]))
    gws = start_fleet(seeds, 3, NOLIMITS)
    ok, _ = wait_for(lambda: all(stats(g)["fleet"]["members"] == 3 for g in gws), 5)
    check(ok, "the fleet works on the cluster: 3 members (%r)" %
          [stats(g).get("fleet") for g in gws])
    nodes = [stats(g)["fleet"]["node_id"] for g in gws]
    eq(len(set(nodes)), 3, "claimed node ids are distinct (%r)" % nodes)

    gws[0].put_sale("c1", stock=STOCK, per_user_limit=1)
    ok, _ = wait_for(lambda: all(g.get("/v1/sales/c1").status == 200 for g in gws), 3)
    check(ok, "the sale is known on every gateway")

    any_port = cluster.ports[0]
    slot = rcmd(any_port, "CLUSTER", "KEYSLOT", "{sale:c1}:meta")
    old_master = cluster.master_of(slot, any_port)
    replica = cluster.replica_of(old_master, any_port)
    check(old_master is not None and replica is not None,
          "the sale's slot %d has a master (%r) and a replica (%r)" % (slot, old_master, replica))

    users = ["u%05d" % i for i in range(USERS)]
    rnd = random.Random(84)
    crowd_list = users + rnd.sample(users, 500)
    rnd.shuffle(crowd_list)
    # a 503 (reserve timed out, or the cluster between masters) is retried, as a browser would
    crowd = Crowd([g.port for g in gws], crowd_list, "c1", nthreads=18, deadline_s=30,
                  retry_codes=(503,)).run(wait=False)
    ok, _ = wait_for(lambda: len(crowd.accepted) >= STOCK // 4, 15, step=0.01)
    check(ok, "a quarter of the stock sold before the failover (%d)" % len(crowd.accepted))

    before_failover = len(crowd.accepted)
    eq(rcmd(replica, "CLUSTER", "FAILOVER"), "OK", "CLUSTER FAILOVER accepted by the replica")
    ok, waited = wait_for(lambda: cluster.master_of(slot, replica) == replica, 10, step=0.05)
    check(ok, "the replica took the slot over (%.1f s)" % waited)
    t_failover = time.time()
    print("failover after %d accepted; slot %d moved %d -> %d in %.2f s" %
          (before_failover, slot, old_master, replica, waited))

    crowd.join(40)
    print("crowd: %d requests, %r, transport errors %d" %
          (sum(crowd.counts.values()), crowd.counts, crowd.errors))
    after = len(crowd.accepted) - before_failover
    check(after > 0, "the gateways sold after the failover without a restart (%d)" % after)
    eq(crowd.errors, 0, "no transport errors")
    accepted = crowd.accepted
    eq(len(accepted), STOCK, "exactly the stock accepted across the fleet")
    acc_users = [u for _, _, u in accepted]
    eq(len(set(acc_users)), len(acc_users), "no user accepted twice")
    per_gw = {g.port: sum(1 for p, _, _ in accepted if p == g.port) for g in gws}
    print("accepted per gateway:", per_gw)
    bad = set(k for k in crowd.counts if k[0] not in (202, 410, 409, 503))
    eq(bad, set(), "only 202 / 409 / 410 / 503 answers")

    # the old master is a replica now: it redirects
    try:
        rcmd(old_master, "HGET", "{sale:c1}:meta", "left")
        check(False, "the old master still serves the slot")
    except RuntimeError as e:
        check(str(e).startswith("redis error: MOVED %d " % slot), "old master answers MOVED (%s)" % e)

    # the new master is the truth: every 202 has its order, no order lacks a 202
    want = set(o for _, o, _ in accepted)

    def redis_orders():
        return set(rcmd(replica, "HKEYS", "{sale:c1}:orders"))
    ok, _ = wait_for(lambda: redis_orders() == want, 5)
    got = redis_orders()
    check(ok, "redis orders == the 202 order ids (missing %d, extra %d)" %
          (len(want - got), len(got - want)))
    meta = rcmd(replica, "HGETALL", "{sale:c1}:meta")
    meta = dict(zip(meta[::2], meta[1::2]))
    # units (total - left) and orders (HLEN) are derived, not counted: inventory/inv_redis_lua.h
    eq((meta.get("left"), meta.get("total"), rcmd(replica, "HLEN", "{sale:c1}:orders")),
       ("0", str(STOCK), STOCK), "redis: stock 0 of the total, orders = stock")
    eq(set(rcmd(replica, "HVALS", "{sale:c1}:users")), {"1"}, "redis: no user holds 2 units")
    for g in gws:
        ok, _ = wait_for(lambda: g.admin("GET", "/admin/v1/sales/c1").json["stock_left"] == 0, 2)
        s = g.admin("GET", "/admin/v1/sales/c1").json
        eq((s["stock_left"], s["accepted_units"], s["state"]), (0, STOCK, "sold_out"),
           "admin view on gateway %d agrees with the new master" % g.port)
    for g in gws:
        ids = g.spool_ids()
        eq(len(ids), len(set(ids)), "no duplicate spool record on %d" % g.port)
        eq(set(ids), set(o for p, o, _ in accepted if p == g.port),
           "spool of %d == its 202 order ids" % g.port)

    # admin writes reach the new master through the same map
    r = gws[1].admin("POST", "/admin/v1/sales/c1/restock", body={"add": 2})
    eq(r.status, 200, "restock after the failover: %r" % r)
    eq(rcmd(replica, "HGET", "{sale:c1}:meta", "left"), "2", "restock landed on the new master")
    port, oid, user = accepted[-1]
    owner = next(g for g in gws if g.port == port)
    r = owner.admin("POST", "/admin/v1/orders/%s/cancel" % oid, body={"reason": "test"})
    check(r.status in (200, 202), "cancel answered %r" % r)
    eq(rcmd(replica, "HGET", "{sale:c1}:meta", "left"), "3", "the cancelled unit is back")
    # gws[2] learns of the restock from the fleet's announcement (or its 1 s re-read)
    ok, _ = wait_for(lambda: gws[2].buy("c1", "after-failover").status == 202, 3, step=0.1)
    check(ok, "a buy on a third gateway after all that")
    for g in gws:
        check("redis cluster slot map changed" in g.logs(200000),
              "gateway %d re-read the slot map after the failover" % g.port)

    # phase 2: kill -9 of the master that serves the second sale, mid-sale
    gws[0].put_sale("c2", stock=STOCK2, per_user_limit=1)
    ok, _ = wait_for(lambda: all(g.get("/v1/sales/c2").status == 200 for g in gws), 3)
    check(ok, "the second sale is known on every gateway")
    slot2 = rcmd(replica, "CLUSTER", "KEYSLOT", "{sale:c2}:meta")
    m2 = cluster.master_of(slot2, replica)
    r2 = cluster.replica_of(m2, replica)
    check(m2 is not None and r2 is not None, "slot %d: master %r, replica %r" % (slot2, m2, r2))
    users2 = ["v%05d" % i for i in range(USERS2)]
    rnd.shuffle(users2)
    crowd2 = Crowd([g.port for g in gws], users2, "c2", nthreads=18, deadline_s=30,
                   retry_codes=(503,)).run(wait=False)
    ok, _ = wait_for(lambda: len(crowd2.accepted) >= STOCK2 // 4, 15, step=0.01)
    check(ok, "a quarter of the second sale sold before the kill (%d)" % len(crowd2.accepted))
    before_kill = len(crowd2.accepted)
    t_kill = time.time()
    cluster.kill9(m2)
    ok, waited = wait_for(lambda: cluster.master_of(slot2, r2) == r2, 15, step=0.1)
    check(ok, "the cluster promoted the replica (%.1f s)" % waited)
    print("kill -9 of %d after %d accepted; %d promoted in %.2f s" % (m2, before_kill, r2, waited))
    # With wait_replicas=1 the promoted master, alone, answers no reserve (503):
    # the operator brings the dead node back and it rejoins as its replica.
    cluster.restart(m2)
    ok, waited = wait_for(lambda: cluster.nodes(r2).get(m2, ("",))[0] == "replica" and
                          "master_link_status:up" in rcmd(m2, "INFO", "replication"), 15,
                          step=0.1)
    check(ok, "the killed node rejoined as the replica (%.1f s)" % waited)
    crowd2.join(40)
    print("crowd 2: %d requests, %r, transport errors %d" %
          (sum(crowd2.counts.values()), crowd2.counts, crowd2.errors))
    acc2 = crowd2.accepted
    check(len(acc2) > before_kill, "sold after the kill without a restart (%d)" %
          (len(acc2) - before_kill))
    eq(len(acc2), STOCK2, "exactly the second stock accepted")
    eq(len(set(u for _, _, u in acc2)), len(acc2), "no user accepted twice")
    want2 = set(o for _, o, _ in acc2)

    def orders2():
        return set(rcmd(r2, "HKEYS", "{sale:c2}:orders"))
    ok, _ = wait_for(lambda: orders2() == want2, 5)
    got2 = orders2()
    check(ok, "after the kill: redis orders == the 202 order ids (missing %d, extra %d)" %
          (len(want2 - got2), len(got2 - want2)))
    meta = rcmd(r2, "HGETALL", "{sale:c2}:meta")
    meta = dict(zip(meta[::2], meta[1::2]))
    eq((meta.get("left"), meta.get("total"), rcmd(r2, "HLEN", "{sale:c2}:orders")),
       ("0", str(STOCK2), STOCK2), "promoted replica: stock 0 of the total, orders = stock")
    for g in gws:
        ids = spool_orders(g, "c2")
        eq(set(ids), set(o for p, o, _ in acc2 if p == g.port),
           "second sale: spool of %d == its 202 order ids" % g.port)
    print("wall time %.1f s (failover at +%.1f s, kill at +%.1f s)" %
          (time.time() - t_start, t_failover - t_start, t_kill - t_start))
finally:
    for g in gws:
        g.stop()
        g.cleanup()
    cluster.cleanup()
finish()
