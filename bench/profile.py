#!/usr/bin/env python3
"""Per-answer costs of one buy-path case, for comparing two builds (bench/README.md "What
runs"); Python 3 stdlib, wrk, valgrind (calls) or perf (sys).

  python3 bench/profile.py BIN_DIR CASE MODE [SECONDS [CONNS]]

CASE: sold (410), later (425 not started: a sale starting in a day, sold out's request
shape), nosale (404 unknown sale: the same requests to a sale id no sale has), rate (429), acc (202, spool only), floor (bench/uv_floor.c, the
libuv+llhttp floor, with sold out's wrk script: BIN_DIR's flashgate-bench-uv-floor), nginx
(bench/nginx.conf.in's one worker, `return 200`, with sold out's wrk script too), nginx-rate
(the same nginx under rate's wrk script: the 429's peer in bench.py), and
the Redis target's pair
(bench.py's bench_redis flags, PEER_LIKE: no adaptive overload shedding, so no 503s
under valgrind): mem (202, memory backend) and redis (202, Redis backend, on a
redis-server started here as bench.py does); and bench_identity.py's pairs (its wrk
script, tokens minted by BIN_DIR's flashgate-token): jwt-acc (202, identity.mode=jwt,
every token new: one signature check each) against none-acc (202, the same users in the
body), jwt-retry (409, jwt, 64 tokens over and over: each a cache hit) against
retry-bytes (409, none, the same bytes: the token's header sent, unread).
PROFILE_IDENTITY=jwt runs sold, later, nosale and rate on a jwt-mode gateway (their requests
carry no token: the answers that need no identity). One `flashgate --threads 1` with the
bench's flags (identity.mode=none: the body's user_id), a 1 s warm-up, then `wrk -t1 -cCONNS -dSECONDS`. MODE:
  cpu    the gateway's utime+stime per answer, and each alone (load-dependent: compare
         within a run), and its voluntary context switches per answer (sleeps: how
         often the loop waited in epoll_wait with nothing to do and was woken); every
         mode also prints wrk's own CPU per answer and its share of one CPU (wrk_busy:
         near 1.0, wrk is the slower side of the closed loop)
  calls  callgrind, instrumentation on only during the wrk run: user-space
         instructions per answer, with and without memset (valgrind counts each
         byte of glibc's `rep stosb` memset as an instruction; libmicrohttpd
         clears ~12 KiB per request);
         load-independent. Valgrind slows the gateway ~50x, which
         the overload module reads as queueing (503 queue_time, a cheaper answer
         in the mix): this mode runs with --overload-accept-pause=false
         --overload-adaptive=false so that every answer is the case's.
         PROFILE_CG_ARGS adds valgrind options, e.g. "--cache-sim=yes
         --D1=49152,12,64 --LL=1048576,16,64" (the LL level sized as one
         core's L2): then each simulated event per answer is printed too
  perf   `perf record -e cpu-clock -p` during the run: the top symbols (kernel and
         user, [u]) as us per answer (their share of the sample times cpu_us_per_answer);
         irq-disabled kernel time shows up in pvm_irq_enable (the guest's paravirt
         irq enable, where the sampling interrupt gets in)
  perfg  the same with call graphs (-g), each symbol with what it called (--children):
         what each syscall, the sleep and the wake-up cost per answer
  sys    `perf stat` syscall tracepoints per answer, epoll_wait split per epoll fd
         (one per libuv loop: the main thread's and the worker's, and with Redis
         the backend's own); run it on a quiet
         machine: how many answers one wait finds depends on the load
PROFILE_CAP=QUOTA_US/PERIOD_US (e.g. 1000/20000, overload.py's cpu cap) puts the gateway
in a cgroup v1 cpu group with that CFS quota, pinned to CPU 1 with wrk on CPU 0: the cost
of an answer to a throttled process, over wrk's kept connections, with the overload
protection off (level 0, no adaptive limit, no door) as overload.py's `sat` run.
Run it under `flock /work/bench.lock` like every benchmark here. Prints one JSON line.
"""
import glob
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import (PEER_LIKE, RATE_LIMITED_LUA, free_port, nginx_worker, start_nginx,  # noqa: E402
                   start_redis, stop)
from wrklua import ANSWERS_LUA  # noqa: E402
from bench_identity import TOKENS_LUA  # noqa: E402

# bench_identity.py's cases: (identity.mode, wrk TOKENS_LUA mode, sale, cycle)
ID_CASES = {"jwt-acc": ("jwt", "jwt", "acc", 0), "none-acc": ("none", "body", "acc", 0),
            "jwt-retry": ("jwt", "jwt", "retry", 64),
            "retry-bytes": ("none", "bodyhdr", "retry", 64)}
ID_TOKENS = 60000  # jwt-acc's tokens (valgrind answers ~100/s); warm-up and run each half

TOKEN = "profile-token-0123456789abcdef"
HUGE = 10 ** 9
SYSCALLS = ["recvfrom", "sendto", "sendmsg", "writev", "write", "read", "epoll_ctl", "epoll_wait",
            "clock_gettime", "futex", "accept4", "close"]


# wrk: sold_out.lua's requests (a new body user_id each) to a sale not started yet; the
# answers counted by status ("answers: 425=N")
NOT_STARTED_LUA = r"""
local sale, counter = "later", 0
function init(args)
   if args[1] then sale = args[1] end
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
end
function request()
   counter = counter + 1
   return wrk.format(nil, nil, nil, string.format('{"user_id":"so-%d","qty":1}', counter))
end
""" + ANSWERS_LUA


def http(port, method, path, body=None, tok=None):
    h = {"Content-Type": "application/json"}
    if tok:
        h["Authorization"] = "Bearer " + tok
    r = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                               data=json.dumps(body).encode() if body is not None else None,
                               headers=h)
    try:
        with urllib.request.urlopen(r, timeout=5) as f:
            return f.status
    except urllib.error.HTTPError as e:
        return e.code


def ctxsw(pid):
    """voluntary (sleeps) and involuntary context switches of all of pid's threads"""
    v = n = 0
    for st in glob.glob("/proc/%d/task/*/status" % pid):
        for line in open(st):
            if line.startswith("voluntary_ctxt_switches"):
                v += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                n += int(line.split()[1])
    return v, n


def perf_top(data, n, cpu_us, top=25, children=False):
    """perf report of a cpu-clock recording: each symbol's share (self, or with
    children: what it called too) as us per answer"""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none"] +
                         (["--children"] if children else
                          ["--no-children", "-F", "overhead,sym"]) + ["--sort", "sym"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():  # (with children: "children% self% [k] sym")
        m = re.match(r"\s*([\d.]+)%\s+(?:[\d.]+%\s+)?\[(.)\]\s+(\S+)", line)
        if m:
            rows.append((m.group(3) + ("" if m.group(2) == "k" else " [u]"),
                         round(float(m.group(1)) / 100 * cpu_us, 3)))
    return sorted(rows, key=lambda r: -r[1])[:top]


def ticks(pid):
    """utime, stime of pid in clock ticks"""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])


WRK_CPU = [0.0]  # the last wrk run's utime+stime, seconds


def cap(pid, spec, tmp):
    """PROFILE_CAP=QUOTA_US/PERIOD_US: every thread of pid into a cgroup v1 cpu group of
    its own with that CFS quota, pinned to CPU 1 (wrk to CPU 0), as bench/overload.py's
    cpu case caps the gateway: what an answer costs a throttled process."""
    quota, period = (int(x) for x in spec.split("/"))
    g = "/sys/fs/cgroup/cpu/flashgate-profile-%d" % os.getpid()
    os.makedirs(g, exist_ok=True)
    with open(os.path.join(g, "cpu.cfs_period_us"), "w") as f:
        f.write(str(period))
    with open(os.path.join(g, "cpu.cfs_quota_us"), "w") as f:
        f.write(str(quota))
    for t in os.listdir("/proc/%d/task" % pid):
        with open(os.path.join(g, "tasks"), "w") as f:
            f.write(t)
        os.sched_setaffinity(int(t), {1})
    return g


def wrk(port, conns, secs, script, sale):
    """sale: the script's argument, or a list of them"""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run((["taskset", "-c", "0"] if os.environ.get("PROFILE_CAP") else []) +
                         ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "-s", script,
                          "http://127.0.0.1:%d" % port, "--"] +
                         (sale if isinstance(sale, list) else [sale]),
                         capture_output=True, text=True).stdout
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    WRK_CPU[0] = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    m = re.search(r"(\d+) requests in", out)
    if not m:
        sys.exit("profile: wrk gave no count:\n" + out)
    return int(m.group(1)), out


def perf_stat(pid):
    evs = ["-e", ",".join("syscalls:sys_enter_" + s for s in SYSCALLS)]
    eps = []
    for fd in glob.glob("/proc/%d/fd/*" % pid):
        try:
            if "eventpoll" in os.readlink(fd):
                eps.append(int(fd.rsplit("/", 1)[1]))
        except OSError:
            pass
    for fd in sorted(eps):
        evs += ["-e", "syscalls:sys_enter_epoll_wait", "--filter", "epfd == %d" % fd]
    p = subprocess.Popen(["perf", "stat", "-x,"] + evs + ["-p", str(pid)],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    return p, sorted(eps)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bindir, case, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    secs = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    tmp = tempfile.mkdtemp(prefix="flashgate-profile-")
    port, admin = free_port(), free_port()
    argv = [os.path.join(bindir, "flashgate"), "--listen", "127.0.0.1:%d" % port,
            "--admin-listen", "127.0.0.1:%d" % admin, "--admin-token", TOKEN,
            "--data-dir", os.path.join(tmp, "data"), "--threads", "1",
            "--server-trusted-proxies", "127.0.0.1/32", "--limits-ip-rps", "0", "--limits-subnet-rps", "0",
            "--log-level", "warn", "--kafka-brokers", "none", "--limits-user-rps", "1",
            # buy.lua names its buyers in the body: no token verified (bench.IDENTITY_NOTE)
            "--set", "identity.mode=" + (ID_CASES[case][0] if case in ID_CASES else
                                         os.environ.get("PROFILE_IDENTITY", "none"))]
    rs, group = None, None
    if case in ID_CASES:  # bench_identity.py's flags: no user rate limit (retries are 409s)
        argv[argv.index("--limits-user-rps") + 1] = "0"
    if case in ("mem", "redis"):
        argv += PEER_LIKE
    if case == "redis":
        rs, rport = start_redis(tmp)
        argv += ["--inventory", "redis://127.0.0.1:%d" % rport]
    if os.environ.get("PROFILE_CAP") and case != "floor":
        # protection off, as overload.py's `sat` run: every answer is the case's
        argv += ["--overload-level", "0", "--overload-adaptive=false",
                 "--overload-accept-pause=false"]
    if case == "floor":
        argv = [os.path.join(bindir, "flashgate-bench-uv-floor"), str(port)]
    if case in ("nginx", "nginx-rate"):  # bench/nginx.conf.in's worker
        if mode == "calls":
            sys.exit("profile: no calls mode for nginx")
        argv = None
    cg = os.path.join(tmp, "callgrind.out")
    if mode == "calls":
        if case != "floor":
            argv += ["--overload-accept-pause=false", "--overload-adaptive=false"]
        argv = (["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 "--callgrind-out-file=" + cg] + os.environ.get("PROFILE_CG_ARGS", "").split() +
                argv)
    log = open(os.path.join(tmp, "flashgate.log"), "w")
    if argv:
        gw = subprocess.Popen(argv, stdout=log, stderr=log)
        target = gw.pid
    else:
        gw, port = start_nginx(tmp)
        target = nginx_worker(gw.pid)
    try:
        for _ in range(600 if argv else 0):
            try:
                if case == "floor" and http(port, "POST", "/v1/sales/so/orders", {}) == 410:
                    break
                if case != "floor" and http(port, "GET", "/readyz") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        for sale, stock in (("so", 0), ("rl", HUGE), ("acc", HUGE), ("warm", HUGE),
                            ("retry", HUGE)):
            if case not in ("floor", "nginx", "nginx-rate"):
                http(admin, "PUT", "/admin/v1/sales/" + sale,
                     {"stock": stock, "per_user_limit": 1}, TOKEN)
        if case == "later":
            http(admin, "PUT", "/admin/v1/sales/later",
                 {"stock": HUGE, "per_user_limit": 1, "starts_at":
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))}, TOKEN)
        rate = os.path.join(tmp, "rate.lua")
        with open(rate, "w") as f:
            f.write(RATE_LIMITED_LUA)
        later = os.path.join(tmp, "later.lua")
        with open(later, "w") as f:
            f.write(NOT_STARTED_LUA)
        wrkdir = os.path.join(HERE, "..", "loadtest", "wrk")
        if case in ID_CASES:
            _, idmode, idsale, cycle = ID_CASES[case]
            toks_lua = os.path.join(tmp, "tokens.lua")
            with open(toks_lua, "w") as f:
                f.write(TOKENS_LUA)
            n = ID_TOKENS if cycle == 0 else cycle
            toks = subprocess.run([os.path.join(bindir, "flashgate-token"), "--data-dir",
                                   os.path.join(tmp, "data"), "--init", "--count", str(n), "bench"],
                                  capture_output=True, text=True, check=True).stdout.split()
            # the run's tokens never seen in the warm-up (jwt-acc: each one uncached)
            warm_toks = toks[:n // 2] if cycle == 0 else toks
            for name, part in (("warm", warm_toks), ("run", toks[n // 2:] if cycle == 0 else toks)):
                with open(os.path.join(tmp, name + "-tokens.txt"), "w") as f:
                    f.write("\n".join(part) + "\n")
        script, sale = {"sold": (os.path.join(wrkdir, "sold_out.lua"), "so"),
                        "floor": (os.path.join(wrkdir, "sold_out.lua"), "so"),
                        "nginx": (os.path.join(wrkdir, "sold_out.lua"), "so"),
                        "rate": (rate, "rl"),
                        "later": (later, "later"),
                        "nosale": (later, "nosuch"),  # bench_identity.py's 404 sale id
                        "nginx-rate": (rate, "rl"),  # the 429's peer in bench.py
                        "acc": (os.path.join(wrkdir, "buy.lua"), "acc"),
                        "mem": (os.path.join(wrkdir, "buy.lua"), "acc"),
                        "redis": (os.path.join(wrkdir, "buy.lua"), "acc")}.get(case, (None, None))
        if case in ID_CASES:  # wrk's args: sale, token file, mode, cycle
            script = toks_lua
            sale = [idsale, os.path.join(tmp, "run-tokens.txt"), idmode, str(cycle)]
        group = cap(target, os.environ["PROFILE_CAP"], tmp) if os.environ.get("PROFILE_CAP") \
            else None
        # warm-up (the accepted case on its own sale: buy.lua's users restart at 1)
        wrk(port, conns, 1, script,
            ["warm" if cycle == 0 else idsale, os.path.join(tmp, "warm-tokens.txt"), idmode,
             str(cycle)] if case in ID_CASES else
            "warm" if case in ("acc", "mem", "redis") else sale)
        perf, eps = perf_stat(target) if mode == "sys" else (None, [])
        pdata = os.path.join(tmp, "perf.data")
        if mode in ("perf", "perfg"):
            rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999"] +
                                   (["-g"] if mode == "perfg" else []) + [
                                    "-o", pdata, "-p", str(target)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        t0, s0 = ticks(target), ctxsw(target)
        if mode == "calls":
            subprocess.run(["callgrind_control", "-i", "on", str(gw.pid)], capture_output=True)
        n, out = wrk(port, conns, secs, script, sale)
        if mode == "calls":
            subprocess.run(["callgrind_control", "-i", "off", str(gw.pid)], capture_output=True)
        t1, us = ticks(target), 1e6 / os.sysconf("SC_CLK_TCK") / n
        s1 = ctxsw(target)
        res = {"case": case, "mode": mode, "conns": conns, "answers": n,
               "cpu_us_per_answer": round((sum(t1) - sum(t0)) * us, 2),
               "user_us": round((t1[0] - t0[0]) * us, 2), "sys_us": round((t1[1] - t0[1]) * us, 2),
               "sleeps_per_answer": round((s1[0] - s0[0]) / n, 3),
               "preempted_per_answer": round((s1[1] - s0[1]) / n, 3),
               "wrk_cpu_us": round(WRK_CPU[0] * 1e6 / n, 2),
               "wrk_busy": round(WRK_CPU[0] / secs, 3)}
        if mode in ("perf", "perfg"):
            rec.send_signal(signal.SIGINT)
            rec.wait(timeout=120)
            res["top"] = perf_top(pdata, n, res["cpu_us_per_answer"],
                                  *((60, True) if mode == "perfg" else ()))
        bad = re.search(r"(\d+ answers were not \d+.*|answers:.*)", out)
        if bad:
            res["wrk"] = bad.group(1)[:160]
        if perf:
            perf.send_signal(signal.SIGINT)
            _, err = perf.communicate()
            k = 0
            for line in err.splitlines():
                f = line.split(",")
                if len(f) > 2 and f[0].strip().isdigit():
                    name = f[2].replace("syscalls:sys_enter_", "")
                    if name in res:  # the filtered epoll_wait events, in fd order
                        name = "epoll_wait(fd %d)" % eps[k]
                        k += 1
                    if int(f[0]):
                        res[name] = round(int(f[0]) / n, 3)
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(timeout=120)
        if group:
            os.rmdir(group)
        if rs:
            stop(rs)
    if mode == "calls":
        a = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", cg],
                           capture_output=True, text=True).stdout
        events = re.search(r"^Events shown:\s+(.*)$", a, re.M).group(1).split()
        totals = [int(x.replace(",", "")) for x in
                  re.search(r"^([\d,\s()%.]+)PROGRAM TOTALS", a, re.M).group(1).split()
                  if x[0].isdigit()]
        tot = totals[0]
        for ev, v in zip(events[1:], totals[1:]):  # --cache-sim=yes: misses per answer
            res[ev + "_per_answer"] = round(v / n, 2)
        ms = sum(int(m.group(1).replace(",", ""))
                 for m in re.finditer(r"^\s*([\d,]+)\s.*memset", a, re.M))
        res["instructions_per_answer"] = round(tot / n)
        res["without_memset"] = round((tot - ms) / n)
        res["callgrind_out"] = cg
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
