"""The door (overload.accept_pause): a gateway capped to 5% of one core
(cgroup v1 cpu quota) is pushed well past what it can serve by flashgate-load's
internet crowd (new connections when none is idle, people who give up after
2 s). With levels automatic:
  - the worker's door shuts (it stops listening, so new connections are
    refused by the kernel instead of queuing for seconds) and the stats count
    it, with the connections reset and the keep-alive connections closed;
  - the crowd sees refused connections (errors), not only slow answers;
  - /healthz and /readyz on the admin listener (what a load balancer should
    probe) and the admin API answer throughout;
  - the stock is never oversold, and the gateway's count matches the stock;
  - afterwards every door is open and the public port answers again;
  - with the level pinned to 0 by an operator the door stays open under the
    same crowd (the operator's "off").
cgroups must be available (CI runs as root): their absence is a failure."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crowd import Cgroup, crowd_gateway, run_crowd  # noqa: E402
from fg import check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-load")

RATE = 4000            # arrivals/s: several times what the capped gateway serves (~1.5k/s)
LOAD_S = 3
STOCK = 300


def crowd(g, sale, tag):
    """Runs the crowd for LOAD_S while probing health and the admin API; returns what it saw."""
    seen = {"health": [], "admin": [], "shut_seen": 0}

    def watch():
        try:
            r = g.admin("GET", "/admin/v1/stats")
            seen["admin"].append(r.status)
            if r.status == 200:
                seen["shut_seen"] = max(seen["shut_seen"],
                                        r.json["overload"]["accept_paused_workers"])
        except OSError as e:
            seen["admin"].append(repr(e))
        for path_ in ("/healthz", "/readyz"):
            try:
                seen["health"].append(request(g.admin_port, "GET", path_, timeout=10).status)
            except OSError as e:
                seen["health"].append(repr(e))

    seen["codes"] = run_crowd(g, sale, "door-" + tag, 791, LOAD_S, RATE, watch)
    return seen


g = crowd_gateway("--server-trusted-proxies", "127.0.0.1/32")
cg = None
try:
    g.start()
    # the door needs the admin listener's own /healthz and /readyz: the probe a
    # load balancer should use (the public port refuses while a door is shut)
    eq(request(g.admin_port, "GET", "/healthz").status, 200, "GET /healthz on the admin listener")
    r = request(g.admin_port, "GET", "/readyz")
    eq(r.status, 200, "GET /readyz on the admin listener")
    eq((r.json or {}).get("status"), "ready", "readyz says ready")
    cg = Cgroup("flashgate-it79door-%d" % os.getpid())
    cg.add(g.proc.pid)
    g.put_sale("s79d", stock=STOCK, per_user_limit=1)

    seen = crowd(g, "s79d", "auto")
    check(len(seen["admin"]) >= 3 and all(s == 200 for s in seen["admin"]),
          "the admin API answered during the overload: %r" % seen["admin"])
    check(len(seen["health"]) >= 6 and all(s == 200 for s in seen["health"]),
          "/healthz and /readyz on the admin listener answered: %r" % seen["health"])
    check(seen["codes"].get("error", 0) > 0,
          "the crowd saw refused or reset connections: %r" % seen["codes"])

    o = {}
    deadline = time.time() + 10
    while time.time() < deadline:
        o = g.admin("GET", "/admin/v1/stats").json["overload"]
        if o["accept_paused_workers"] == 0:
            break
        time.sleep(0.1)
    check(o.get("accept_pauses", 0) >= 1, "the door shut (accept_pauses counted): %r" % o)
    check(isinstance(o.get("accept_reset"), int) and
          isinstance(o.get("accept_closed_keepalive"), int) and
          isinstance(o.get("shed_late"), int), "door figures in the stats: %r" % o)
    lc = o.get("late_checks") or {}
    print("door: shut %d, reset %d, keep-alive closed %d, too late (503 queue_time) %d; "
          "too-late checks by the loop's bound %s, by TCP_INFO %s" % (
              o.get("accept_pauses", 0), o.get("accept_reset", 0),
              o.get("accept_closed_keepalive", 0), o.get("shed_late", 0),
              lc.get("loop"), lc.get("kernel")))
    # While shut, the kept connections' requests are checked from the loop's
    # bound on their wait, without a getsockopt each (gw_h1_read_after_ns).
    check(isinstance(lc.get("loop"), int) and isinstance(lc.get("kernel"), int) and
          lc["loop"] > 0, "too-late checks answered by the loop's bound: %r" % lc)
    eq(o.get("accept_paused_workers"), 0, "every door open again after the crowd")
    eq(request(g.port, "GET", "/healthz", timeout=5).status, 200, "public /healthz after the crowd")

    sale = g.admin("GET", "/admin/v1/sales/s79d").json
    left = sale.get("stock_left", sale.get("remaining"))
    acc = int(seen["codes"].get("202", 0))  # qty 1: one unit per 202
    # The gateway's own count: a 202 written to a client that gave up (2 s) or
    # whose connection was reset meanwhile is accepted, but never seen by the crowd.
    units = g.admin("GET", "/admin/v1/stats").json.get("accepted_units")
    print("%s: 202 seen by the crowd %d, units the gateway accepted %r, stock left %r" % (
        "door-auto", acc, units, left))
    check(isinstance(units, int) and units <= STOCK,
          "never oversold: %r units accepted of %d" % (units, STOCK))
    check(isinstance(left, int), "stock_left reported: %r" % sale)
    if isinstance(left, int) and isinstance(units, int):
        eq(STOCK - left, units, "units the gateway accepted == what the stock lost")
        check(acc <= units, "no 202 seen that the gateway did not count (%d > %d)" % (acc, units))

    # An operator's level 0 turns the door off: the same crowd queues instead.
    shuts = o["accept_pauses"]
    eq(g.admin("PUT", "/admin/v1/degrade", {"level": 0}).status, 200, "pin level 0")
    g.put_sale("s79e", stock=STOCK, per_user_limit=1)
    crowd(g, "s79e", "pinned0")
    o = g.admin("GET", "/admin/v1/stats").json["overload"]
    eq(o.get("accept_pauses"), shuts, "level pinned to 0: the door did not shut")
finally:
    g.cleanup()
    if cg:
        cg.remove()
finish()
