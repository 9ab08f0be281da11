"""Graceful operations with real processes: SIGTERM drains, SIGHUP reloads,
sd_notify readiness (the test owns the NOTIFY_SOCKET, as systemd would).

A. SIGTERM with server.drain_grace=1.5s and fsync durability, a client
   buying all along: READY=1 arrives at start; after the signal STOPPING=1
   arrives and /readyz answers 503 not_ready "draining" at once (counted as
   not_ready in the summary, not as unavailable) while buys keep being
   accepted on new connections during the grace (after it, at most a 503
   "shutting down" with Connection: close); then the process exits 0
   within grace + drain_timeout, and every 202 the client got is in the spool.
B. The bound: with the embedded broker taken down (a relay flush that cannot
   finish) and server.drain_timeout=1s, SIGTERM makes the process exit with
   status 1 well before the relay's own 5 s flush timeout, logging
   "drain timed out"; the unrelayed order is still in the spool.
C. SIGHUP: the --config file changes limits.user_rps/user_burst and
   log.level (the limits are applied: /admin/v1/config shows them from the
   file, the new burst refuses a third quick buy; log.level, also set by a
   flag, keeps the flag's value) and server.max_sales (not applied, logged
   as needing a restart); a limit changed through the admin API and not in
   the file keeps its runtime value; RELOADING=1 then READY=1 reach systemd;
   an invalid file changes nothing and the gateway keeps serving.
"""
import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-spool")


class Notify:
    """The service manager's end of sd_notify: a datagram socket we own."""

    def __init__(self, d):
        self.path = os.path.join(d, "notify.sock")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.msgs = []

    def wait(self, word, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(word in m.split("\n") for m in self.msgs):
                return True
            self.s.settimeout(max(0.05, deadline - time.time()))
            try:
                self.msgs.append(self.s.recv(4096).decode())
            except socket.timeout:
                pass
        return False

    def close(self):
        self.s.close()


def wait_log(g, text, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in g.logs(200000):
            return True
        time.sleep(0.05)
    return False


def config_value(g, key):
    c = g.admin("GET", "/admin/v1/config").json[key]
    return c["value"], c["source"]


def readyz_503s(g):
    """[(code, count)] of the public /readyz's 503 answers, from /metrics."""
    m = g.admin("GET", "/metrics").raw.decode()
    return [(c, int(n)) for c, n in re.findall(
        r'flashgate_responses_total\{route="readyz",status="503",code="([a-z_]+)"\} (\d+)', m)]


NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"]

# ---- A: SIGTERM drains ----
g = Gateway("--kafka-brokers", "none", "--durability", "fsync", "--set",
            "server.drain_grace=1500ms", *NOLIMITS)
n = Notify(g.tmp)
g.env["NOTIFY_SOCKET"] = n.path
try:
    g.start()
    check(n.wait("READY=1"), "[A] READY=1 sent to NOTIFY_SOCKET at start (%r)" % n.msgs)
    g.put_sale("d", stock=100000, per_user_limit=1)
    accepted, other = [], []
    stop = threading.Event()

    def buyer(t):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = g.buy("d", "u%d-%d" % (t, i))
            except OSError:
                time.sleep(0.01)   # listener closed: what a load balancer routes around
                continue
            (accepted if r.status == 202 else other).append(
                (time.time(), r.status, r.json and r.json.get("order_id"),
                 (r.json or {}).get("message"), r.headers.get("connection")))
    ths = [threading.Thread(target=buyer, args=(t,)) for t in range(4)]
    for t in ths:
        t.start()
    time.sleep(0.5)
    before = sum(n for _, n in readyz_503s(g))  # answered while it started
    t_sig = time.time()
    g.proc.send_signal(signal.SIGTERM)
    check(n.wait("STOPPING=1", 5), "[A] STOPPING=1 sent on SIGTERM (%r)" % n.msgs)
    r = g.get("/readyz")
    eq((r.status, r.json and r.json.get("error")), (503, "not_ready"),
       "[A] /readyz 503 not_ready during the grace")
    check("draining" in (r.json or {}).get("message", ""), "[A] /readyz says draining (%r)" % r.json)
    probes = 1
    for _ in range(4):
        probes += g.get("/readyz").status == 503
    eq(readyz_503s(g), [("not_ready", before + probes)],
       "[A] /metrics: the probes' 503s are not_ready, none unavailable")
    time.sleep(0.5)
    during = [a for a in accepted if t_sig + 0.1 < a[0] < t_sig + 1.2]
    check(len(during) > 0, "[A] buys still accepted during the grace (%d)" % len(during))
    rb = g.buy("d", "fresh-connection-user")
    eq(rb.status, 202, "[A] a new connection during the grace is served")
    try:
        rc = g.proc.wait(1.5 + 10 + 5)
    except Exception:
        rc = None
    t_exit = time.time()
    stop.set()
    for t in ths:
        t.join(10)
    eq(rc, 0, "[A] exit status 0 after the drain")
    check(t_exit - t_sig >= 1.4, "[A] it served through the grace (%.2f s)" % (t_exit - t_sig))
    check(wait_log(g, "msg=drained"), "[A] logged drained")
    # After the grace, a request on a connection opened before may still get
    # one 503 "shutting down" (Retry-After, Connection: close), nothing else.
    bad = [a for a in other if not (a[1] == 503 and a[3] == "gateway is shutting down" and
                                    a[4] == "close" and a[0] > t_sig + 1.4)]
    eq(bad, [], "[A] no answer other than 202, or 503 shutting down after the grace")
    # The summary logged at the stop (taken when the grace ends) counts the
    # probes' expected 503s as not_ready; its unavailable= can only be buyers'
    # 503 "shutting down" (answered from the end of the grace on).
    logs = g.logs(2000000)
    summed = {k: sum(int(v) for v in re.findall(r"msg=summary .*?\b%s=(\d+)" % k, logs))
              for k in ("unavailable", "not_ready")}
    eq(summed["not_ready"], before + probes, "[A] the summary counts the probes' 503s as not_ready")
    check(summed["unavailable"] <= sum(1 for a in other if a[1] == 503),
          "[A] and not as unavailable (%r)" % summed)
    ids = set(g.spool_ids())
    lost = [a for a in accepted if a[2] not in ids] + ([] if rb.json["order_id"] in ids else [rb])
    eq(len(lost), 0, "[A] every 202 (%d) is in the spool" % (len(accepted) + 1))
    g.proc = None
finally:
    n.close()
    g.cleanup()

# ---- B: the drain is bounded ----
g = Gateway("--set", "server.drain_timeout=1s", "--enable-debug-routes", *NOLIMITS)
try:
    g.start()
    g.put_sale("b", stock=10)
    r = g.admin("PUT", "/admin/v1/debug/broker", body={"down": True})
    eq(r.status, 200, "[B] embedded broker taken down")
    r = g.buy("b", "stuck")
    eq(r.status, 202, "[B] an order accepted while the broker is down")
    oid = r.json["order_id"]
    t0 = time.time()
    g.proc.send_signal(signal.SIGTERM)
    try:
        rc = g.proc.wait(15)
    except Exception:
        rc = None
    dt = time.time() - t0
    eq(rc, 1, "[B] exit status 1 when the drain does not finish in time")
    check(dt < 4.5, "[B] exited within drain_timeout, before the relay's 5 s flush (%.2f s)" % dt)
    check("drain timed out" in g.logs(200000), "[B] logged drain timed out")
    check(oid in g.spool_ids(), "[B] the unrelayed order is still in the spool")
    g.proc = None
finally:
    g.cleanup()

# ---- C: SIGHUP reloads ----
g = Gateway("--kafka-brokers", "none")
conf = os.path.join(g.tmp, "flashgate.json")


def write_conf(d):
    with open(conf + ".tmp", "w") as f:
        json.dump(d, f)
    os.replace(conf + ".tmp", conf)


base = {"limits": {"user_rps": 1, "user_burst": 5, "ip_rps": 0}, "log": {"level": "info"}}
write_conf(base)
g.args += ["--config", conf]
n = Notify(g.tmp)
g.env["NOTIFY_SOCKET"] = n.path
try:
    g.start()
    check(n.wait("READY=1"), "[C] READY=1 at start")
    n.msgs.clear()
    g.put_sale("h", stock=1000, per_user_limit=100)
    eq(config_value(g, "limits.user_burst"), ("5", "file"), "[C] user_burst from the file")
    r = g.admin("PATCH", "/admin/v1/limits", body={"global_rps": 7, "global_burst": 70})
    eq(r.status, 200, "[C] a runtime change through the admin API")
    write_conf({"limits": {"user_rps": 0.5, "user_burst": 2, "ip_rps": 0},
                "log": {"level": "debug"}, "server": {"max_sales": 50}})
    g.proc.send_signal(signal.SIGHUP)
    check(wait_log(g, "configuration reloaded"), "[C] logged configuration reloaded")
    check(n.wait("RELOADING=1", 5) and n.wait("READY=1", 5), "[C] RELOADING=1 then READY=1 (%r)"
          % n.msgs)
    eq(config_value(g, "limits.user_rps"), ("0.5", "file"), "[C] user_rps applied")
    eq(config_value(g, "limits.user_burst"), ("2", "file"), "[C] user_burst applied")
    eq(config_value(g, "log.level"), ("info", "flag"),
       "[C] log.level set by a flag (the harness's --log-level) keeps it: flags win over the file")
    eq(config_value(g, "server.max_sales")[0], "1024", "[C] server.max_sales not applied")
    eq(config_value(g, "limits.global_rps")[0], "7",
       "[C] a runtime change not in the file is kept")
    check("need a restart" in g.logs(200000) and "keys=server.max_sales" in g.logs(200000),
          "[C] server.max_sales logged as needing a restart")
    codes = [g.buy("h", "same-user").status for _ in range(3)]
    eq(codes, [202, 202, 429], "[C] the reloaded per-user burst (2) is in force")
    write_conf({"limits": {"user_rps": -1}})
    g.proc.send_signal(signal.SIGHUP)
    check(wait_log(g, "reload refused"), "[C] an invalid file is refused")
    eq(config_value(g, "limits.user_rps"), ("0.5", "file"), "[C] ... and changes nothing")
    eq(g.get("/readyz").status, 200, "[C] the gateway still serves after a refused reload")
    check(g.alive(), "[C] still running")
finally:
    n.close()
    g.cleanup()
finish()
