#!/usr/bin/env python3
"""What flashgate-load (one loop, or LOOPS) and the gateway cost per request at given arrival rates, on the
cheapest answer there is: a sold-out sale (410), memory inventory, nothing capped, the overload
bench's crowd (connection_mode open, 64 idle, give_up_ms 2000, no retries). It tells how far
this machine's crowd can go before the generator falls behind and the connects of its late
bursts raise both sides' cost (bench/README.md "The load generator": the overload bench's loads
are kept below that). Python 3 stdlib; the helpers are bench.py's.

  flock /work/bench.lock env FLASHGATE_BIN=build python3 bench/crowd_cost.py [20000,25000,30000]

RATES as the argument (arrivals/s, comma-separated; 3 s each, a fresh sale per rate on one
gateway); WARM (0): connections opened before each run's first arrival; LOOPS (1): the loops
(threads) flashgate-load deals the crowd over.
Prints per rate: the generator's user and system CPU per request (its rusage), the gateway's CPU
per request (schedstat of its threads), the generator's send lag p99 and the connects it made.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "bench"))
import bench as B  # noqa: E402
from overload import cpu_s  # noqa: E402


def main():
    rates = [float(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "20000,25000,30000").split(",")]
    bindir = os.path.abspath(os.environ.get("FLASHGATE_BIN", os.path.join(SRC, "build")))
    warm = int(os.environ.get("WARM", "0"))
    loops = int(os.environ.get("LOOPS", "1"))
    secs = 3.0
    tmp = tempfile.mkdtemp(prefix="fg-crowd-cost-")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    print("CPU: %s, %d cores, kernel %s; load average %s; the machine is shared: quote medians"
          % (cpu, os.cpu_count(), platform.release(), open("/proc/loadavg").read().split()[0]))
    print("flashgate-load: %d loop(s), %d warm connections; gateway %s" % (loops, warm,
                                                                           B.IDENTITY_NOTE))
    gw = B.Gateway(tmp, "gw", os.path.join(bindir, "flashgate"),
                   ["--kafka-brokers", "none", "--limits-user-rps", "0", "--durability", "write"])
    try:
        print("%9s  %22s  %14s  %11s  %10s  %8s" % ("offered", "generator us/req (user)",
                                                     "gateway us/req", "both, cores", "lag p99 ms",
                                                     "connects"))
        for i, rate in enumerate(rates):
            sc = {"name": "crowd-cost", "seed": 1 + i, "duration_s": secs, "drain_s": 3,
                  "targets": [gw.url()], "admin": "http://127.0.0.1:%d" % gw.admin,
                  "admin_token": B.TOKEN, "connections": 64, "connection_mode": "open",
                  "connections_max": 4096, "give_up_ms": 2000, "request_timeout_ms": 3000,
                  "warm_connections": warm, "loops": loops,
                  "sale": {"id": "cc%d" % i, "create": True, "stock": 0, "per_user_limit": 1,
                           "start_offset_s": 0, "duration_s": 3600,
                           "fair_window_ms": 0},  # first-come: the buy path, not entries
                  "crowd": {"users": int(rate * secs * 1.3) + 1000, "addresses": 100000},
                  "behaviour": {"max_retries": 0, "poll_max": 0},
                  "arrivals": [{"kind": "plateau", "duration_s": secs, "rate": rate}]}
            scp = os.path.join(tmp, "sc%d.json" % i)
            with open(scp, "w") as fh:
                json.dump(sc, fh)
            out = os.path.join(tmp, "r%d" % i)
            g0 = cpu_s(gw.pid)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([os.path.join(bindir, "flashgate-load"), "--scenario", scp, "--out",
                            out, "--no-audit", "--quiet"], check=True, capture_output=True)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            g1 = cpu_s(gw.pid)
            with open(os.path.join(out, "report.json")) as fh:
                f = json.load(fh)["figures"]
            n = rate * secs
            user = ru1.ru_utime - ru0.ru_utime
            gen = user + ru1.ru_stime - ru0.ru_stime
            print("%9.0f  %14.1f (%5.1f)  %14.1f  %11.2f  %10.1f  %8d" % (
                rate, gen * 1e6 / n, user * 1e6 / n, (g1 - g0) * 1e6 / n,
                (gen + g1 - g0) / secs, f["send_lag"]["p99_ms"], f["connections"]["connects"]),
                flush=True)
            time.sleep(0.5)
    finally:
        gw.proc.terminate()
        gw.proc.wait()
    print("generator CPU includes its fixed cost per run (~0.3 s here: arrivals, report); "
          "both = generator + gateway CPU over the run's %.0f s" % secs)


if __name__ == "__main__":
    main()
