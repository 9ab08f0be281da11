"""Settle workers scale across partitions: two flashgate-settle processes in one
consumer group, one PostgreSQL database, one hot sale (a flash sale is one
sale), through the embedded broker (4 partitions).

Orders are keyed by order id, so one sale's orders spread over every
partition and both workers settle a share (each one's own "settled=" count
at exit is > 0). Every 202 is in the database exactly once (the primary key
holds even across a rebalance), and nothing else is.
Before orders were keyed by order id (they were keyed by sale id), a sale
sat on one partition and one worker settled all of it: this test failed.
Then a gateway pointed at that broker by address (as at a real cluster) logs
the orders topic's layout and warns about its single replica.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")

STOCK = 800
ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]

pg = fgq.Postgres()
g = Gateway(*ARGS)
workers = []
try:
    pg.start()
    g.start()
    g.put_sale("hot", stock=STOCK, per_user_limit=1)
    for i in range(2):
        workers.append(fgq.Settle(g.data_dir, "--batch", "50", db=pg.url,
                                  tmp=os.path.join(g.tmp, "st%d" % i)).start())
    # Both members joined: a few warm-up orders settle.
    warm = []
    for i in range(8):
        r = g.buy("hot", "warm%d" % i)
        eq(r.status, 202, "warm-up buy")
        warm.append(r.json["order_id"])
    ok = fgq.wait_until(lambda: set(fgq.statuses(g, warm).values()) == {"settled"}, 30)
    check(ok, "warm-up orders settled (group joined) within 30 s")
    time.sleep(4)   # let the second member's join settle the partition assignment
    acc, counts = fgq.burst(g.port, "hot", ["u%05d" % i for i in range(STOCK + 200)], clients=4)
    acc += warm
    print("burst: %r" % counts)
    eq(len(acc), STOCK, "202 answers == stock")
    ok = fgq.wait_until(lambda: pg.count() >= STOCK, 60, step=0.3)
    check(ok, "orders table reaches %d rows (has %d)" % (STOCK, pg.count()))
    time.sleep(0.5)
    ids = [r[0] for r in pg.query("SELECT order_id FROM orders")]
    eq(len(ids), len(set(ids)), "no duplicate rows")
    eq(set(ids), set(acc), "the rows are exactly the 202s")
    shares = []
    for w in workers:
        eq(w.stop(), 0, "settle exits 0 on SIGTERM")
        m = re.findall(r"msg=stopped .*?settled=(\d+)", w.logs(200000))
        shares.append(int(m[-1]) if m else -1)
    print("settled per worker: %r" % shares)
    check(all(n > 0 for n in shares), "both workers settled a share of one sale (%r)" % shares)
    eq(sum(shares), STOCK, "the shares add up to the orders (each settled once)")

    # The layout check against a "real" cluster: a second gateway pointed at the
    # first one's broker by address (the mock speaks the Kafka protocol; one
    # replica per partition) says what is wrong with the topic for production.
    g2 = Gateway("--kafka-brokers", fgq.bootstrap(g.data_dir), *ARGS)
    try:
        g2.start()
        ok = fgq.wait_until(lambda: "orders topic layout" in g2.logs(200000), 15)
        check(ok, "the gateway logs the orders topic's layout")
        log = g2.logs(200000)
        check("partitions=4 replicas=1 isr=1" in log, "layout: 4 partitions, 1 replica")
        check("fewer than 3 replicas" in log, "a warning for fewer than 3 replicas")
        check("one partition" not in log, "no warning about partitions (there are 4)")
    finally:
        g2.cleanup()
finally:
    for w in workers:
        w.cleanup()
    g.cleanup()
    pg.stop()
finish()
