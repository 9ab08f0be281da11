"""What Redis Cluster costs the buy path, side by side in one run.

Four backends, each behind one flashgate (2 workers, limits off, no Kafka):
  redis         one redis-server (appendonly no)
  cluster       3 masters, no replicas (redis-cluster://), the sale on one of them
  cluster+wait  3 masters + 3 replicas, ?wait_replicas=1 (a 202 waits for the replica)
  wait,batch=1  the same cluster and URL with inventory.redis_batch=1: one script call and
                one WAIT per reserve, where the default sends a loop iteration's reserves of
                a sale as one call and one WAIT (docs/fleet.md)
Rounds are interleaved (each backend once per round) and the medians printed:
202/s under wrk -c64 with a new user per request (every request a real
reserve), the gateway's CPU per 202 and the redis-servers' (all of them) CPU
per 202. Everything shares this machine, so orders/s is bounded by the 2 cores;
read the CPU columns for the cost. Usage: python3 bench/cluster.py [rounds] [secs]
"""
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
os.environ.setdefault("FLASHGATE_BIN", os.path.join(SRC, "build"))
from fleet import Cluster, Gateway, Redis  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SECS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set",
            "limits.global_rps=0", "--set", "limits.sale_rps=0", "--kafka-brokers", "none"]

WRK_LUA = r'''
-- a new user per request: every request is a real reserve
local n = 0
local tag = string.format("%d-%d", os.time(), math.floor(os.clock() * 1e6))
function request()
   n = n + 1
   return wrk.format("POST", "/v1/sales/b/orders", {["Content-Type"] = "application/json"},
                     '{"user_id":"u' .. tag .. '-' .. n .. '"}')
end
statuses = {}
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
local threads = {}
function setup(t) table.insert(threads, t) end
function done()
   local total = {}
   for _, t in ipairs(threads) do
      for code, k in pairs(t:get("statuses") or {}) do total[code] = (total[code] or 0) + k end
   end
   for code, k in pairs(total) do io.write(string.format("status %d %d\n", code, k)) end
end
'''


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run(gw, redis_pids, script):
    g0, r0 = cpu_ticks(gw.proc.pid), sum(cpu_ticks(p) for p in redis_pids)
    out = subprocess.run(["wrk", "-t1", "-c64", "-d%ds" % SECS, "--timeout", "5s", "-s", script,
                          "http://127.0.0.1:%d" % gw.port], capture_output=True, text=True,
                         timeout=SECS + 30).stdout
    g1, r1 = cpu_ticks(gw.proc.pid), sum(cpu_ticks(p) for p in redis_pids)
    codes = {int(c): int(k) for c, k in re.findall(r"status (\d+) (\d+)", out)}
    ok = codes.get(202, 0)
    total = sum(codes.values()) or 1
    us = 1e6 / CLK_TCK
    return {"rps": ok / SECS, "gw_us": (g1 - g0) * us / max(ok, 1),
            "redis_us": (r1 - r0) * us / max(ok, 1), "other": 1 - ok / total,
            "codes": {c: k for c, k in codes.items() if c != 202}}


def main():
    tmp = tempfile.mkdtemp(prefix="fg-bench-cluster-")
    script = os.path.join(tmp, "buy.lua")
    open(script, "w").write(WRK_LUA)
    single = Redis(aof=False).start()
    c3 = Cluster(n=3, replicas=0)
    c6 = Cluster(n=6, replicas=1)
    wait_url = "redis-cluster://127.0.0.1:%d?wait_replicas=1" % c6.ports[0]
    c6_pids = [p.pid for p in c6.procs.values()]
    setups = [("redis", single.url, [single.proc.pid], []),
              ("cluster", "redis-cluster://127.0.0.1:%d" % c3.ports[0],
               [p.pid for p in c3.procs.values()], []),
              ("cluster+wait", wait_url, c6_pids, []),
              ("wait,batch=1", wait_url, c6_pids, ["--inventory-redis-batch", "1"])]
    gws = {}
    try:
        for name, url, _, extra in setups:
            g = Gateway("--inventory", url, *NOLIMITS, *extra, threads=2)
            g.start()
            g.put_sale("b", stock=1000000000, per_user_limit=1)
            gws[name] = g
        res = {name: [] for name, _, _, _ in setups}
        for rnd in range(ROUNDS):
            for name, _, pids, _ in setups:
                r = run(gws[name], pids, script)
                res[name].append(r)
                print("round %d %-13s %8.0f 202/s  gw %6.1f us  redis %6.1f us  non-202 %.1f%% %r"
                      % (rnd + 1, name, r["rps"], r["gw_us"], r["redis_us"], 100 * r["other"],
                         r["codes"]), flush=True)
        print("\nCPU: %s, %d cores; load average %s" %
              (cpu_model(), os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
        print("wrk -t1 -c64 -d%ds, a new user per request; medians of %d rounds\n" %
              (SECS, ROUNDS))
        print("| backend | 202/s | gateway cpu us/202 | redis cpu us/202 (all servers) | non-202 |")
        print("|---|---|---|---|---|")
        for name, _, _, _ in setups:
            m = {k: statistics.median(r[k] for r in res[name])
                 for k in ("rps", "gw_us", "redis_us", "other")}
            print("| %s | %.0f | %.1f | %.1f | %.1f%% |" %
                  (name, m["rps"], m["gw_us"], m["redis_us"], 100 * m["other"]))
    finally:
        for g in gws.values():
            g.stop()
            g.cleanup()
        c3.cleanup()
        c6.cleanup()
        single.cleanup()


main()
