"""A slow Kafka broker (the embedded one answering every request 1.5 s late:
PUT /admin/v1/debug/broker {"rtt_ms":1500}), loopback only.

While it is slow, buys are still answered at once (the spool decouples the
answer from Kafka): every buy 202, none slower than a second; the relay's
unreleased records show the backlog. Once the broker is fast again, with no
restart, every 202 reaches the database exactly once and its status says
settled; no oversell (accepted units = the 202s).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import FAILS, Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")

g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0",
            "--enable-debug-routes")
s = None
try:
    g.start()
    g.put_sale("s1", stock=100000, per_user_limit=5)
    s = fgq.Settle(g.data_dir, tmp=os.path.join(g.tmp, "st")).start()
    r = g.buy("s1", "warm")
    eq(r.status, 202, "warm-up buy")
    acc = [r.json["order_id"]]
    check(fgq.wait_until(lambda: g.order(acc[0]).json.get("status") == "settled", 20),
          "warm-up order settled (the consumer group joined)")
    r = g.admin("PUT", "/admin/v1/debug/broker", body={"rtt_ms": 1500})
    eq((r.status, r.json), (200, {"broker": "up", "rtt_ms": 1500}), "broker made slow")
    eq(g.admin("PUT", "/admin/v1/debug/broker", body={"rtt_ms": -1}).status, 400, "bad rtt refused")
    lat = []
    for i in range(150):
        t = time.monotonic()
        r = g.buy("s1", "slow-%d" % i)
        lat.append(time.monotonic() - t)
        eq(r.status, 202, "buy %d while the broker is slow" % i)
        if r.status == 202:
            acc.append(r.json["order_id"])
    lat.sort()
    st = g.admin("GET", "/admin/v1/stats").json
    print("slow broker: %d buys, p50 %.1f ms, max %.1f ms; relay unreleased %d" %
          (len(lat), lat[len(lat) // 2] * 1e3, lat[-1] * 1e3, st["relay"]["unreleased_records"]))
    check(lat[-1] < 1.0, "answers do not wait for the slow broker (max %.0f ms)" % (lat[-1] * 1e3))
    check(st["relay"]["unreleased_records"] > 0, "the relay's backlog shows in the stats")
    r = g.admin("PUT", "/admin/v1/debug/broker", body={"rtt_ms": 0})
    eq(r.status, 200, "broker fast again")
    ok = fgq.wait_until(lambda: set(fgq.statuses(g, acc).values()) == {"settled"}, 60, step=0.5)
    check(ok, "every 202 settled once the broker is fast again, no restart")
    ids = [row[0] for row in fgq.sqlite_query(s.db_path, "SELECT order_id FROM orders")]
    eq(sorted(ids), sorted(acc), "the database holds every 202 exactly once, nothing else")
    eq(g.admin("GET", "/admin/v1/sales/s1").json["accepted_units"], len(acc),
       "no oversell: accepted units = 202s")
    if FAILS:
        print(g.logs()[-3000:], file=sys.stderr)
finally:
    if s:
        s.cleanup()
    g.cleanup()
finish()
