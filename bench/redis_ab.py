#!/usr/bin/env python3
"""Gateway variants against one redis-server, interleaved, beside the -P 64 ceiling of the
reserve script: per variant orders/s, the gateway's CPU per order, redis-server's CPU per reserve
split into user and system time, the script's own time, reserves per read(2) and per wakeup of
redis-server (its voluntary context switches) and its preemptions per 1,000 reserves
(bench/README.md "Redis" under "Findings that hold"). Python 3 stdlib; the helpers are bench.py's.

  flock /work/bench.lock env VARIANTS='pool2|build|--inventory-redis-pool 2;pool1|build|' \
      python3 bench/redis_ab.py

VARIANTS: label|bindir|extra flags[|ENV=value ...], ';'-separated; every gateway runs
bench.py's Redis-row flags (--threads 1, a 1 s Redis timeout, no adaptive limit).
CONNS (64), REPS (3), SECS (5), CEIL=0 skips the ceiling; CEIL_C (50): redis-benchmark's
connections for the ceiling, a list ("50,1,1x32": C or CxP for -c C -P P, -P 64 by default; the
first is what the ratios are taken against);
CEIL_MODES (fresh): "fresh" a fresh sale a round (as bench.py), "grown" the old ceiling on one
sale whose hashes grow over the rounds, "fresh,grown" both; PERF=1: redis-server's syscalls and switches per reserve (perf stat tracepoints);
PIN_REDIS=CPU: redis-server on that CPU (e.g. `taskset -c 0 env PIN_REDIS=1 python3 ...`: the
gateway, wrk and redis-benchmark on CPU 0, redis-server alone on CPU 1).
"""
import os
import shutil
import signal
import subprocess
import statistics
import sys
import tempfile
import time
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "bench"))
import bench as B
B.SRC = SRC

def ut_st(pid):
    st = open("/proc/%d/stat" % pid).read()
    f = st[st.rindex(")") + 2:].split()
    return int(f[11]), int(f[12])

def ctxsw(pid):
    v = n = 0
    for ln in open("/proc/%d/status" % pid):
        if ln.startswith("voluntary_ctxt_switches"):
            v = int(ln.split()[1])
        elif ln.startswith("nonvoluntary_ctxt_switches"):
            n = int(ln.split()[1])
    return v, n

PERF_EV = ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_read", "syscalls:sys_enter_write",
           "syscalls:sys_enter_writev", "sched:sched_switch"]


def perf_start(pid, name=""):
    """PERF=1: count redis-server's syscalls and switches over the next measurement;
    PERF_RECORD=DIR: perf record -e cpu-clock -g of redis-server into DIR/NAME.data instead."""
    rec = os.environ.get("PERF_RECORD")
    if rec:
        out = os.path.join(rec, name + ".data")
        p = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", out, "-p", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return p, None
    if os.environ.get("PERF", "0") != "1":
        return None
    out = tempfile.mktemp(prefix="redis-ab-perf-")
    p = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", ",".join(PERF_EV), "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    return p, out


def perf_stop(pf, n):
    """' syscalls per reserve: epoll_wait .. read .. write .. writev .. switch ..' or ''."""
    if pf is None:
        return ""
    p, out = pf
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    if out is None:
        return ""
    got = {}
    for ln in open(out):
        f = ln.strip().split(",")
        if len(f) > 2 and f[2] in PERF_EV and f[0].isdigit():
            got[f[2].split("_")[-1] if "sys_enter" in f[2] else "switch"] = int(f[0]) / max(n, 1)
    os.unlink(out)
    return " per reserve: " + " ".join("%s %.4f" % kv for kv in got.items())


def main():
    tmp = tempfile.mkdtemp(prefix="redis-ab-")
    reps = int(os.environ.get("REPS", "3")); secs = int(os.environ.get("SECS", "5"))
    conns = [int(x) for x in os.environ.get("CONNS", "64").split(",")]
    variants = []
    for v in os.environ["VARIANTS"].split(";"):
        parts = v.split("|")
        label, bindir, flags = parts[:3]
        envs = dict(kv.split("=") for kv in parts[3].split()) if len(parts) > 3 else {}
        variants.append((label, bindir, flags.split() if flags.strip() else [], envs))
    rs, rport = B.start_redis(tmp)
    B.REDIS_PIDS[rport] = rs.pid
    if os.environ.get("PIN_REDIS"):  # redis-server on a CPU of its own (run the script under taskset)
        os.sched_setaffinity(rs.pid, {int(os.environ["PIN_REDIS"])})
    base = ["--kafka-brokers", "none", "--inventory", "redis://127.0.0.1:%d" % rport] + B.PEER_LIKE
    gws = {}
    for label, bindir, flags, envs in variants:
        saved = dict(os.environ)
        os.environ.update(envs)
        gws[label] = B.Gateway(tmp, "gw-" + label, os.path.join(bindir, "flashgate"), base + flags)
        os.environ.clear(); os.environ.update(saved)
    buy = os.path.join(SRC, "loadtest", "wrk", "buy.lua")
    res = {}
    ceil = {}
    ceil_c = [x if "x" in x else x + "x64" for x in os.environ.get("CEIL_C", "50").split(",")]
    modes = os.environ.get("CEIL_MODES", "fresh").split(",")
    ceil_grown = []
    try:
        print("load %s" % open("/proc/loadavg").read().strip(), flush=True)
        for rep in range(reps):
            for c in conns:
                for label, _, _, _ in variants:
                    g = gws[label]
                    sale = g.new_sale("acc-" + label, B.HUGE)
                    u0, s0 = ut_st(rs.pid); i0 = B.redis_info(rport); v0, n0 = ctxsw(rs.pid)
                    pf = perf_start(rs.pid, "c%d-%s-%d" % (c, label, rep + 1))
                    r = B.run_wrk(g.url(), c, secs, buy, [sale], g.pid, False)
                    u1, s1 = ut_st(rs.pid); v1, n1 = ctxsw(rs.pid)
                    acc = r["answers"].get(202, 0)
                    sc = perf_stop(pf, acc)
                    r.update(B.redis_delta(i0, B.redis_info(rport), acc))
                    k = 1e6 / B.CLK_TCK / max(acc, 1)
                    row = dict(rps=acc / r["duration_s"], gw=r["cpu_us"] * r["requests"] / max(acc, 1),
                               ru=(u1 - u0) * k, rsys=(s1 - s0) * k, script=r["script_us"],
                               per_read=r["per_read"], per_wake=acc / max(v1 - v0, 1), preempt=(n1 - n0) / max(acc, 1) * 1000, share=acc / max(sum(r["answers"].values()), 1))
                    row["redis"] = row["ru"] + row["rsys"]
                    res.setdefault((label, c), []).append(row)
                    print("rep %d c%d %-12s %7.0f/s gw %.2f redis %.2f (u %.2f s %.2f) script %.2f per_read %.1f per_wake %.1f preempt/1k %.1f 202 %.3f%s" % (
                        rep + 1, c, label, row["rps"], row["gw"], row["redis"], row["ru"], row["rsys"],
                        row["script"], row["per_read"], row["per_wake"], row["preempt"], row["share"], sc), flush=True)
            if os.environ.get("CEIL", "1") == "1":
                g = gws[variants[0][0]]
                sha = B.redis_cmd(rport, "SCRIPT", "LOAD", B.reserve_script(tmp))
                for mode, cc in [(m, c) for m in modes for c in ceil_c]:
                    if mode == "fresh":  # like each gateway run: a fresh sale (bench.py's ceiling)
                        args = B.ceiling_args(g, rport)
                    else:  # the old ceiling: one sale whose hashes grow over the rounds
                        if not ceil_grown:
                            g.put_sale("ceil", B.HUGE)
                            ceil_grown.append(1)
                        args = ["4", "{sale:ceil}:meta", "{sale:ceil}:users", "{sale:ceil}:orders",
                                "{sale:ceil}:idem", "u__rand_int__", "1", "", "o__rand_int__"]
                    u0, s0 = ut_st(rs.pid); v0, n0 = ctxsw(rs.pid)
                    pf = perf_start(rs.pid, "ceil-%s-c%s-%d" % (mode, cc, rep + 1))
                    cr = B.redis_ceiling(rport, sha, args, "ceiling", *map(int, cc.split("x")))
                    sc = perf_stop(pf, B.CEILING_N)
                    u1, s1 = ut_st(rs.pid); v1, n1 = ctxsw(rs.pid)
                    cr["per_wake"] = B.CEILING_N / max(v1 - v0, 1)
                    k = 1e6 / B.CLK_TCK / B.CEILING_N
                    cr["ru"], cr["rsys"] = (u1 - u0) * k, (s1 - s0) * k
                    ceil.setdefault((mode, cc), []).append(cr)
                    print("rep %d ceiling-%s-c%-5s %7.0f/s redis %.2f (u %.2f s %.2f) script %.2f per_read %.1f per_wake %.1f%s" % (
                        rep + 1, mode, cc, cr["rps"], cr["redis_cpu_us"], cr["ru"], cr["rsys"], cr["script_us"], cr["per_read"], cr["per_wake"], sc), flush=True)
        print("load %s" % open("/proc/loadavg").read().strip())
        med = lambda xs: statistics.median(xs)
        cm = float("nan")
        for (mode, cc), cs in ceil.items():
            m = med([x["redis_cpu_us"] for x in cs])
            if (mode, cc) == (modes[0], ceil_c[0]):
                cm = m
            print("medians; ceiling %s -c/-P %s redis %.2f us (u %.2f s %.2f) script %.2f per_read %.1f per_wake %.1f" % (
                mode, cc, m, med([x["ru"] for x in cs]), med([x["rsys"] for x in cs]),
                med([x["script_us"] for x in cs]), med([x["per_read"] for x in cs]), med([x["per_wake"] for x in cs])))
        for (label, c), rows in res.items():
            m = {f: med([r[f] for r in rows]) for f in rows[0]}
            print("c%d %-12s %7.0f/s gw %.2f redis %.2f (u %.2f s %.2f) = %.3fx ceiling; script %.2f per_read %.1f per_wake %.1f" % (
                c, label, m["rps"], m["gw"], m["redis"], m["ru"], m["rsys"], m["redis"] / cm, m["script"], m["per_read"], m["per_wake"]))
    finally:
        for g in gws.values():
            B.stop(g.proc)
        B.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

main()
