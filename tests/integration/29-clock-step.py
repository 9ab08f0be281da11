"""The wall clock stepped backwards (through the test seam: PUT
/admin/v1/debug/clock, and debug.wall_offset_ms at start, from its environment
variable FLASHGATE_DEBUG_WALL_OFFSET_MS; both need the debug routes on; the
system clock itself cannot be stepped safely on a shared machine).

Buys before the step, one hour back while running, and after a kill -9 and a
restart with the clock still an hour back: every order id is unique and the
ids stay in order (they are time-ordered), no oversell (accepted units = the
202s), every 202 is in the spool, and nothing needs more than the restart the
test itself makes.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none",
        "--enable-debug-routes"]
HOUR_MS = 3600 * 1000


def burst(g, tag, n):
    ids = []
    for i in range(n):
        r = g.buy("s1", "%s-%d" % (tag, i))
        eq(r.status, 202, "buy %s-%d accepted" % (tag, i))
        if r.status == 202:
            ids.append(r.json["order_id"])
    return ids


g = Gateway(*ARGS)
try:
    g.start()
    g.put_sale("s1", stock=100000, per_user_limit=10)
    before = burst(g, "a", 40)
    r = g.admin("PUT", "/admin/v1/debug/clock", body={"wall_offset_ms": -HOUR_MS})
    eq((r.status, r.json), (200, {"wall_offset_ms": -HOUR_MS}), "clock stepped back one hour")
    stepped = burst(g, "b", 40)
    eq(g.admin("PUT", "/admin/v1/debug/clock", body={"wall_offset_ms": "x"}).status, 400,
       "a bad offset is refused")
    g.kill9()
    g.env["FLASHGATE_DEBUG_WALL_OFFSET_MS"] = str(-HOUR_MS)
    g.start()
    after = burst(g, "c", 40)
    allids = before + stepped + after
    eq(len(set(allids)), len(allids), "every order id unique across the step and the restart")
    eq(allids, sorted(allids), "order ids stay in order (time-ordered) though the clock went back")
    sale = g.admin("GET", "/admin/v1/sales/s1").json
    eq(sale["accepted_units"], len(allids), "no oversell: accepted units = 202s")
    g.stop()
    spooled = g.spool_ids()
    eq(sorted(set(spooled) & set(allids)), sorted(allids), "every 202 is in the spool")
    eq(len(spooled), len(set(spooled)), "no order twice in the spool")
    print("clock step: %d orders before, %d an hour back, %d after a restart an hour back" %
          (len(before), len(stepped), len(after)))
finally:
    g.cleanup()
finish()
