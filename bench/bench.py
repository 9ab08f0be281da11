#!/usr/bin/env python3
"""flashgate benchmarks in one run (issues 2, 3, 4 and 5); Python 3 stdlib only.

Started by bench/bench.sh (`make bench`). Everything listens on 127.0.0.1 at
free ports in a temp dir, every run is bounded in time, and every process this
script starts is stopped by its PID at the end, also on Ctrl-C or SIGTERM.

Environment: FLASHGATE_BIN (directory with flashgate, flashgate-settle,
flashgate-load; default build/ of this repository), BENCH_REPS (3),
BENCH_SECONDS (5), BENCH_QUICK=1 (1 rep of 1 s: a ~1-minute smoke pass),
BENCH_KEEP=1 (keep the temp dir), BENCH_OPEN_RATE (open-loop arrivals/s),
BENCH_ONLY=http|redis|settle|settle-e2e|settle-stmt (one part alone), FLASHGATE_SETTLE_BIN_OLD and
BENCH_SETTLE_ARGS (bench/settle.py).
bench/README.md says how to read the figures.
"""
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port  # noqa: E402,F401  (B.free_port for the benches built on this)
from wrklua import ANSWERS_LUA  # noqa: E402
QUICK = os.environ.get("BENCH_QUICK", "0") not in ("", "0")
REPS = int(os.environ.get("BENCH_REPS", "1" if QUICK else "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "1" if QUICK else "5"))
CONNS = (64, 256)
FLOOR = "libmicrohttpd floor (410)"
UV_FLOOR = "epoll+llhttp floor (410)"
NGX_SO = "nginx, sold out's requests"
NGX_RL = "nginx, rate limited's requests"
NGX_BUY = "nginx, the buy storm's requests"
# The nginx run each case is measured against: the same wrk script, the run before it.
PEER = {"sold out (410)": NGX_SO, FLOOR: NGX_SO, UV_FLOOR: NGX_SO, "rate limited (429)": NGX_RL,
        "accepted, spool only (202)": NGX_BUY, "accepted, spool+relay (202)": NGX_BUY,
        NGX_SO: "nginx return 200", NGX_RL: "nginx return 200", NGX_BUY: "nginx return 200"}
SETTLE_ORDERS = 5000 if QUICK else 20000   # one partition of the mock broker holds ~5 MiB
CEILING_N = 50000 if QUICK else 200000    # redis-benchmark requests per measurement
OPEN_RATE = int(os.environ.get("BENCH_OPEN_RATE", "2000" if QUICK else "5000"))
TOKEN = "bench-" + os.urandom(8).hex()
CLK_TCK = os.sysconf("SC_CLK_TCK")
HUGE = 1000000000

PROCS = []  # every Popen we started, stopped by PID in stop_all()


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


def find_bin():
    env = os.environ.get("FLASHGATE_BIN")
    cands = [env] if env else [os.path.join(SRC, "build")]
    for d in cands:
        if all(os.access(os.path.join(d, b), os.X_OK)
               for b in ("flashgate", "flashgate-settle", "flashgate-load")):
            return d
    sys.exit("bench: flashgate, flashgate-settle, flashgate-load not found in %s "
             "(run `make build`, or set FLASHGATE_BIN)" % cands[0])


def start(argv, logpath, **kw):
    f = open(logpath, "wb")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    f.close()
    PROCS.append(p)
    return p


def stop(p, grace=5.0):
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    if p in PROCS:
        PROCS.remove(p)


def stop_all():
    for p in list(reversed(PROCS)):
        stop(p)


def on_signal(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    raise KeyboardInterrupt("signal %d" % signum)


def http_req(port, method, path, body=None, token=None, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdr = {}
    if body is not None:
        body = json.dumps(body)
        hdr["Content-Type"] = "application/json"
    if token:
        hdr["Authorization"] = "Bearer " + token
    c.request(method, path, body=body, headers=hdr)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def wait_http(port, path, proc, logpath, secs=15.0):
    t_end = time.time() + secs
    while time.time() < t_end:
        if proc.poll() is not None:
            break
        try:
            st, _ = http_req(port, "GET", path, timeout=1.0)
            if st == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    tail = open(logpath, "rb").read()[-2000:].decode("utf-8", "replace")
    raise RuntimeError("server on port %d did not answer %s:\n%s" % (port, path, tail))


def children(pid):
    """The PIDs whose parent is `pid` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return out


def cpu_ticks(pid, with_children=False):
    """utime+stime of the process (all its threads), in clock ticks."""
    pids = [pid] + (children(pid) if with_children else [])
    total = 0
    for p in pids:
        st = open("/proc/%d/stat" % p).read()
        f = st[st.rindex(")") + 2:].split()
        total += int(f[11]) + int(f[12])  # fields 14 and 15 of stat(5)
    return total


# ---------------------------------------------------------------- servers

# The benches' buys name their buyer in the body (loadtest/wrk/*.lua, flashgate-load
# without an identity key): every gateway here runs identity.mode=none unless a case's
# flags set a mode, and each accept-path section says so (IDENTITY_NOTE). What a verified
# buyer costs is bench/identity.py's.
IDENTITY_NONE = ["--set", "identity.mode=none"]
IDENTITY_NOTE = "identity.mode=none: the body's user_id, no token verified"


class Gateway:
    """One flashgate process with --threads 1 on free loopback ports (identity.mode=none
    unless `extra` names identity.mode)."""

    def __init__(self, tmp, name, binary, extra):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port, self.admin = free_port(), free_port()
        self.log = os.path.join(self.dir, "flashgate.log")
        argv = [binary, "--listen", "127.0.0.1:%d" % self.port,
                "--admin-listen", "127.0.0.1:%d" % self.admin, "--admin-token", TOKEN,
                "--data-dir", os.path.join(self.dir, "data"), "--threads", "1",
                "--server-trusted-proxies", "127.0.0.1/32", "--limits-ip-rps", "0", "--limits-subnet-rps", "0",
                "--log-level", "warn"] + extra
        if not any("identity.mode" in a or a.startswith("--identity-mode") for a in extra):
            argv += IDENTITY_NONE
        self.argv = argv
        self.proc = start(argv, self.log)
        wait_http(self.port, "/readyz", self.proc, self.log)
        self.nsales = 0

    @property
    def pid(self):
        return self.proc.pid

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def put_sale(self, sale, stock, limit=1):
        st, body = http_req(self.admin, "PUT", "/admin/v1/sales/" + sale,
                            {"stock": stock, "per_user_limit": limit}, TOKEN)
        if st not in (200, 201):
            raise RuntimeError("PUT sale %s: %d %s" % (sale, st, body[:200]))

    def new_sale(self, prefix, stock):
        self.nsales += 1
        sale = "%s-%d" % (prefix, self.nsales)
        self.put_sale(sale, stock)
        return sale

    def sale_info(self, sale):
        st, body = http_req(self.admin, "GET", "/admin/v1/sales/" + sale, token=TOKEN)
        return json.loads(body) if st == 200 else {}


def start_nginx(tmp):
    d = os.path.join(tmp, "nginx")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    conf = open(os.path.join(SRC, "bench", "nginx.conf.in")).read()
    conf = conf.replace("@PREFIX@", d).replace("@PORT@", str(port))
    open(os.path.join(d, "nginx.conf"), "w").write(conf)
    logp = os.path.join(d, "stdout.log")
    argv = ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c",
            os.path.join(d, "nginx.conf"), "-g", "daemon off; pid %s/nginx.pid;" % d]
    p = start(argv, logp)
    wait_http(port, "/", p, logp)
    return p, port


def nginx_worker(master):
    """The pid of the worker (bench/nginx.conf.in has one) of the nginx master `master`:
    the process that answers, whose CPU the benches read."""
    for _ in range(100):
        kids = open("/proc/%d/task/%d/children" % (master, master)).read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    sys.exit("bench: nginx started no worker")


def start_floor(tmp, bindir, name="mhd-floor", env=None):
    """flashgate-bench-mhd-floor (bench/mhd_floor.c): libmicrohttpd alone, answering the
    bytes of flashgate's prepared 410 to every request (as the admin listener is set up);
    name "uv-floor": the same with llhttp on an event loop (bench/uv_floor.c; env
    FLOOR_EPOLL=1: an edge-triggered epoll loop of its own, the public listener's shape;
    unset: libuv's streams). None if it was not built."""
    exe = os.path.join(bindir, "flashgate-bench-" + name)
    if not os.access(exe, os.X_OK):
        return None, None
    port = free_port()
    logp = os.path.join(tmp, name + ".log")
    p = start([exe, str(port)], logp, env=dict(os.environ, **(env or {})))
    t_end = time.time() + 15
    while time.time() < t_end and p.poll() is None:
        try:
            if http_req(port, "POST", "/v1/sales/so/orders", {"user_id": "u"}, timeout=1.0)[0] == 410:
                return p, port
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("flashgate-bench-" + name + " did not answer: " +
                       open(logp, "rb").read()[-2000:].decode("utf-8", "replace"))


def start_redis(tmp):
    d = os.path.join(tmp, "redis")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    logp = os.path.join(d, "redis.log")
    p = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
               "--appendonly", "no", "--save", "", "--daemonize", "no"], logp)
    t_end = time.time() + 10
    while time.time() < t_end:
        try:
            if redis_cmd(port, "PING") == "PONG":
                return p, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start: " + open(logp).read()[-1000:])


def redis_cmd(port, *args):
    """One command over RESP; returns a simple/bulk string or int."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n")
    if head[:1] == b"$":
        n = int(head[1:])
        while len(rest) < n + 2:
            rest += s.recv(65536)
        s.close()
        return rest[:n].decode()
    s.close()
    if head[:1] == b"-":
        raise RuntimeError("redis: " + head.decode())
    return head[1:].decode()


def reserve_script(tmp, macro="INV_REDIS_LUA_RESERVE"):
    """A reserve script's exact text (the one-call reserve, or INV_REDIS_LUA_RESERVE_BATCH),
    from inventory/inv_redis_lua.h via cc."""
    c = os.path.join(tmp, "lua-%s.c" % macro)
    exe = os.path.join(tmp, "lua-%s" % macro)
    open(c, "w").write('#include <stdio.h>\n#include "inventory/inv_redis_lua.h"\n'
                       'int main(void) { fputs(%s, stdout); return 0; }\n' % macro)
    subprocess.run(["cc", "-I", SRC, "-o", exe, c], check=True)
    return subprocess.run([exe], check=True, capture_output=True).stdout


# ---------------------------------------------------------------- wrk

RATE_LIMITED_LUA = r'''
-- bench: one user hammering one sale (limits.user_rps=1): nearly every answer is 429.
local sale = "rl"
function init(args)
   if args[1] then sale = args[1] end
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = '{"user_id":"hammer","qty":1}'
end
''' + ANSWERS_LUA

NGINX_LUA = r'''
-- bench: the same request shape as the buy path (POST, small JSON body).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user_id":"u-1","qty":1}'
'''


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        return float("nan")
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000, "m": x * 60000}[m.group(2)]


def run_wrk(url, conns, secs, script, args=(), pid=None, pid_children=False):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency", "--timeout", "5s",
            "-s", script, url]
    if args:
        argv += ["--"] + list(args)
    c0 = cpu_ticks(pid, pid_children) if pid else 0
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    PROCS.append(p)
    try:
        out = p.communicate(timeout=secs + 60)[0].decode("utf-8", "replace")
    finally:
        stop(p)
    c1 = cpu_ticks(pid, pid_children) if pid else 0
    r = {"out": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError("wrk output not understood:\n" + out)
    r["requests"] = int(m.group(1))
    r["duration_s"] = to_ms(m.group(2) + m.group(3)) / 1000
    r["rps"] = r["requests"] / r["duration_s"]
    for q in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, out, re.M)
        r["p" + q] = to_ms(m.group(1)) if m else float("nan")
    r["cpu_us"] = (c1 - c0) * 1e6 / CLK_TCK / max(r["requests"], 1) if pid else float("nan")
    m = re.search(r"Socket errors: (.*)", out)
    r["socket_errors"] = m.group(1).strip() if m else ""
    r["answers"] = {}
    m = re.search(r"^answers:(.*)$", out, re.M)
    if m:
        for kv in m.group(1).split():
            k, v = kv.split("=")
            r["answers"][int(k)] = int(v)
    m = re.search(r"sold_out: (\d+) answers were not 410, e.g. (.*)", out)
    if m:
        r["answers"] = {410: r["requests"] - int(m.group(1)), 0: int(m.group(1))}
        r["wrong_example"] = m.group(2)
    elif "every answer was 410" in out:
        r["answers"] = {410: r["requests"]}
    return r


def share(r, code):
    tot = sum(r["answers"].values())
    return r["answers"].get(code, 0) / tot if tot else float("nan")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------- printing

def fmt(x, nd=1):
    if x != x:
        return "-"
    if abs(x) >= 1000:
        return "{:,.0f}".format(x)
    return ("{:.%df}" % nd).format(x)


def table(head, rows):
    w = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i])
                                   for i, c in enumerate(cells))
    print(line(head))
    print("  ".join("-" * x for x in w))
    for r in rows:
        print(line(r))


def version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, timeout=10)
        return (p.stdout + p.stderr).decode("utf-8", "replace").strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


# ---------------------------------------------------------------- the benchmarks

def bench_http(tmp, bindir, scripts):
    """Nginx vs flashgate's buy path, closed loop; then one open-loop run."""
    ngx, ngx_port = start_nginx(tmp)
    floor, floor_port = start_floor(tmp, bindir)
    uvf, uvf_port = start_floor(tmp, bindir, "uv-floor", {"FLOOR_EPOLL": "1"})
    gw = Gateway(tmp, "gw-spool", os.path.join(bindir, "flashgate"),
                 ["--kafka-brokers", "none", "--limits-user-rps", "1"])
    gwk = Gateway(tmp, "gw-relay", os.path.join(bindir, "flashgate"),
                  ["--kafka-brokers", "embedded", "--limits-user-rps", "1"])
    gw.put_sale("so", 0)
    gw.put_sale("rl", HUGE)
    # Each case runs right after nginx answering the same wrk script's requests
    # (PEER): the client's own cost per request moves the server's (bench/README.md
    # "How to read the figures", x nginx), and adjacent runs see the same machine.
    cases = [("nginx return 200", None), (NGX_SO, None)]
    if floor:
        cases.append((FLOOR, 410))
    if uvf:
        cases.append((UV_FLOOR, 410))
    cases += [
        ("sold out (410)", 410),
        (NGX_RL, None),
        ("rate limited (429)", 429),
        (NGX_BUY, None),
        ("accepted, spool only (202)", 202),
        ("accepted, spool+relay (202)", 202),
    ]
    res = {(c, n): [] for c, _ in cases for n in CONNS}
    for rep in range(REPS):
        for conns in CONNS:
            for case, _ in cases:
                log("rep %d/%d, %d connections: %s" % (rep + 1, REPS, conns, case))
                if case.startswith("nginx"):
                    script, args = {NGX_SO: ("sold_out", ["so"]), NGX_RL: ("rate", ["rl"]),
                                    NGX_BUY: ("buy", ["ngx"])}.get(case, ("nginx", []))
                    r = run_wrk("http://127.0.0.1:%d" % ngx_port, conns, SECONDS,
                                scripts[script], args, pid=ngx.pid, pid_children=True)
                elif case == FLOOR:
                    r = run_wrk("http://127.0.0.1:%d" % floor_port, conns, SECONDS,
                                scripts["sold_out"], ["so"], floor.pid)
                elif case == UV_FLOOR:
                    r = run_wrk("http://127.0.0.1:%d" % uvf_port, conns, SECONDS,
                                scripts["sold_out"], ["so"], uvf.pid)
                elif case.startswith("sold"):
                    r = run_wrk(gw.url(), conns, SECONDS, scripts["sold_out"], ["so"], gw.pid)
                elif case.startswith("rate"):
                    r = run_wrk(gw.url(), conns, SECONDS, scripts["rate"], ["rl"], gw.pid)
                else:
                    g = gw if "spool only" in case else gwk
                    sale = g.new_sale("acc", HUGE)
                    r = run_wrk(g.url(), conns, SECONDS, scripts["buy"], [sale], g.pid)
                res[(case, conns)].append(r)
    # open loop: flashgate-load at a fixed rate below capacity, same gateway
    log("open loop: flashgate-load at %d/s for %d s" % (OPEN_RATE, max(SECONDS, 2)))
    ol = open_loop(tmp, bindir, gw)
    sc = bench_scrape(gw, scripts)
    stop(gwk.proc)
    stop(gw.proc)
    stop(ngx)
    if floor:
        stop(floor)
    if uvf:
        stop(uvf)
    return cases, res, ol, sc


def bench_scrape(gw, scripts):
    """The buy path with and without a Prometheus scraper (GET /metrics once a
    second), runs interleaved on the same gateway; plus what one scrape costs on its own."""
    import threading
    out = {"off": [], "on": [], "scrapes": 0, "scrape_ms": []}
    for rep in range(REPS):
        for mode in ("off", "on"):
            log("rep %d/%d: accepted orders, scraper %s" % (rep + 1, REPS, mode))
            stop_ev = threading.Event()

            def scraper():
                while not stop_ev.wait(1.0):
                    t = time.time()
                    st, _ = http_req(gw.admin, "GET", "/metrics", token=TOKEN)
                    if st == 200:
                        out["scrapes"] += 1
                        out["scrape_ms"].append((time.time() - t) * 1000)
            th = threading.Thread(target=scraper, daemon=True)
            if mode == "on":
                th.start()
            sale = gw.new_sale("scrape", HUGE)
            out[mode].append(run_wrk(gw.url(), 64, SECONDS, scripts["buy"], [sale], gw.pid))
            stop_ev.set()
            if mode == "on":
                th.join(5)
    # one scrape's own server CPU: 200 back to back on the idle gateway
    n = 50 if QUICK else 200
    c0 = cpu_ticks(gw.pid)
    for _ in range(n):
        http_req(gw.admin, "GET", "/metrics", token=TOKEN)
    out["scrape_cpu_us"] = (cpu_ticks(gw.pid) - c0) * 1e6 / CLK_TCK / n
    st, body = http_req(gw.admin, "GET", "/metrics", token=TOKEN)
    out["bytes"] = len(body)
    return out


def open_loop(tmp, bindir, gw):
    secs = max(SECONDS, 2)
    sc = {
        "name": "bench-open-loop", "seed": 7, "duration_s": secs, "drain_s": 5,
        "targets": [gw.url()], "admin": "http://127.0.0.1:%d" % gw.admin,
        "admin_token": TOKEN, "connections": 64,
        "sale": {"id": "open-loop", "create": True, "stock": HUGE, "per_user_limit": 1,
                 "start_offset_s": 0, "duration_s": 3600,
                 "fair_window_ms": 0},  # the buy path first-come, not the lottery's entries
        "crowd": {"users": OPEN_RATE * secs * 2, "addresses": 10000, "bot_fraction": 0},
        "behaviour": {"poll_max": 0, "max_retries": 3},
        "arrivals": [{"kind": "plateau", "duration_s": secs, "rate": OPEN_RATE}],
    }
    d = os.path.join(tmp, "open-loop")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "scenario.json")
    json.dump(sc, open(path, "w"))
    c0 = cpu_ticks(gw.pid)
    p = subprocess.Popen([os.path.join(bindir, "flashgate-load"), "--scenario", path,
                          "--no-audit", "--quiet", "--out", os.path.join(d, "out")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    PROCS.append(p)
    try:
        out = p.communicate(timeout=secs + 60)[0].decode("utf-8", "replace")
    finally:
        stop(p)
    c1 = cpu_ticks(gw.pid)
    try:
        rep = json.load(open(os.path.join(d, "out", "report.json")))
    except (OSError, ValueError):
        log("flashgate-load gave no report (exit %s):\n%s" % (p.returncode, out[-2000:]))
        return None
    f = rep["figures"]
    lat = f["latency"].get("202") or f["latency"].get("all_buy") or {}
    n = f.get("requests_buy", 0) + f.get("requests_poll", 0)
    return {"rate": OPEN_RATE, "secs": secs, "requests": f.get("requests_buy", 0),
            "answers": f.get("answers", {}), "p50": lat.get("p50_ms", float("nan")),
            "p99": lat.get("p99_ms", float("nan")), "p999": lat.get("p999_ms", float("nan")),
            "lag99": f.get("send_lag", {}).get("p99_ms", float("nan")),
            "cpu_us": (c1 - c0) * 1e6 / CLK_TCK / max(n, 1), "exit": p.returncode}


def bench_settle(tmp, bindir, scripts):
    """Accepted orders through spool + embedded broker + flashgate-settle into SQLite."""
    gw = Gateway(tmp, "gw-settle", os.path.join(bindir, "flashgate"),
                 ["--kafka-brokers", "embedded", "--limits-user-rps", "1"])
    data = os.path.join(gw.dir, "data")
    t_end = time.time() + 10
    while not os.path.exists(os.path.join(data, "kafka.bootstrap")) and time.time() < t_end:
        time.sleep(0.05)
    slog = os.path.join(gw.dir, "settle.log")
    settle = start([os.path.join(bindir, "flashgate-settle"), "--data-dir", data,
                    "--log-level", "warn"] + os.environ.get("BENCH_SETTLE_ARGS", "").split(), slog)
    dbp = os.path.join(data, "orders.db")
    # Warm-up: one order must reach the database before the measured sale opens,
    # so that the consumer group's join is not counted as settlement latency.
    warm = gw.new_sale("warm", 10)
    http_req(gw.port, "POST", "/v1/sales/%s/orders" % warm, {"user_id": "warm-up", "qty": 1})
    t_end = time.time() + 30
    while db_count(dbp, warm) < 1 and time.time() < t_end:
        time.sleep(0.1)
    if db_count(dbp, warm) < 1:
        log("warning: the warm-up order was not settled within 30 s")
    runs = []
    for rep in range(REPS):
        log("rep %d/%d settlement: %d units, wrk -c64 for %d s, then drain"
            % (rep + 1, REPS, SETTLE_ORDERS, SECONDS))
        runs.append(settle_run(gw, settle, dbp, scripts))
    out = {k: med([r[k] for r in runs if k in r]) for k in
           ("accepted", "rows", "settle_cpu_us", "settled", "accept_rate", "settle_rate",
            "e2e_p50", "e2e_p99", "e2e_max")}
    out["runs"] = runs
    if not any("settled" in r for r in runs):
        out.pop("settled")
    stop(settle)
    stop(gw.proc)
    return out


def settle_run(gw, settle, dbp, scripts):
    """One sale stormed by wrk, then waited for until every accepted order is a row."""
    sale = gw.new_sale("settle", SETTLE_ORDERS)
    s0 = cpu_ticks(settle.pid)
    r = run_wrk(gw.url(), 64, SECONDS, scripts["buy"], [sale], gw.pid)
    accepted = r["answers"].get(202, 0)
    t_end = time.time() + 60
    rows = 0
    while time.time() < t_end:
        rows = db_count(dbp, sale)
        if rows >= accepted:
            break
        time.sleep(0.2)
    s1 = cpu_ticks(settle.pid)
    out = {"accepted": accepted, "rows": rows,
           "settle_cpu_us": (s1 - s0) * 1e6 / CLK_TCK / max(rows, 1)}
    if rows:
        con = sqlite3.connect("file:%s?mode=ro" % dbp, uri=True, timeout=5)
        got = con.execute("SELECT accepted_at, settled_at FROM orders WHERE sale_id=? "
                          "AND status='settled'", (sale,)).fetchall()
        con.close()
        acc = [a for a, _ in got]
        st = [s for _, s in got]
        e2e = sorted(s - a for a, s in got)
        span_a = (max(acc) - min(acc)) / 1000 or float("nan")
        span_s = (max(st) - min(st)) / 1000 or float("nan")
        out.update({
            "settled": len(got), "accept_rate": len(got) / span_a,
            "settle_rate": len(got) / span_s,
            "e2e_p50": e2e[len(e2e) // 2], "e2e_p99": e2e[min(len(e2e) - 1, len(e2e) * 99 // 100)],
            "e2e_max": e2e[-1]})
        log("  accepted %d, e2e p50 %d ms, p99 %d ms, max %d ms"
            % (accepted, out["e2e_p50"], out["e2e_p99"], out["e2e_max"]))
    return out


def db_count(path, sale):
    if not os.path.exists(path):
        return 0
    try:
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=1)
        n = con.execute("SELECT count(*) FROM orders WHERE sale_id=?", (sale,)).fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def start_peer(tmp, mode, redis_port):
    """The nginx + Lua peer (bench/nginx-lua.conf.in, bench/lua/peer.lua), 1 worker."""
    d = os.path.join(tmp, "peer-" + mode)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    conf = open(os.path.join(SRC, "bench", "nginx-lua.conf.in")).read()
    for k, v in (("@PREFIX@", d), ("@PORT@", str(port)), ("@MODE@", mode),
                 ("@LUA_DIR@", os.path.join(SRC, "bench", "lua")),
                 ("@REDIS_PORT@", str(redis_port))):
        conf = conf.replace(k, v)
    open(os.path.join(d, "nginx.conf"), "w").write(conf)
    logp = os.path.join(d, "stdout.log")
    argv = ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c",
            os.path.join(d, "nginx.conf"), "-g", "daemon off; pid %s/nginx.pid;" % d]
    p = start(argv, logp)
    wait_http(port, "/healthz", p, logp)
    return p, port


def redis_info(port):
    """INFO stats + commandstats as a dict of numbers (cmdstat_X_usec, cmdstat_X_calls)."""
    out = {}
    for line in redis_cmd(port, "INFO", "all").splitlines():
        k, _, v = line.partition(":")
        if k.startswith("cmdstat_"):
            for kv in v.split(","):
                a, _, b = kv.partition("=")
                if a in ("calls", "usec"):
                    out["%s_%s" % (k, a)] = int(b)
        elif k in ("total_reads_processed", "total_writes_processed",
                   "total_commands_processed"):
            out[k] = int(v)
    return out


def redis_delta(i0, i1, reserves):
    """Per reserve: the scripts' own time (INFO commandstats: EVALSHA + EVAL usec / reserves),
    how many reserves each read of redis-server carried (its batching) and each script call
    (the gateway sends an iteration's reserves of a sale in one call: inventory/inv_redis_batch.c)."""
    d = lambda k: i1.get(k, 0) - i0.get(k, 0)
    calls = d("cmdstat_evalsha_calls") + d("cmdstat_eval_calls")
    usec = d("cmdstat_evalsha_usec") + d("cmdstat_eval_usec")
    reads = d("total_reads_processed")
    return {"script_us": usec / reserves if reserves else float("nan"),
            "per_read": reserves / reads if reads else float("nan"),
            "per_call": reserves / calls if calls else float("nan"),
            "calls_per_reserve": calls / reserves if reserves else float("nan")}


def redis_ceiling(rport, sha, nkeys_args, reps_label, clients=50, pipeline=64, per_call=1):
    """redis-benchmark -P 64 EVALSHA: the most a pipelining client can get out of Redis
    (redis-benchmark's default 50 connections; clients=1 is one connection of 64 in flight,
    as the gateway's one connection per worker at 64 wrk connections). per_call: reserves
    per call (the batch script's), so CEILING_N reserves are CEILING_N / per_call calls.

    The calls are a whole number of pipelines: redis-benchmark 7.0 issues a pipeline's -P
    calls at once, so with -n not a multiple of -P it finishes more than -n, and its 250 ms
    progress timer, when it fires after the last client is freed, compares finished != -n
    and exits with "All clients disconnected... aborting." (a CI run met this at -c 1)."""
    ncalls = CEILING_N // per_call // pipeline * pipeline
    log("%s: redis-benchmark EVALSHA, -n %d -P %d -c %d, %d reserves a call"
        % (reps_label, ncalls, pipeline, clients, per_call))
    c0 = cpu_ticks_of(rport)
    i0 = redis_info(rport)
    p = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(rport), "-n",
                        str(ncalls), "-P", str(pipeline), "-c", str(clients), "-r", "100000000", "-q",
                        "EVALSHA", sha] + nkeys_args, capture_output=True, timeout=120)
    c1 = cpu_ticks_of(rport)
    txt = (p.stdout + p.stderr).decode("utf-8", "replace")
    m = re.findall(r"([\d.]+) requests per second", txt)
    if not m:
        raise RuntimeError("redis-benchmark output not understood:\n" + txt[-1000:])
    r = {"rps": float(m[-1]) * per_call,
         "redis_cpu_us": (c1 - c0) * 1e6 / CLK_TCK / (ncalls * per_call)}
    r.update(redis_delta(i0, redis_info(rport), ncalls * per_call))
    return r


REDIS_PIDS = {}  # redis port -> pid, for cpu_ticks_of


def children_cpu_s():
    """utime+stime of this script's reaped children (wrk, after run_wrk), in seconds."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat: the whole machine, other load included."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def cpu_ticks_of(rport):
    return cpu_ticks(REDIS_PIDS[rport])


# the Redis section's cases, run interleaved: (label, kind, backend)
REDIS_CASES = [
    ("flashgate, memory", "gw", "memory"),
    ("flashgate, Redis", "gw", "redis"),
    ("flashgate, Redis, defaults", "gw", "redis-defaults"),
    ("nginx+Lua, memory", "peer", "memory"),
    ("nginx+Lua, Redis", "peer", "redis"),
]
# What the peer does too: a 1 s Redis timeout (its cosocket timeout) and no adaptive
# concurrency limit. The "defaults" row keeps flashgate's 40 ms and Gradient2 limit, which
# must not refuse a healthy sale (bench/README.md "Redis" under "Findings that hold").
PEER_LIKE = ["--inventory-redis-timeout", "1s", "--overload-adaptive=false"]


def bench_redis(tmp, bindir, scripts):
    """Issues 4 and 10: accepted orders through the Redis backend, beside the same gateway's
    memory backend, the nginx + Lua peer (memory and Redis) and redis-benchmark's EVALSHA
    ceiling of each script, all on one redis-server in one run."""
    rs, rport = start_redis(tmp)
    REDIS_PIDS[rport] = rs.pid
    flags = ["--kafka-brokers", "none"]
    redis = ["--inventory", "redis://127.0.0.1:%d" % rport]
    gws = {"redis": Gateway(tmp, "gw-redis", os.path.join(bindir, "flashgate"),
                            flags + redis + PEER_LIKE),
           "redis-defaults": Gateway(tmp, "gw-redis-defaults", os.path.join(bindir, "flashgate"),
                                     flags + redis),
           "memory": Gateway(tmp, "gw-mem", os.path.join(bindir, "flashgate"), flags + PEER_LIKE)}
    peers = {m: start_peer(tmp, m, rport) for m in ("memory", "redis")}
    sha = redis_cmd(rport, "SCRIPT", "LOAD", reserve_script(tmp))
    batch_sha = redis_cmd(rport, "SCRIPT", "LOAD", reserve_script(tmp, "INV_REDIS_LUA_RESERVE_BATCH"))
    peer_sha = redis_cmd(rport, "SCRIPT", "LOAD", peer_script())
    gw = gws["redis"]
    redis_cmd(rport, "SET", "{peer:ceil}:left", str(HUGE))
    res = {(c, n): [] for c, _, _ in REDIS_CASES for n in CONNS}
    ceil = {"flashgate": [], "flashgate-c1": [], "flashgate-batch": [], "peer": []}
    nsale = 0
    for rep in range(REPS):
        for conns in CONNS:
            for case, kind, backend in REDIS_CASES:
                log("rep %d/%d, %d connections: accepted orders, %s" % (rep + 1, REPS, conns, case))
                if kind == "gw":
                    g = gws[backend]
                    sale, url, pid, kids = g.new_sale("acc-" + backend, HUGE), g.url(), g.pid, False
                else:
                    nsale += 1
                    sale = "pacc-%d" % nsale
                    p, port = peers[backend]
                    if backend == "redis":
                        redis_cmd(rport, "SET", "{peer:%s}:left" % sale, str(HUGE))
                    else:
                        st, body = http_req(port, "PUT", "/admin/sales/%s?stock=%d" % (sale, HUGE))
                        if st != 200:
                            raise RuntimeError("peer PUT sale: %d %s" % (st, body[:200]))
                    url, pid, kids = "http://127.0.0.1:%d" % port, p.pid, True
                c0 = cpu_ticks(rs.pid)
                i0 = redis_info(rport)
                w0, b0 = children_cpu_s(), machine_busy()
                r = run_wrk(url, conns, SECONDS, scripts["buy"], [sale], pid, kids)
                w1, b1 = children_cpu_s(), machine_busy()
                acc = r["answers"].get(202, 0)
                r["wrk_cpu_us"] = (w1 - w0) * 1e6 / max(acc, 1)  # wrk is the only child reaped
                r["busy"] = (b1[0] - b0[0]) / max(b1[1] - b0[1], 1)
                r["redis_cpu_us"] = (cpu_ticks(rs.pid) - c0) * 1e6 / CLK_TCK / max(acc, 1)
                r.update(redis_delta(i0, redis_info(rport), acc))
                r["accepted_rps"] = acc / r["duration_s"]
                r["server_cpu_us"] = r["cpu_us"] * r["requests"] / max(acc, 1)  # per order
                res[(case, conns)].append(r)
        label = "rep %d/%d" % (rep + 1, REPS)
        ceil["flashgate"].append(redis_ceiling(
            rport, sha, ceiling_args(gw, rport), label + " flashgate's reserve"))
        ceil["flashgate-c1"].append(redis_ceiling(  # 64 in flight on one connection, as the c64 rows
            rport, sha, ceiling_args(gw, rport), label + " flashgate's reserve, one connection", 1))
        ceil["flashgate-batch"].append(redis_ceiling(  # the script the gateway sends, full batches
            rport, batch_sha, ceiling_args(gw, rport, BATCH_CEIL), label + " flashgate's batch",
            pipeline=4, per_call=BATCH_CEIL))
        ceil["peer"].append(redis_ceiling(
            rport, peer_sha, ["2", "{peer:ceil}:left", "{peer:ceil}:users", "u__rand_int__"],
            label + " the peer's script"))
    for g in gws.values():
        stop(g.proc)
    for p, _ in peers.values():
        stop(p)
    stop(rs)
    return res, ceil


BATCH_CEIL = 32  # reserves a call in the batch ceiling: about a c64 loop iteration's


def ceiling_args(gw, rport, per_call=0):
    """The reserve's keys and arguments for redis-benchmark, on a fresh sale written by the
    gateway: like each gateway row, which starts a fresh sale, so the script works on hashes
    of the same sizes (not one sale whose hashes grow to 600k orders over the rounds), with a sale id, user and order id of about the gateway's
    lengths (acc-ceil-N / acc-redis-N; u + 12 digits / wrk-0-N; o + 12 digits / 13 chars)."""
    sale = gw.new_sale("acc-ceil", HUGE)
    k = "{sale:%s}:" % sale
    if not redis_cmd(rport, "HGET", k + "meta", "left"):
        raise RuntimeError("the gateway did not write %smeta into Redis" % k)
    one = ["u__rand_int__", "1", "", "o__rand_int__"]  # each __rand_int__ is drawn anew
    return ["4", k + "meta", k + "users", k + "orders", k + "idem"] + one * max(per_call, 1)


def peer_script():
    """The peer's script text, from bench/lua/peer.lua (between [[ and ]])."""
    src = open(os.path.join(SRC, "bench", "lua", "peer.lua")).read()
    m = re.search(r"local SCRIPT = \[\[\n(.*?)\]\]", src, re.S)
    if not m:
        raise RuntimeError("bench/lua/peer.lua: no SCRIPT = [[...]]")
    return m.group(1)


# ---------------------------------------------------------------- main

def main():
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    bindir = find_bin()
    sys.modules["bench"] = sys.modules[__name__]  # bench/settle.py shares PROCS and the helpers
    for tool in ("nginx", "wrk", "redis-server", "redis-benchmark", "cc"):
        if not shutil.which(tool):
            sys.exit("bench: %s not found (deploy/ installs the dependencies)" % tool)
    for mod in ("ndk_http_module.so", "ngx_http_lua_module.so"):  # the nginx+Lua peer
        if not os.path.exists("/usr/lib/nginx/modules/" + mod):
            sys.exit("bench: /usr/lib/nginx/modules/%s not found (libnginx-mod-http-lua; "
                     "deploy/install-deps.sh installs it)" % mod)
    tmp = tempfile.mkdtemp(prefix="flashgate-bench-")
    scripts = {"buy": os.path.join(SRC, "loadtest", "wrk", "buy.lua"),
               "sold_out": os.path.join(SRC, "loadtest", "wrk", "sold_out.lua"),
               "rate": os.path.join(tmp, "rate_limited.lua"),
               "nginx": os.path.join(tmp, "nginx.lua")}
    open(scripts["rate"], "w").write(RATE_LIMITED_LUA)
    open(scripts["nginx"], "w").write(NGINX_LUA)
    t0 = time.time()
    load0 = open("/proc/loadavg").read().split()[:3]
    only = os.environ.get("BENCH_ONLY", "")
    try:
        if only == "redis":  # the Redis section alone (a shorter loop while working on it)
            rres, ceil = bench_redis(tmp, bindir, scripts)
        elif only == "settle-stmt":  # the sink's statement, part by part (~1 min)
            stmt = bench_settle_stmt(tmp, bindir)
        elif only in ("settle", "settle-e2e"):  # settlement alone (~2 min; quick: ~30 s)
            st = bench_settle(tmp, bindir, scripts)
            sk = bench_settle_sinks(tmp, bindir, scripts) if only == "settle" else None
        elif only == "http":  # the buy path against nginx alone (~3 min; quick: ~15 s)
            cases, res, ol, sc = bench_http(tmp, bindir, scripts)
            st = sk = rres = ceil = None
            spool = ""
        else:
            cases, res, ol, sc = bench_http(tmp, bindir, scripts)
            st = bench_settle(tmp, bindir, scripts)
            sk = bench_settle_sinks(tmp, bindir, scripts)
            rres, ceil = bench_redis(tmp, bindir, scripts)
            spool = bench_spool(bindir)
    finally:
        stop_all()
        if os.environ.get("BENCH_KEEP", "0") in ("", "0"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log("kept " + tmp)
    load1 = open("/proc/loadavg").read().split()[:3]
    if only == "redis":
        report_head(bindir, load0, load1)
        report_redis(rres, ceil)
        print("elapsed %.0f s" % (time.time() - t0))
        return
    if only == "settle-stmt":
        report_head(bindir, load0, load1)
        print("== The PostgreSQL sink's batch insert, part by part (bench/settle_stmt.c) ==")
        print(stmt)
        print("elapsed %.0f s" % (time.time() - t0))
        return
    if only in ("settle", "settle-e2e"):
        report_head(bindir, load0, load1)
        report_settle(st, sk)
        print("elapsed %.0f s" % (time.time() - t0))
        return
    report(bindir, cases, res, ol, st, rres, ceil, load0, load1, time.time() - t0, spool, sc, sk)


def report_redis(rres, ceil):
    """Issues 4 and 10: the Redis backend beside memory, the nginx+Lua peer and the ceiling."""
    print("== Issues 4, 10: accepted orders, Redis backend vs memory, the nginx+Lua peer "
          "(bench/lua/peer.lua) and redis-benchmark's EVALSHA ceiling (one redis-server) ==")
    cf = {k: {f: med([c[f] for c in v]) for f in ("rps", "redis_cpu_us", "script_us", "per_read",
                                                   "per_call")}
          for k, v in ceil.items() if v}
    rows = []
    m = {}
    for conns in CONNS:
        for case, kind, backend in REDIS_CASES:
            rs = rres[(case, conns)]
            fig = {f: med([r[f] for r in rs]) for f in
                   ("accepted_rps", "p50", "p99", "server_cpu_us", "redis_cpu_us", "script_us",
                    "per_read", "per_call", "wrk_cpu_us", "busy")}
            m[(kind, backend, conns)] = fig
            red = backend.startswith("redis")
            rows.append([case, conns, fmt(fig["accepted_rps"], 0), fmt(fig["p50"], 2),
                         fmt(fig["p99"], 2), fmt(fig["server_cpu_us"], 1),
                         "%s-%s" % (fmt(min(r["server_cpu_us"] for r in rs)),
                                    fmt(max(r["server_cpu_us"] for r in rs))),
                         fmt(fig["redis_cpu_us"], 1) if red else "-",
                         fmt(fig["script_us"], 2) if red else "-",
                         fmt(fig["per_read"], 1) if red else "-",
                         fmt(fig["per_call"], 1) if red else "-",
                         fmt(fig["wrk_cpu_us"], 1), "%.0f%%" % (100 * fig["busy"]),
                         "%.1f%%" % (100 * med([share(r, 202) for r in rs]))])
    for k, label in (("flashgate", "redis-benchmark -P 64, flashgate's reserve"),
                     ("flashgate-c1", "redis-benchmark -P 64 -c 1, flashgate's reserve"),
                     ("flashgate-batch", "redis-benchmark -P 4, flashgate's batch of %d" % BATCH_CEIL),
                     ("peer", "redis-benchmark -P 64, the peer's script")):
        if k not in cf:
            continue
        rows.append([label, "", fmt(cf[k]["rps"], 0), "-", "-", "-", "", fmt(cf[k]["redis_cpu_us"], 1),
                     fmt(cf[k]["script_us"], 2), fmt(cf[k]["per_read"], 1),
                     fmt(cf[k]["per_call"], 1), "-", "-", "-"])
    table(["run", "conns", "orders/s", "p50 ms", "p99 ms", "server cpu us/order", "(min-max)",
           "redis cpu us/reserve", "script us/reserve", "reserves/read", "reserves/call",
           "wrk cpu us/order", "busy", "202 share"], rows)
    mix_notes({("acce " + c, n): rs for (c, n), rs in rres.items()}, 202)
    print("  flashgate rows but 'defaults' run with %s, as the peer (a 1 s timeout, no "
          "adaptive limit); 'defaults' = 50 ms Redis timeout, breaker and Gradient2 limit on "
          "(a 503 there is the overload control refusing: Redis or the machine stalled)"
          % " ".join(PEER_LIKE))
    print("  server cpu = the gateway's (all threads) or nginx's (master+worker) CPU / 202 answers; "
          "redis cpu = redis-server's CPU / 202 answers (or / reserves for the ceiling); script us "
          "= INFO commandstats usec of EVALSHA+EVAL / reserves (the scripts alone, no I/O); "
          "reserves/read = reserves per read(2) of redis-server (its batching); reserves/call = "
          "per script call (the gateway's batch script: inventory/inv_redis_batch.c); wrk cpu = "
          "wrk's CPU / 202 answers; busy = the machine's CPUs busy over the run (/proc/stat, "
          "all processes: under 100%% the three processes wait on each other or on the "
          "scheduler, see bench/README.md \"How to read the figures\"); ceiling: "
          "redis-benchmark -n %d -P 64 -r 100000000 (50 connections; -c 1: one connection, 64 "
          "in flight, as the gateway's one connection at 64 wrk connections; the batch row: %d "
          "reserves a call, 4 calls in flight a connection), distinct users, "
          "each round on a fresh sale as each gateway row, median of %d"
          % (CEILING_N, BATCH_CEIL, len(ceil["flashgate"])))
    print("  targets:")
    for conns in CONNS:
        gr, gm, pr = m[("gw", "redis", conns)], m[("gw", "memory", conns)], m[("peer", "redis", conns)]
        checks = [
            ("gateway cpu per Redis order <= 1.3x per memory order",
             gr["server_cpu_us"] / gm["server_cpu_us"] if gm["server_cpu_us"] else float("nan"),
             1.3, "%.2fx (%s / %s us)" % (gr["server_cpu_us"] / gm["server_cpu_us"],
                                          fmt(gr["server_cpu_us"]), fmt(gm["server_cpu_us"]))),
            ("redis cpu per reserve via the gateway <= 1.1x the -P 64 ceiling's",
             gr["redis_cpu_us"] / cf["flashgate"]["redis_cpu_us"], 1.1,
             "%.2fx (%s / %s us)" % (gr["redis_cpu_us"] / cf["flashgate"]["redis_cpu_us"],
                                     fmt(gr["redis_cpu_us"]), fmt(cf["flashgate"]["redis_cpu_us"]))),
            ("orders/s >= the nginx+Lua peer's (Redis)",
             pr["accepted_rps"] / gr["accepted_rps"] if gr["accepted_rps"] else float("nan"),
             1.0, "%s vs %s/s (%.2fx)" % (fmt(gr["accepted_rps"], 0), fmt(pr["accepted_rps"], 0),
                                          gr["accepted_rps"] / pr["accepted_rps"]
                                          if pr["accepted_rps"] else float("nan"))),
        ]
        for what, x, t, txt in checks:
            print("    c%-4d %-68s %-34s %s" % (conns, what, txt,
                                                "met" if x == x and x <= t else "NOT MET"))
        c1 = cf["flashgate-c1"]["redis_cpu_us"]
        print("    c%-4d %-68s %.2fx (%s / %s us)" % (
            conns, "(not a target) redis cpu per reserve vs the -P 64 -c 1 ceiling's", gr["redis_cpu_us"] / c1,
            fmt(gr["redis_cpu_us"]), fmt(c1)))
        cb = cf.get("flashgate-batch", {}).get("redis_cpu_us", float("nan"))
        print("    c%-4d %-68s %.2fx (%s / %s us; %s reserves a call through the gateway)" % (
            conns, "(not a target) vs the batch script's ceiling (%d a call)" % BATCH_CEIL,
            gr["redis_cpu_us"] / cb, fmt(gr["redis_cpu_us"]), fmt(cb), fmt(gr["per_call"], 1)))
    print()


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def paired(res, case, peer, conns):
    """The median over the runs of case's CPU per request / its peer's in the same
    round (adjacent runs: the machine drifts between rounds, bench/README.md
    "The machine")."""
    rs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(res[(case, conns)], res[(peer, conns)])
          if a["cpu_us"] == a["cpu_us"] and b["cpu_us"] == b["cpu_us"] and b["cpu_us"]]
    return med(rs) if rs else float("nan")


def mix_notes(res, code=None):
    """Prints the answer mix of every run whose expected status is under 99%."""
    want = {"sold": 410, "rate": 429, "acce": 202}
    for (case, conns), rs in res.items():
        c = code or want.get(case[:4])
        for i, r in enumerate(rs):
            if c and share(r, c) < 0.99:
                print("  answers of %s c%d run %d: %s" % (case, conns, i + 1, " ".join(
                    "%s=%d" % (k or "other", v) for k, v in sorted(r["answers"].items()))))


def bench_spool(bindir):
    """The spool's own figures (moved here from its unit test): append rate and
    what a segment roll costs an appender (bench/bench_spool.c)."""
    exe = os.path.join(bindir, "flashgate-bench-spool")
    if not os.access(exe, os.X_OK):
        return "flashgate-bench-spool not built in %s" % bindir
    log("spool append bench")
    p = subprocess.run([exe, "1" if QUICK else str(REPS)], capture_output=True, text=True,
                       timeout=300)
    return p.stdout.rstrip() if p.returncode == 0 else "failed: %s" % p.stderr.strip()


def bench_settle_sinks(tmp, bindir, scripts):
    """Settlement per sink, SQLite and PostgreSQL (bench/settle.py)."""
    import settle
    try:
        return settle.bench_settle_sinks(tmp, bindir, scripts)
    except (RuntimeError, OSError) as e:
        log("settlement sinks: %s" % e)
        return {"error": str(e)}


def bench_settle_stmt(tmp, bindir):
    """What each part of the sink's insert costs the server (bench/settle.py)."""
    import settle
    return settle.bench_stmt(tmp, bindir)


def report_settle(st, sk):
    """Issues 3 and 10: the live pipeline's latency, then each sink draining a backlog."""
    import settle
    print("== Issues 3, 10: spool + embedded Kafka + flashgate-settle into SQLite (wrk -c64, "
          "%d units per run, median of %d) ==" % (SETTLE_ORDERS, len(st["runs"])))
    if st.get("settled"):
        rs = [r for r in st["runs"] if "settled" in r]
        table(["accepted", "settled rows", "accepted orders/s", "settlement orders/s",
               "e2e p50 ms", "e2e p99 ms", "(p99 min-max)", "e2e max ms", "settle cpu us/order"],
              [[fmt(st["accepted"], 0), fmt(st["settled"], 0), fmt(st["accept_rate"], 0),
                fmt(st["settle_rate"], 0), fmt(st["e2e_p50"], 0), fmt(st["e2e_p99"], 0),
                "%d-%d" % (min(r["e2e_p99"] for r in rs), max(r["e2e_p99"] for r in rs)),
                fmt(st["e2e_max"], 0), fmt(st["settle_cpu_us"], 1)]])
        print("  rates from orders.db: rows / span of accepted_at, rows / span of settled_at; "
              "e2e = settled_at - accepted_at (ms clock); all on the same 2 cores as wrk; "
              "target e2e p99 < 300 ms")
        if st["rows"] < st["accepted"]:
            print("  WARNING: only %d of %d accepted orders reached the database within 60 s"
                  % (st["rows"], st["accepted"]))
    else:
        print("  no settled rows (accepted %d): see flashgate-settle's log" % st["accepted"])
    print()
    if sk is not None:
        settle.report(sk)
        print()


def report_head(bindir, load0, load1):
    print("flashgate bench, %s%s" % (time.strftime("%Y-%m-%d %H:%M %Z"),
                                    "  (BENCH_QUICK smoke pass)" if QUICK else ""))
    print("machine: %d cores (%s), kernel %s; load average %s at start, %s at end"
          % (os.cpu_count(), cpu_model(), os.uname().release, " ".join(load0), " ".join(load1)))
    print("NOTE: the machine is shared and noisy; compare ratios within this run, not absolutes.")
    print("versions: %s; %s; %s; %s" % (
        version([os.path.join(bindir, "flashgate"), "--version"]), version(["nginx", "-v"]),
        version(["wrk", "--version"]).split(" Copyright")[0], version(["redis-server", "--version"]).split(" sha=")[0]))
    print("binaries: %s" % bindir)
    print("setup: wrk -t1 on loopback, %d s per run, median of %d runs (runs interleaved); "
          "flashgate --threads 1 (wrk uses the other core), nginx 1 worker; "
          "server CPU = utime+stime of the server process (all threads; nginx master+worker) "
          "over the run / requests completed" % (SECONDS, REPS))
    print("identity: every flashgate here runs %s (the verified accept path's cost: "
          "bench/identity.py)" % IDENTITY_NOTE)
    print()


def report(bindir, cases, res, ol, st, rres, ceil, load0, load1, elapsed, spool="", sc=None,
           sk=None):
    report_head(bindir, load0, load1)
    print("== buy path vs nginx `return 200` (closed loop, wrk) ==")
    rows = []
    # the accepted case's target
    target = {"sold out (410)": 1.0, "rate limited (429)": 1.0, "accepted, spool only (202)": 1.5}
    for conns in CONNS:
        ngx = med([r["cpu_us"] for r in res[("nginx return 200", conns)]])
        for case, code in cases:
            rs = res[(case, conns)]
            cpu = med([r["cpu_us"] for r in rs])
            one = cpu / ngx if ngx == ngx and ngx else float("nan")
            ratio = paired(res, case, PEER[case], conns) if case in PEER else one
            t = target.get(case)
            verdict = "" if t is None else ("%s (<= %gx)" % ("ok" if ratio <= t else "MISS", t))
            shr = "" if code is None else "%.1f%%" % (100 * med([share(r, code) for r in rs]))
            rows.append([case, conns, fmt(med([r["rps"] for r in rs]), 0),
                         fmt(med([r["p50"] for r in rs]), 2), fmt(med([r["p99"] for r in rs]), 2),
                         fmt(cpu, 1), "%s-%s" % (fmt(min(r["cpu_us"] for r in rs)),
                                                 fmt(max(r["cpu_us"] for r in rs))),
                         "%.2f" % ratio, "%.2f" % one, shr, verdict])
    table(["case", "conns", "req/s", "p50 ms", "p99 ms", "cpu us/req", "(min-max)", "x nginx",
           "x 1 body", "expected", "target"], rows)
    mix_notes(res)
    errs = ["%s c%d: %s" % (c, n, r["socket_errors"]) for (c, n), rs in res.items() for r in rs
            if r["socket_errors"]]
    for e in errs[:6]:
        print("  wrk socket errors: " + e)
    print("  'x nginx' = the median over the runs of the case's CPU per request / nginx's in "
          "the run just before it, answering the same wrk script's requests (nginx, ...'s "
          "requests; for those rows: / nginx return 200); 'x 1 body' = the case's median / "
          "nginx return 200's, a POST with one JSON body sent again and again (the figure "
          "a wrk script that formats each request costs wrk more, and "
          "nginx's own CPU per request rose with it, ~1.1x). 'expected' = share of answers "
          "with the case's status (median); the relay case's CPU includes the producer, the "
          "embedded broker and the gateway's own consumer threads (same process).")
    if any(c == FLOOR for c, _ in cases):
        print("  %s = flashgate-bench-mhd-floor (bench/mhd_floor.c): libmicrohttpd alone, set "
              "up as flashgate's admin listener is, "
              "answering the bytes of flashgate's 410 and nothing else: the before-row of "
              "the listener's replacement." % FLOOR)
        for conns in CONNS:
            print("  c%d: libmicrohttpd floor %.2fx nginx" % (conns, paired(res, FLOOR, NGX_SO,
                                                                        conns)))
    if any(c == UV_FLOOR for c, _ in cases):
        print("  %s = flashgate-bench-uv-floor with FLOOR_EPOLL=1 (bench/uv_floor.c): one "
              "epoll loop, edge-triggered, a struct per connection with an 8 KiB read buffer, "
              "llhttp 8.1, keep-alive, recv(2) and send(2): the same bytes, nothing else; the "
              "shape of the public listener (gateway/edge/gw_h1.c, gw_h1_run), so sold out minus "
              "the floor is flashgate's own work per answer, the floor minus nginx the "
              "listener's." % UV_FLOOR)
        for conns in CONNS:
            fl = med([r["cpu_us"] for r in res[(UV_FLOOR, conns)]])
            so = med([r["cpu_us"] for r in res[("sold out (410)", conns)]])
            ngx = med([r["cpu_us"] for r in res[(NGX_SO, conns)]])
            if fl == fl and so == so and ngx == ngx and ngx:
                print("  c%d: epoll+llhttp floor %.2fx nginx; flashgate's own work on a "
                      "sold-out answer %.1f us (%.2fx nginx's whole answer)"
                      % (conns, paired(res, UV_FLOOR, NGX_SO, conns), so - fl, (so - fl) / ngx))
    print()
    print("== open loop (flashgate-load) next to closed loop (wrk), accepted orders, "
          "spool only, 64 connections ==")
    wrk64 = res[("accepted, spool only (202)", 64)]
    rows = [["closed loop: wrk, as fast as answers come back", fmt(med([r["rps"] for r in wrk64]), 0),
             fmt(med([r["p50"] for r in wrk64]), 2), fmt(med([r["p99"] for r in wrk64]), 2), "-",
             fmt(med([r["cpu_us"] for r in wrk64]), 1)]]
    if ol:
        rows.append(["open loop: flashgate-load, fixed %d/s for %d s" % (ol["rate"], ol["secs"]),
                     fmt(ol["requests"] / ol["secs"], 0), fmt(ol["p50"], 2), fmt(ol["p99"], 2),
                     fmt(ol["lag99"], 2), fmt(ol["cpu_us"], 1)])
    table(["run", "req/s", "p50 ms", "p99 ms", "send lag p99", "cpu us/req"], rows)
    if ol:
        print("  open-loop answers: %s; latency from the scheduled send time (no coordinated "
              "omission), 1 run" % json.dumps(ol["answers"], sort_keys=True))
    else:
        print("  open loop: flashgate-load gave no report")
    print()
    if sc:
        print("== the buy path while Prometheus scrapes GET /metrics once a second "
              "(accepted orders, spool only, wrk -c64, runs interleaved) ==")
        rows = []
        for mode in ("off", "on"):
            rs = sc[mode]
            rows.append(["scraper " + mode, fmt(med([r["rps"] for r in rs]), 0),
                         fmt(med([r["p50"] for r in rs]), 2), fmt(med([r["p99"] for r in rs]), 2),
                         fmt(med([r["cpu_us"] for r in rs]), 2),
                         "%s-%s" % (fmt(min(r["cpu_us"] for r in rs), 2),
                                    fmt(max(r["cpu_us"] for r in rs), 2)),
                         "%.1f%%" % (100 * med([share(r, 202) for r in rs]))])
        table(["run", "req/s", "p50 ms", "p99 ms", "cpu us/req", "(min-max)", "202 share"], rows)
        off = med([r["cpu_us"] for r in sc["off"]])
        on = med([r["cpu_us"] for r in sc["on"]])
        rps = med([r["rps"] for r in sc["on"]])
        print("  cpu per request with / without the scraper: %.3fx; %d scrapes, median %.2f ms each; "
              "one scrape costs the gateway %.0f us of CPU (%d bytes of text), i.e. %.3f us per "
              "request at %s req/s" % (on / off if off else float("nan"), sc["scrapes"],
                                       med(sc["scrape_ms"]), sc["scrape_cpu_us"], sc["bytes"],
                                       sc["scrape_cpu_us"] / rps if rps else float("nan"),
                                       fmt(rps, 0)))
        print("  (the workers only bump their own counters; a scrape sums them on the admin "
              "thread, so the difference is within run-to-run noise)")
        print()
    if st is None:  # BENCH_ONLY=http
        print("elapsed %.0f s" % elapsed)
        return
    report_settle(st, sk)
    report_redis(rres, ceil)
    print("== Spool: append rate and the cost of a segment roll (bench/bench_spool.c) ==")
    print(spool)
    print("  rolls_inline = rolls that waited for a segment to be created (appends outran the "
          "spool's preparer thread); the others swapped in a spare made ahead")
    print()
    print("elapsed %.0f s" % elapsed)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
    except Exception:
        stop_all()
        raise
