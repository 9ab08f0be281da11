#!/usr/bin/env python3
"""The accepted answer (202, spool only, `write` durability) next to nginx at 64 and 256
connections, split into user and system CPU per answer, with syscalls and context switches
per answer; optionally several builds of flashgate side by side (bench/README.md "What
runs"). Python 3 stdlib, wrk, nginx.

  python3 bench/acc_split.py BIN_DIR [BIN_DIR ...] [REPS [SECONDS]]

One nginx (bench/nginx.conf.in, `return 200`) and one `flashgate --threads 1
--kafka-brokers none` per build, started as bench.py starts them; then REPS (3) rounds of
wrk -t1 of SECONDS (5) per case, cases interleaved within a round (nginx, then each build,
at 64 and 256 connections; a new sale of 10^9 units per flashgate run, loadtest/wrk/buy.lua).
Per case the medians of: cpu (utime+stime, us per answer), usr, sys, sysc (the process's
syscr+syscw from /proc/PID/io per answer: the read(2)/write(2) family; epoll_wait and
recv/send are not counted, so nginx's column is not comparable) and vcs (voluntary
context switches per answer: the loop went to sleep); then each gateway's RSS and how much
of it is on transparent huge pages. usr/sys come from the kernel's tick accounting: read
their split, not their second digit. Run it under `flock /work/bench.lock` like every
benchmark here.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import (CLK_TCK, HUGE, NGINX_LUA, Gateway, log, start_nginx, stop, stop_all,  # noqa: E402
                   to_ms)


def sample(pids):
    """utime, stime (ticks), syscr+syscw, voluntary context switches of pids (all threads)."""
    u = s = sc = vcs = 0
    for p in pids:
        st = open("/proc/%d/stat" % p).read()
        f = st[st.rindex(")") + 2:].split()
        u += int(f[11])
        s += int(f[12])
        for line in open("/proc/%d/io" % p):
            k, v = line.split(":")
            if k in ("syscr", "syscw"):
                sc += int(v)
        for t in os.listdir("/proc/%d/task" % p):
            try:
                for line in open("/proc/%d/task/%s/status" % (p, t)):
                    if line.startswith("voluntary_ctxt_switches"):
                        vcs += int(line.split()[1])
            except FileNotFoundError:
                pass  # a thread that ended meanwhile
    return u, s, sc, vcs


def run(url, conns, secs, script, args, pids):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--timeout", "5s", "-s", script, url]
    if args:
        argv += ["--"] + list(args)
    a = sample(pids)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60).stdout
    b = sample(pids)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError("wrk output not understood:\n" + out)
    n = int(m.group(1))
    us = 1e6 / CLK_TCK / n
    return {"usr": (b[0] - a[0]) * us, "sys": (b[1] - a[1]) * us,
            "cpu": (b[0] + b[1] - a[0] - a[1]) * us, "sysc": (b[2] - a[2]) / n,
            "vcs": (b[3] - a[3]) / n, "rps": n / (to_ms(m.group(2) + m.group(3)) / 1000)}


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    bins = []
    while args and not args[0].isdigit():
        bins.append(args.pop(0))
    reps = int(args[0]) if args else 3
    secs = int(args[1]) if len(args) > 1 else 5
    tmp = tempfile.mkdtemp(prefix="flashgate-acc-split-")
    try:
        ngx_script = os.path.join(tmp, "nginx.lua")
        open(ngx_script, "w").write(NGINX_LUA)
        buy = os.path.join(bench.SRC, "loadtest", "wrk", "buy.lua")
        ngx, ngx_port = start_nginx(tmp)
        gws = [Gateway(tmp, "gw-%d" % i, os.path.join(b, "flashgate"),
                       ["--kafka-brokers", "none", "--limits-user-rps", "1"])
               for i, b in enumerate(bins)]
        names = ["nginx"] + ["202 %s" % b for b in bins]
        res = {(c, n): [] for c in names for n in (64, 256)}
        for rep in range(reps):
            for conns in (64, 256):
                for i, name in enumerate(names):
                    log("rep %d/%d, c%d: %s" % (rep + 1, reps, conns, name))
                    if i == 0:
                        r = run("http://127.0.0.1:%d/" % ngx_port, conns, secs, ngx_script, [],
                                [ngx.pid] + bench.children(ngx.pid))
                    else:
                        g = gws[i - 1]
                        r = run(g.url(), conns, secs, buy, [g.new_sale("acc", HUGE)], [g.pid])
                    res[(name, conns)].append(r)
        mem = {}
        for g, b in zip(gws, bins):  # after the runs: how much of it is on huge pages
            kb = {}
            for line in open("/proc/%d/smaps_rollup" % g.pid):
                if line.startswith(("Rss:", "AnonHugePages:")):
                    kb[line.split(":")[0]] = int(line.split()[1])
            mem[b] = kb
            stop(g.proc)
        stop(ngx)
        keys = ("cpu", "usr", "sys", "sysc", "vcs", "rps")
        print("%-28s %5s %8s %7s %7s %7s %7s %8s %9s" %
              ("case", "conns", "cpu us", "x ngx", "usr", "sys", "sysc", "vcs", "req/s"))
        for conns in (64, 256):
            base = statistics.median(r["cpu"] for r in res[("nginx", conns)])
            for name in names:
                rs = res[(name, conns)]
                m = {k: statistics.median(r[k] for r in rs) for k in keys}
                spread = "%.2f-%.2f" % (min(r["cpu"] for r in rs), max(r["cpu"] for r in rs))
                print("%-28s %5d %8.2f %7.2f %7.2f %7.2f %7.2f %8.3f %9.0f  (%s)" %
                      (name[:28], conns, m["cpu"], m["cpu"] / base, m["usr"], m["sys"],
                       m["sysc"], m["vcs"], m["rps"], spread))
        for b in bins:
            print("%s: RSS %d MiB, of it on huge pages %d MiB" %
                  (b, mem[b].get("Rss", 0) // 1024, mem[b].get("AnonHugePages", 0) // 1024))
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
