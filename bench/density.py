#!/usr/bin/env python3
"""What an answer costs the server against how densely requests arrive: flashgate beside nginx.

The overload bench's cpu 2x row holds the capped gateway to a bound computed from the cost of an
answer at saturation (`a`, bench/README.md "How to read the figures"). At 2x the crowd is sparse: between
a quota period's first batch and the next its requests come one at a time, and each then costs
the server a wakeup of its own and, on loopback, the sleeping client's wakeup inside the
server's write. This script asks whether that is the gateway's or the machine's: the same open
crowd (flashgate-load, connection_mode open, 64 warm and idle, no retries) at fixed arrival
rates, and a closed-loop wrk -t1 -c64 for saturation, against
  - nginx: one worker, `return 410` with a body like flashgate's sold-out answer;
  - flashgate's sold-out answer (410): the same work as nginx's, plus the gateway's own;
  - flashgate's accepted order (202, spool only): the cpu case's answer.
Nothing is capped. Each server is pinned to CPU 1 and the generator to CPU 0, so the
server's cost is its own threads' CPU (schedstat) over the answers it gave. The idle line is
each server's CPU per second with no traffic (timers, housekeeping threads): at low rates it
is part of every answer's cost. Runs are interleaved (a rate on every server, then the next
rate), REPS rounds, medians. Python 3 stdlib; the helpers are bench.py's.

  flock /work/bench.lock env FLASHGATE_BIN=build python3 bench/density.py [RATES [SECS [REPS]]]

RATES: arrivals/s, comma-separated (default 1000,2000,3000,5000); SECS per run (4); REPS (3).
Traffic goes to 127.0.0.1 only; every process started is stopped by its PID.
"""
import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "bench"))
import bench as B  # noqa: E402

NGINX_410 = "return 410 '{\"error\":\"sold_out\",\"message\":\"sale so is sold out\"}';"


def sched_ns(pid):
    """CPU of every thread of pid, ns (schedstat: exact, not tick-sampled)."""
    t = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            t += int(open(f).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between the glob and the read
    return t


def pin(pid, cpu):
    # taskset -a walks the threads and fails at one that ended during the walk (the
    # gateway's start-up threads finish at their own pace): walk again.
    for attempt in range(5):
        r = subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    sys.exit("density: cannot pin pid %d to CPU %d: %s" % (pid, cpu, r.stderr.strip()))


def open_run(tmp, bindir, tag, url, pid, sale, rate, secs, seed):
    sc = {"name": "density", "seed": seed, "duration_s": secs, "drain_s": 3, "targets": [url],
          "connections": 64, "connection_mode": "open", "connections_max": 4096,
          "warm_connections": 64, "give_up_ms": 2000, "request_timeout_ms": 3000,
          "sale": {"id": sale, "create": False},
          "crowd": {"users": int(rate * secs * 1.3) + 1000, "addresses": 100000},
          "behaviour": {"max_retries": 0, "poll_max": 0},
          "arrivals": [{"kind": "plateau", "duration_s": secs, "rate": rate}], "loops": 1}
    d = tempfile.mkdtemp(prefix="%s-%d-" % (tag, rate), dir=tmp)
    p = os.path.join(d, "scenario.json")
    json.dump(sc, open(p, "w"))
    c0 = sched_ns(pid)
    out = subprocess.run(["taskset", "-c", "0", os.path.join(bindir, "flashgate-load"),
                          "--scenario", p, "--no-audit", "--quiet", "--no-create",
                          "--out", os.path.join(d, "out")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=secs + 60)
    c1 = sched_ns(pid)
    try:
        rep = json.load(open(os.path.join(d, "out", "report.json")))
    except (OSError, ValueError):
        sys.exit("density: flashgate-load gave no report:\n" + out.stdout.decode()[-2000:])
    f = rep["figures"]
    ans = {k: v for k, v in f.get("answers", {}).items() if v}
    n = sum(v for k, v in ans.items() if k not in ("error", "timeout"))
    return {"n": n, "us": (c1 - c0) / 1e3 / max(n, 1), "answers": ans,
            "lag99": f.get("send_lag", {}).get("p99_ms", float("nan"))}


def wrk_run(url, pid, script, sale, secs):
    c0 = sched_ns(pid)
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c64", "-d%ds" % secs,
                          "-s", script, url, "--", sale],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=secs + 60)
    c1 = sched_ns(pid)
    o = out.stdout.decode("utf-8", "replace")
    m = re.search(r"(\d+) requests in", o)
    if not m:
        sys.exit("density: wrk output not understood:\n" + o)
    n = int(m.group(1))
    # the scripts' own tally: sold_out.lua says whether every answer was 410, buy.lua
    # prints the answer mix ("answers: 202=N ...")
    ans = {}
    m = re.search(r"^answers:(.*)$", o, re.M)
    if m:
        ans = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    elif "every answer was 410" in o:
        ans = {"410": n}
    else:
        m = re.search(r"sold_out: (\d+) answers were not 410", o)
        ans = {"410": n - int(m.group(1)), "other": int(m.group(1))} if m else {"?": n}
    return {"n": n, "us": (c1 - c0) / 1e3 / max(n, 1), "answers": ans, "lag99": 0.0}


def start_servers(tmp, bindir):
    """nginx (its worker answering 410) and one flashgate --threads 1, both pinned to CPU 1."""
    ngx, port = B.start_nginx(tmp)
    conf = os.path.join(tmp, "nginx", "nginx.conf")
    c = open(conf).read()
    c2 = re.sub(r"return 200 [^;]*;", NGINX_410, c)
    if c2 == c:
        sys.exit("density: bench/nginx.conf.in has no `return 200` to replace")
    open(conf, "w").write(c2)
    subprocess.run(["kill", "-HUP", str(ngx.pid)], check=True)
    time.sleep(1.0)  # the old worker leaves; the new one answers 410
    w = B.nginx_worker(ngx.pid)
    gw = B.Gateway(tmp, "gw", os.path.join(bindir, "flashgate"),
                   ["--kafka-brokers", "none", "--limits-user-rps", "0"])
    gw.put_sale("so", 0)
    pin(w, 1)
    pin(gw.pid, 1)
    so = os.path.join(SRC, "loadtest", "wrk", "sold_out.lua")
    buy = os.path.join(SRC, "loadtest", "wrk", "buy.lua")
    ngx_url = "http://127.0.0.1:%d" % port
    servers = [("nginx 410", ngx_url, w, lambda: "so", so),
               ("flashgate 410", gw.url(), gw.pid, lambda: "so", so),
               ("flashgate 202", gw.url(), gw.pid, lambda: gw.new_sale("dens", B.HUGE), buy)]
    return w, gw, servers


def idle_us(pid, secs):
    c0 = sched_ns(pid)
    time.sleep(secs)
    return (sched_ns(pid) - c0) / 1e3 / secs


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rates", nargs="?", default="1000,2000,3000,5000",
                    help="arrivals/s, comma-separated (uncapped runs)")
    ap.add_argument("secs", nargs="?", type=int, default=4, help="seconds a run")
    ap.add_argument("reps", nargs="?", type=int, default=3, help="interleaved rounds")
    a = ap.parse_args()
    rates = [int(x) for x in a.rates.split(",")]
    secs, reps = a.secs, a.reps
    bindir = B.find_bin()
    tmp = tempfile.mkdtemp(prefix="flashgate-density-")
    try:
        w, gw, servers = start_servers(tmp, bindir)
        cols = rates + ["sat"]
        res = {}
        idle = {}
        print("CPU: %s; %s; server on CPU 1, generator on CPU 0, nothing capped" % (
            B.cpu_model(),
            platform.release()))
        for name, pid in (("nginx", w), ("flashgate", gw.pid)):
            idle[name] = idle_us(pid, secs)
        print("idle: nginx %.1f us/s, flashgate %.1f us/s of CPU with no traffic" % (
            idle["nginx"], idle["flashgate"]))
        seed = 100
        for rep in range(reps):
            for col in cols:
                for name, url, pid, sale, script in servers:
                    seed += 1
                    r = (wrk_run(url, pid, script, sale(), secs) if col == "sat" else
                         open_run(tmp, bindir, name.replace(" ", "-"), url, pid, sale(), col,
                                  secs, seed))
                    res.setdefault((name, col), []).append(r)
                    print("  round %d %-13s %5s  %7d answers  %6.2f us an answer  lag p99 %.1f ms"
                          "  %s" % (rep + 1, name, col, r["n"], r["us"], r["lag99"],
                                    " ".join("%s=%d" % kv for kv in sorted(r["answers"].items()))),
                          flush=True)
    finally:
        B.stop_all()
    print("\nserver CPU per answer, median of %d rounds (us; in brackets: times its cost at "
          "saturation); %s" % (reps, B.IDENTITY_NOTE))
    print("  %-13s " % "" + "".join("%16s" % ("%d/s" % c if c != "sat" else "sat (wrk c64)")
                                     for c in cols))
    for name, _, _, _, _ in servers:
        m = {c: med([r["us"] for r in res[(name, c)]]) for c in cols}
        print("  %-13s " % name + "".join("%16s" % ("%.2f (%.2fx)" % (m[c], m[c] / m["sat"]))
                                          for c in cols))
    print("a run whose generator fell behind (lag p99 > 5 ms) sent in bunches: its cost reads "
          "low. bench/README.md \"Density\" and \"The cost of an answer\" read these figures.")


if __name__ == "__main__":
    main()
