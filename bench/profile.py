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
Fairness (docs/api.md "Start-window lottery", "Waiting room"): lot-entry (202 "entered":
entries of a start-window lottery whose window is open for the whole run, its starts_at 30
min ahead with fair_early_ms 3,600,000, a new user per request from buy.lua's 10,000
addresses; nothing bounds a sale's entries but memory: an entry_t of ~340 B in a vector
that doubles) and room-buy (202 "queued": first-come buys through a waiting room of
waiting_room_rate 1,000,000, whose front runs a second of admissions ahead of its queue, so
that every join is admitted at once; each buy names its own user and carries that user's
unspent X-Admission-Token, fetched by joining the room, GET /v1/sales/room/queue?user_id=U,
before the warm-up; then a 1.1 s pause, so that the join's per-user bucket is full again at
the buy). room-buy's run ends when its ROOM_TOKENS run out, if SECONDS does not end it
first: a room's spent-token table holds 262,144 in buckets of 16 (a full bucket is 503
admission_busy), and a token lives 120 s from its join. Both count their answers by kind
(wrklua.KINDS_LUA) and stop, printing the mix, unless 99% of the warm-up's and the run's
are the case's.
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
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection, HTTPException

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import (PEER_LIKE, RATE_LIMITED_LUA, free_port, nginx_worker, start_nginx,  # noqa: E402
                   start_redis, stop)
from wrklua import ANSWERS_LUA, KINDS_LUA  # noqa: E402
from bench_identity import TOKENS_LUA  # noqa: E402

# bench_identity.py's cases: (identity.mode, wrk TOKENS_LUA mode, sale, cycle)
ID_CASES = {"jwt-acc": ("jwt", "jwt", "acc", 0), "none-acc": ("none", "body", "acc", 0),
            "jwt-retry": ("jwt", "jwt", "retry", 64),
            "retry-bytes": ("none", "bodyhdr", "retry", 64)}
ID_TOKENS = 60000  # jwt-acc's tokens (valgrind answers ~100/s); warm-up and run each half

# room-buy's tokens: the warm-up's and the run's (under the spent table's 262,144, far from
# a full bucket of 16), and how long their fetch may take (a token lives 120 s from its join)
# (PROFILE_ROOM_TOKENS=W,R sets them: a calls run, ~100 answers/s under valgrind, needs few)
ROOM_TOKENS = tuple(int(x) for x in os.environ.get("PROFILE_ROOM_TOKENS", "4000,56000").split(","))
ROOM_FETCH_MAX_S = 80
# the answer each fairness case must give (wrklua.KINDS_LUA's kind), at least KIND_SHARE of them
FAIR_KIND = {"lot-entry": "202-entered", "room-buy": "202-queued"}
KIND_SHARE = 0.99

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


# wrk: buy.lua's requests (a new body user_id PREFIX-N each, from 10,000 X-Forwarded-For
# addresses) without its thread numbering: args SALE PREFIX (the warm-up's users are not the
# run's, so that every answer of a lottery is a new entry); answers counted by kind
LOT_LUA = r"""
local sale, prefix, counter = "lot", "u", 0
function init(args)
   sale, prefix = args[1], args[2]
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
end
function request()
   counter = counter + 1
   local a = counter % 10000
   wrk.headers["X-Forwarded-For"] = string.format("198.18.%d.%d", math.floor(a / 256), a % 256)
   return wrk.format(nil, nil, nil, string.format('{"user_id":"%s-%d","qty":1}', prefix, counter))
end
""" + KINDS_LUA

# wrk: args SALE FILE, FILE's lines "USER TOKEN": one line per request, USER the body's
# user_id and TOKEN its X-Admission-Token (LOT_LUA's addresses); the thread stops when the
# lines run out, so no token is sent twice but by the requests already on their way
ROOM_LUA = r"""
local sale, users, toks, i = "room", {}, {}, 0
function init(args)
   sale = args[1]
   for line in io.lines(args[2]) do
      local u, t = string.match(line, "^(%S+) (%S+)$")
      table.insert(users, u)
      table.insert(toks, t)
   end
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
end
function request()
   i = i + 1
   if i > #toks then wrk.thread:stop() i = #toks end
   local a = i % 10000
   wrk.headers["X-Forwarded-For"] = string.format("198.18.%d.%d", math.floor(a / 256), a % 256)
   wrk.headers["X-Admission-Token"] = toks[i]
   return wrk.format(nil, nil, nil, '{"user_id":"' .. users[i] .. '","qty":1}')
end
""" + KINDS_LUA


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


def room_tokens(port, sale, prefix, n, conns=4):
    """["USER TOKEN", ...]: users PREFIX-0..n-1 each join the sale's waiting room
    (GET /v1/sales/SALE/queue?user_id=U) over conns kept connections and give the
    admission token the answer carries; a place not admitted yet is asked again with its
    ticket (no rate limit applies to it), a 503 again as it was, for up to 5 s. Exits
    naming the answer otherwise."""
    out, errs = [None] * n, []

    def get(c, path):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if body.startswith(b"{") else {}

    def part(k):
        c = HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for j in range(k, n, conns):
                u = "%s-%d" % (prefix, j)
                path = "/v1/sales/%s/queue?user_id=%s" % (sale, u)
                st, a = get(c, path)
                for _ in range(250):
                    if st == 200 and "ticket" in a and "admission_token" not in a:
                        path = "/v1/sales/%s/queue?user_id=%s&ticket=%s" % (sale, u, a["ticket"])
                    elif st != 503:  # 503: the overload's queue_time on a busy machine
                        break
                    time.sleep(0.02)
                    st, a = get(c, path)
                if st != 200 or "admission_token" not in a:
                    errs.append("%s: %d %s" % (u, st, json.dumps(a)[:200]))
                    return
                out[j] = u + " " + a["admission_token"]
        except (OSError, ValueError, HTTPException) as e:
            errs.append("join: %r" % e)
        finally:
            c.close()

    ts = [threading.Thread(target=part, args=(k,)) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        sys.exit("profile: no admission token for " + errs[0])
    return out


def answer_kinds(out):
    """{kind: count} of a KINDS_LUA script's "answers:" line"""
    m = re.search(r"^answers:(.*)$", out, re.M)
    return {k: int(v) for k, v in (x.rsplit("=", 1) for x in m.group(1).split())} if m else {}


def check_kinds(case, what, n, out):
    """the answers of a fairness case's wrk run by kind; exits printing them unless at least
    KIND_SHARE of wrk's n answers, and of those counted, are FAIR_KIND[case]"""
    kinds = answer_kinds(out)
    good = kinds.get(FAIR_KIND[case], 0)
    if not n or good < KIND_SHARE * n or good < KIND_SHARE * sum(kinds.values()):
        sys.exit("profile: %s %s: %d of %d answers are %s: %s\n%s" %
                 (case, what, good, n, FAIR_KIND[case], json.dumps(kinds), out))
    return kinds


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


WRK_CPU = [0.0, 1.0]  # the last wrk run's utime+stime and its length (wrk's), seconds


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
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if not m:
        sys.exit("profile: wrk gave no count:\n" + out)
    WRK_CPU[1] = max(float(m.group(2)) * {"ms": 1e-3, "s": 1, "m": 60}[m.group(3)], 1e-3)
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
        fair = None
        if case == "lot-entry":  # entries from 30 min ago until 40 min ahead
            fair = ("lot", {"starts_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                       time.gmtime(time.time() + 1800)),
                            "fair_window_ms": 600000, "fair_early_ms": 3600000})
        if case == "room-buy":
            fair = ("room", {"waiting_room_rate": 1000000})
        if fair:
            body = dict(fair[1], stock=HUGE, per_user_limit=1)
            st = http(admin, "PUT", "/admin/v1/sales/" + fair[0], body, TOKEN)
            if st not in (200, 201):
                sys.exit("profile: PUT /admin/v1/sales/%s %s: %d" %
                         (fair[0], json.dumps(body), st))
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
        if case == "room-buy":
            # the room's front moves with the lottery thread's tick: joins once it has
            for _ in range(100):
                c = HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/v1/sales/room/queue")
                page = json.loads(c.getresponse().read())
                c.close()
                if page.get("admitting_through", 0) > sum(ROOM_TOKENS):
                    break
                time.sleep(0.05)
            t_fetch = time.monotonic()
            for name, prefix, k in (("warm", "rw", ROOM_TOKENS[0]), ("run", "rr", ROOM_TOKENS[1])):
                with open(os.path.join(tmp, name + "-room.txt"), "w") as f:
                    f.write("\n".join(room_tokens(port, "room", prefix, k)) + "\n")
            t_fetch = time.monotonic() - t_fetch
            if t_fetch > ROOM_FETCH_MAX_S:
                sys.exit("profile: fetching %d admission tokens took %.0f s: they live 120 s"
                         % (sum(ROOM_TOKENS), t_fetch))
            time.sleep(1.1)  # the joins' per-user buckets full again (limits.user_rps 1)
        for name, lua in (("lot", LOT_LUA), ("room", ROOM_LUA)):
            with open(os.path.join(tmp, name + ".lua"), "w") as f:
                f.write(lua)
        script, sale = {"sold": (os.path.join(wrkdir, "sold_out.lua"), "so"),
                        "floor": (os.path.join(wrkdir, "sold_out.lua"), "so"),
                        "nginx": (os.path.join(wrkdir, "sold_out.lua"), "so"),
                        "rate": (rate, "rl"),
                        "later": (later, "later"),
                        "nosale": (later, "nosuch"),  # bench_identity.py's 404 sale id
                        "nginx-rate": (rate, "rl"),  # the 429's peer in bench.py
                        "acc": (os.path.join(wrkdir, "buy.lua"), "acc"),
                        "mem": (os.path.join(wrkdir, "buy.lua"), "acc"),
                        "redis": (os.path.join(wrkdir, "buy.lua"), "acc"),
                        "lot-entry": (os.path.join(tmp, "lot.lua"), ["lot", "lr"]),
                        "room-buy": (os.path.join(tmp, "room.lua"),
                                     ["room", os.path.join(tmp, "run-room.txt")])
                        }.get(case, (None, None))
        if case in ID_CASES:  # wrk's args: sale, token file, mode, cycle
            script = toks_lua
            sale = [idsale, os.path.join(tmp, "run-tokens.txt"), idmode, str(cycle)]
        group = cap(target, os.environ["PROFILE_CAP"], tmp) if os.environ.get("PROFILE_CAP") \
            else None
        # warm-up (the accepted case on its own sale: buy.lua's users restart at 1; the
        # fairness cases on theirs with users of their own)
        wn, wout = wrk(port, conns, 1, script,
                       ["warm" if cycle == 0 else idsale, os.path.join(tmp, "warm-tokens.txt"),
                        idmode, str(cycle)] if case in ID_CASES else
                       "warm" if case in ("acc", "mem", "redis") else
                       ["lot", "lw"] if case == "lot-entry" else
                       ["room", os.path.join(tmp, "warm-room.txt")] if case == "room-buy" else
                       sale)
        if case in FAIR_KIND:
            check_kinds(case, "warm-up", wn, wout)
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
               "wrk_busy": round(WRK_CPU[0] / WRK_CPU[1], 3)}
        if case in FAIR_KIND:
            res["answers_by_kind"] = check_kinds(case, "run", n, out)
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
