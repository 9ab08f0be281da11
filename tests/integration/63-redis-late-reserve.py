"""A Redis reserve that answers after its timeout must not turn into a 202
for an order that is then given back: the client's keyed retry gets 503
"in progress" until the late reserve is settled, then exactly one order."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis, spool_orders  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-spool")
redis = Redis(aof=False, extra=["--enable-debug-command", "local"]).start()
g = Gateway("--inventory", redis.url, "--inventory-redis-timeout", "300ms",
            "--kafka-brokers", "none", "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0").start()
try:
    g.put_sale("late", stock=5, per_user_limit=1)
    t = threading.Thread(target=lambda: redis.cmd("DEBUG", "SLEEP", "0.6", timeout=5))
    t.start()
    time.sleep(0.05)
    a = g.buy("late", "alice", key="k-late")
    eq((a.status, a.json.get("error")), (503, "unavailable"), "the slow reserve times out")
    time.sleep(0.05)
    b = g.buy("late", "alice", key="k-late")
    check(b.status != 202 or g.order(b.json["order_id"]).status == 200,
          "a keyed retry never gets a 202 for an order that does not exist: %r" % b)
    t.join(10)
    time.sleep(0.5)  # the late reply arrives and is given back
    order_id = None
    for _ in range(20):
        c = g.buy("late", "alice", key="k-late")
        if c.status == 202:
            order_id = c.json["order_id"]
            break
        time.sleep(0.2)
    check(order_id is not None, "a later keyed retry is accepted")
    eq(g.order(order_id).status, 200, "the accepted order exists")
    d = g.buy("late", "alice", key="k-late")
    eq((d.status, d.json.get("order_id")), (202, order_id), "and stays the answer for the key")
    s = g.admin("GET", "/admin/v1/sales/late").json
    eq((s["accepted_orders"], s["stock_left"]), (1, 4), "exactly one order holds stock")
    eq(spool_orders(g, "late"), [order_id], "the spool holds exactly it")
finally:
    g.cleanup()
    redis.cleanup()
finish()
