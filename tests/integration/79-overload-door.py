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
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-load")

CG_ROOT = "/sys/fs/cgroup/cpu"
RATE = 4000            # arrivals/s: several times what the capped gateway serves (~1.5k/s)
LOAD_S = 3
STOCK = 300


class Cgroup:
    """5% of one core: the kernel's smallest quota is 1 ms, so 1 ms per 20 ms."""

    def __init__(self, name):
        if not os.path.isdir(CG_ROOT):
            raise RuntimeError("cgroup v1 cpu controller not mounted at %s" % CG_ROOT)
        self.path = os.path.join(CG_ROOT, name)
        os.mkdir(self.path)
        self._w("cpu.cfs_period_us", 20000)
        self._w("cpu.cfs_quota_us", 1000)

    def _w(self, f, v):
        with open(os.path.join(self.path, f), "w") as fh:
            fh.write("%d\n" % v)

    def add(self, pid):
        self._w("cgroup.procs", pid)

    def remove(self):
        try:
            for pid in open(os.path.join(self.path, "cgroup.procs")).read().split():
                with open(os.path.join(CG_ROOT, "cgroup.procs"), "w") as fh:
                    fh.write(pid + "\n")
            os.rmdir(self.path)
        except OSError as e:
            print("warning: cgroup %s not removed: %s" % (self.path, e), file=sys.stderr)


def crowd(g, sale, tag):
    """Runs the crowd for LOAD_S while probing health and the admin API; returns what it saw."""
    scen = {
        "name": "it79door-" + tag, "seed": 791, "duration_s": LOAD_S, "drain_s": 2,
        "targets": ["http://127.0.0.1:%d" % g.port],
        "admin": "http://127.0.0.1:%d" % g.admin_port, "admin_token": g.token,
        "connections": 32, "connection_mode": "open", "connections_max": 1024,
        "give_up_ms": 2000, "request_timeout_ms": 2000,
        "sale": {"id": sale, "create": False},
        "crowd": {"users": 200000, "addresses": 5000, "qty": 1},
        "behaviour": {"max_retries": 0, "poll_max": 0, "settle_wait_s": 0},
        "arrivals": [{"kind": "plateau", "duration_s": LOAD_S, "rate": RATE}],
    }
    path = os.path.join(g.tmp, "scenario-%s.json" % tag)
    with open(path, "w") as f:
        json.dump(scen, f)
    out = os.path.join(g.tmp, "load-" + tag)
    load = subprocess.Popen([os.path.join(BIN, "flashgate-load"), "--scenario", path,
                             "--out", out, "--no-audit", "--no-create", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = {"health": [], "admin": [], "shut_seen": 0}

    def watch():
        while load.poll() is None:
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
            time.sleep(0.2)

    t = threading.Thread(target=watch)
    t.start()
    try:
        lo, _ = load.communicate(timeout=LOAD_S + 40)
    except subprocess.TimeoutExpired:
        load.kill()
        lo, _ = load.communicate()
    t.join(timeout=30)
    check(load.returncode == 0, "flashgate-load ran (%s): rc %s %s" % (tag, load.returncode,
                                                                      lo[-600:]))
    seen["codes"] = json.load(open(os.path.join(out, "report.json")))["figures"]["answers"]
    print("%s: answers %s" % (tag, json.dumps(seen["codes"])))
    return seen


g = Gateway("--kafka-brokers", "none", "--overload-level", "auto",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0",
            "--server-trusted-proxies", "127.0.0.1/32", "--log-level", "warn", threads=1)
cg = None
try:
    g.start()
    # the door needs the admin listener's own /healthz and /readyz: the probe a
    # load balancer should use (the public port refuses while a door is shut)
    eq(request(g.admin_port, "GET", "/healthz").status, 200, "GET /healthz on the admin listener")
    r = request(g.admin_port, "GET", "/readyz")
    eq(r.status, 200, "GET /readyz on the admin listener")
    eq((r.json or {}).get("status"), "ready", "readyz says ready")
    cg = Cgroup.__new__(Cgroup)
    cg.__init__("flashgate-it79door-%d" % os.getpid())
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
          isinstance(o.get("accept_closed_keepalive"), int), "door figures in the stats: %r" % o)
    eq(o.get("accept_paused_workers"), 0, "every door open again after the crowd")
    eq(request(g.port, "GET", "/healthz", timeout=5).status, 200, "public /healthz after the crowd")

    sale = g.admin("GET", "/admin/v1/sales/s79d").json
    left = sale.get("stock_left", sale.get("remaining"))
    acc = int(seen["codes"].get("202", 0))  # qty 1: one unit per 202
    check(acc <= STOCK, "never oversold: %d units accepted of %d" % (acc, STOCK))
    check(isinstance(left, int), "stock_left reported: %r" % sale)
    if isinstance(left, int):
        eq(STOCK - left, acc, "units accepted == what the stock lost")

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
