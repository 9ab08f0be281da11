"""Connection abuse, bounded: 2,000 slow connections from 127.0.0.3 (half
dribbling a head that never ends, half a body at 2 bytes/s, reconnecting
when closed) against a gateway with lowered caps (500 connections per
worker, 2 workers), while a buyer on 127.0.0.1 buys on fresh connections.
Promises: every buyer request is answered (202); every slow connection is
closed within server.head_timeout (3 s) plus the sweep's slack; the guard's
counters show evictions, head timeouts and slow bodies. Then the per-address
cap: 300 connections from each of 127.0.0.3 and 127.0.0.4 with a cap of 200,
127.0.0.4 being a trusted proxy without a cap: exactly 100 are refused, all
from 127.0.0.3. The full-size case (20,000) is tests/fault/slow-conns-bench.sh."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
HERE = os.path.dirname(os.path.abspath(__file__))
SLOW = os.path.join(HERE, "..", "fault", "slowclients.py")
HEAD_TIMEOUT_S = 3.0
SLACK_S = 1.5  # sweep period (300 ms) + a loaded machine's scheduling


def slow(port, *args):
    return subprocess.Popen([sys.executable, SLOW, "--port", str(port)] + list(args),
                            stdout=subprocess.PIPE, text=True)


def conn_stats(g):
    r = g.admin("GET", "/admin/v1/stats")
    eq(r.status, 200, "stats")
    return r.json["connections"]


# --- 1. slow connections past the total cap, a buyer elsewhere ---
# overload.level=0 pinned: this checks the connection guard alone. On a shared
# 2-core machine the attackers' 4,000 reconnects/s keep the loops busy enough for
# the queuing-delay controller (gw_overload.c) to shed some buys with 503; that
# trade-off is measured by tests/fault/slow-conns-bench.sh, not asserted here.
g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
            "--set", "server.head_timeout=3s", "--set", "server.max_connections=500",
            "--set", "server.max_connections_per_ip=1500", "--set", "overload.level=0").start()
try:
    g.put_sale("s1", stock=100000, per_user_limit=1000)
    ready = os.path.join(g.tmp, "slow.ready")
    p = slow(g.port, "--count", "2000", "--interval", "0.5", "--duration", "9", "--reconnect",
             "--mode", "mixed", "--ready-file", ready)
    deadline = time.time() + 30
    while not os.path.exists(ready) and time.time() < deadline:
        time.sleep(0.05)
    check(os.path.exists(ready), "slow clients connected")
    lat, statuses = [], {}
    i = 0
    t_end = time.time() + 5
    while time.time() < t_end:
        t = time.monotonic()
        try:
            r = request(g.port, "POST", "/v1/sales/s1/orders", body={"user_id": "buyer-%d" % i},
                        timeout=5)
            statuses[r.status] = statuses.get(r.status, 0) + 1
        except OSError as e:
            statuses[str(e)] = statuses.get(str(e), 0) + 1
        lat.append(time.monotonic() - t)
        i += 1
        time.sleep(0.02)
    out, _ = p.communicate(timeout=60)
    res = json.loads(out)
    st = conn_stats(g)
    lat.sort()
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
    print("buyer: %d requests %s p50 %.1f ms p99 %.1f ms max %.1f ms" %
          (len(lat), statuses, lat[len(lat) // 2] * 1e3, p99 * 1e3, lat[-1] * 1e3))
    print("slow clients:", res)
    print("guard:", st)
    eq(statuses, {202: len(lat)}, "every buyer request answered 202 while 2,000 slow connections press")
    # No timed assertion (a shared machine's run queue decides latency here): the
    # buyer's p99 is printed above; the 50 ms target is measured side by side
    # with a control run by tests/fault/slow-conns-bench.sh.
    check(res["closed_by_server"] > 2000, "the slow connections are closed (and reopened)")
    check(res["max_life_s"] <= HEAD_TIMEOUT_S + SLACK_S,
          "no slow connection lived past the head deadline: max %.2f s" % res["max_life_s"])
    check(res["oldest_open_s"] is None or res["oldest_open_s"] <= HEAD_TIMEOUT_S + SLACK_S,
          "none still open past the deadline: %s s" % res["oldest_open_s"])
    check(st["evicted"] > 0, "at the total cap the oldest incomplete connections were evicted")
    check(st["slow_bodies"] > 0, "bodies under the minimum rate were closed")
    eq(st["refused_full"], 0, "nobody was refused for a full server")
finally:
    g.cleanup()

# --- 2. the per-address cap, a trusted proxy exempt ---
g = Gateway("--set", "server.max_connections_per_ip=200",
            "--set", "server.trusted_proxies=127.0.0.4", "--set", "server.head_timeout=3s").start()
try:
    procs = [slow(g.port, "--source", src, "--count", "300", "--interval", "0.5", "--duration",
                  "5.5", "--mode", "head") for src in ("127.0.0.3", "127.0.0.4")]
    res = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    st = conn_stats(g)
    print("per-address:", res, st)
    eq(res[0]["refused_at_once"], 100, "127.0.0.3 gets 200 connections, the rest refused")
    eq(res[1]["refused_at_once"], 0, "the trusted proxy 127.0.0.4 is not capped")
    eq(st["refused_per_ip"], 100, "refusals counted")
    # Without reconnects nothing is evicted: every head that dribbles is cut at its deadline.
    eq((res[0]["closed_by_server"], res[1]["closed_by_server"]), (200, 300),
       "every slow head was closed by the server")
    check(max(r["max_life_s"] for r in res) <= HEAD_TIMEOUT_S + SLACK_S,
          "within the head deadline: %s s" % [r["max_life_s"] for r in res])
    check(min(r["max_life_s"] for r in res) >= HEAD_TIMEOUT_S - 0.1,
          "and not before it (bytes kept arriving)")
    eq(st["head_timeouts"], 500, "head timeouts counted")
finally:
    g.cleanup()
finish()
