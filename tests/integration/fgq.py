"""Helpers for the order-queue integration tests: flashgate-settle as a
process, kcat reads of a topic, SQLite and PostgreSQL queries, a real PostgreSQL
server in a temp dir, and a bounded keep-alive buyer.

Everything runs on 127.0.0.1, every wait has a deadline, every process is stopped
by PID. Standard library only (PostgreSQL is queried with psql).
"""
import http.client
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time

import fg  # noqa: E402
from fg import BIN, Server, die_with_parent, free_port

TOPIC = "flashgate.orders"
OUTCOMES = "flashgate.outcomes"


def wait_until(fn, timeout, step=0.1):
    """Call fn until it returns a truthy value or timeout seconds pass; returns
    the last value (falsy on timeout)."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= deadline:
            return v
        time.sleep(step)


def need_tool(name):
    if shutil.which(name) is None:
        print("FAIL: %s not installed (deploy/install-deps.sh installs it)" % name)
        raise SystemExit(1)


def bootstrap(data_dir, timeout=10):
    """The embedded broker's address from <data_dir>/kafka.bootstrap."""
    path = os.path.join(data_dir, "kafka.bootstrap")

    def read():
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""
    b = wait_until(read, timeout)
    if not b:
        raise RuntimeError("no %s" % path)
    return b


class Settle(Server):
    """One flashgate-settle process. The broker address comes from the gateway's
    kafka.bootstrap (re-read by settle when the broker moves)."""

    def __init__(self, gw_data_dir, *args, db=None, tmp=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="fg-settle-")
        self.data_dir = os.path.join(self.tmp, "settle")
        os.makedirs(self.data_dir, exist_ok=True)
        self.gw_data_dir = gw_data_dir
        self.db = db
        self.args = list(args)
        self.proc = None
        self.log_path = os.path.join(self.tmp, "settle.log")

    @property
    def db_path(self):
        return os.path.join(self.data_dir, "orders.db")

    def cmd(self):
        c = [os.path.join(BIN, "flashgate-settle"), "--kafka-brokers",
             "@" + os.path.join(self.gw_data_dir, "kafka.bootstrap"), "--data-dir",
             self.data_dir, "--log-level", "info",
             # a killed member's partitions come back sooner
             "--kafka-properties", "consumer.session.timeout.ms=6000"]
        if self.db:
            c += ["--db", self.db]
        return c + self.args

    def start(self):
        return self.spawn(self.cmd())



def kcat_values(boot, topic=TOPIC, timeout=30):
    """Every message value in the topic, from the beginning to the current end
    (kcat -e), parsed as JSON; None for a value that is not JSON."""
    out = subprocess.run(["kcat", "-C", "-b", boot, "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%s\n"], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("kcat -C %s failed (%d): %s" % (topic, out.returncode, out.stderr[-500:]))
    vals = []
    for line in out.stdout.splitlines():
        if not line:
            continue
        try:
            vals.append(json.loads(line))
        except ValueError:
            vals.append(None)
    return vals


def topic_order_ids(boot, topic=TOPIC):
    """Order ids of the order messages (not cancels) in the topic, repeats kept."""
    return [v["order_id"] for v in kcat_values(boot, topic)
            if isinstance(v, dict) and v.get("type", "order") == "order"]


# ---- SQLite ----

def sqlite_query(path, sql, args=()):
    """Rows of a read-only query; [] when the file or table does not exist yet."""
    if not os.path.exists(path):
        return []
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        con.close()


def sqlite_count(path, where="1=1"):
    rows = sqlite_query(path, "SELECT count(*) FROM orders WHERE " + where)
    return rows[0][0] if rows else 0


# ---- PostgreSQL (as tests/support/pg.sh) ----

def pg_bindir():
    if os.environ.get("FLASHGATE_PG_BIN"):
        return os.environ["FLASHGATE_PG_BIN"]
    for v in (17, 16, 15):
        d = "/usr/lib/postgresql/%d/bin" % v
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            return d
    return None


def _as_user(cmd):
    if os.getuid() == 0:  # initdb and postgres refuse root
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + cmd
    return cmd


class Postgres:
    """A throwaway PostgreSQL server: initdb in a temp dir, unprivileged user,
    127.0.0.1 at a free port, trust auth, stopped by PID."""

    def __init__(self):
        self.bin = pg_bindir()
        self.dir = None
        self.proc = None
        self.port = None

    def start(self, timeout=30):
        self.dir = tempfile.mkdtemp(prefix="fg-pg-")
        if os.getuid() == 0:
            shutil.chown(self.dir, "nobody", "nogroup")
        data = os.path.join(self.dir, "data")
        r = subprocess.run(_as_user([os.path.join(self.bin, "initdb"), "-D", data, "-U", "postgres",
                                     "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("initdb failed: %s" % (r.stdout + r.stderr)[-2000:])
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(_as_user([os.path.join(self.bin, "postgres"), "-D", data, "-k",
                                               self.dir, "-p", str(self.port), "-h", "127.0.0.1",
                                               "-F", "-c", "max_connections=50"]),
                                     stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited: %s" % self.logs())
            return subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1",
                                   "-p", str(self.port)]).returncode == 0
        if not wait_until(ready, timeout):
            raise RuntimeError("postgres not ready: %s" % self.logs())
        return self

    @property
    def url(self):
        return "postgresql://postgres@127.0.0.1:%d/postgres" % self.port

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-2000:]
        except OSError:
            return ""

    def query(self, sql):
        """Rows (lists of strings) of sql run with psql; raises on an error."""
        r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d",
                            self.url, "-c", sql], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("psql %r: %s" % (sql, r.stderr[-500:]))
        return [line.split("\t") for line in r.stdout.splitlines()]

    def count(self, where="true"):
        try:
            return int(self.query("SELECT count(*) FROM orders WHERE " + where)[0][0])
        except RuntimeError as e:
            if "does not exist" in str(e):
                return 0
            raise

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# ---- load ----

def buyer(port, sale, users, accepted, counts, stop=None, lock=None):
    """One keep-alive client buying once for each user in users; appends the order
    id of every 202 to accepted and counts statuses. Stops on stop.is_set() or when
    the gateway goes away (a connection error is counted, not raised)."""
    lock = lock or threading.Lock()
    conn = None
    for u in users:
        if stop is not None and stop.is_set():
            break
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/sales/%s/orders" % sale, body=json.dumps({"user_id": u}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            with lock:
                counts[r.status] = counts.get(r.status, 0) + 1
                if r.status == 202:
                    accepted.append(json.loads(data)["order_id"])
        except (OSError, http.client.HTTPException) as e:
            with lock:
                k = "error " + type(e).__name__
                counts[k] = counts.get(k, 0) + 1
            return


def burst(port, sale, users, clients=4, stop=None):
    """Buy once for every user, spread over `clients` keep-alive connections;
    returns (accepted order ids, status counts)."""
    accepted, counts, lock = [], {}, threading.Lock()
    ts = [threading.Thread(target=buyer, args=(port, sale, users[i::clients], accepted, counts,
                                               stop, lock)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return accepted, counts


def burst_async(port, sale, users, clients=4):
    """Like burst, in the background: returns (threads, accepted, counts, stop)."""
    accepted, counts, lock, stop = [], {}, threading.Lock(), threading.Event()
    ts = [threading.Thread(target=buyer, args=(port, sale, users[i::clients], accepted, counts,
                                               stop, lock)) for i in range(clients)]
    for t in ts:
        t.start()
    return ts, accepted, counts, stop


def statuses(gw, ids, timeout=10):
    """{order_id: status} from GET /v1/orders/{id}?token= over one keep-alive
    connection to gateway gw (its data dir holds the status key)."""
    out = {}
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    try:
        for i in ids:
            conn.request("GET", "/v1/orders/%s?token=%s" % (i, fg.order_token(gw.data_dir, i)))
            r = conn.getresponse()
            data = r.read()
            try:
                out[i] = json.loads(data).get("status") if r.status == 200 else r.status
            except ValueError:
                out[i] = r.status
    finally:
        conn.close()
    return out


def stats_relay(gw):
    r = gw.admin("GET", "/admin/v1/stats")
    return (r.json or {}).get("relay", {}) if r.status == 200 else {}


def dups(ids):
    """The ids that occur more than once."""
    seen, d = set(), set()
    for i in ids:
        (d if i in seen else seen).add(i)
    return d


def hyper_limit(N, n, K, tail=2.87e-7):
    """The audit's fairness tolerance (loadtest/lt_audit.h, LT_FAIR_TAIL): the smallest
    x with P(X > x) < tail for X ~ Hypergeometric(N, n, min(K, N)), the units a class
    of n of N entrants wins by chance when K units go to entrants."""
    K = min(K, N)

    def lc(a, b):
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
    cdf = 0.0
    for x in range(max(0, K - (N - n)), min(n, K) + 1):
        cdf += math.exp(lc(n, x) + lc(N - n, K - x) - lc(N, K))
        if 1 - cdf < tail:
            return x
    return min(n, K)


class Rehearsal:
    """flashgate-load's audited rehearsals against one real gateway (2 threads,
    behind the trusted proxy 127.0.0.1/32) with the embedded broker and a
    flashgate-settle writing SQLite, all in one temp dir. A context manager: the
    `with` starts them, and stops them and removes the dir at its end, after
    printing the gateway's log when an exception ends it."""

    def __init__(self, prefix, *gateway_args, **gateway_kw):
        """gateway_args/gateway_kw: more of fg.Gateway's arguments (e.g. an
        identity mode: "--set", "identity.mode=jwt", identity_mode=None)."""
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.gateway = fg.Gateway("--server-trusted-proxies", "127.0.0.1/32", "--threads", "2",
                                  *gateway_args, **gateway_kw)
        self.settle = None
        self.boot = None

    def __enter__(self):
        try:
            self.gateway.start()
            self.boot = bootstrap(self.gateway.data_dir, timeout=30)
            self.settle = Settle(self.gateway.data_dir, tmp=self.tmp).start()
        except Exception as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(self, etype, exc, tb):
        if etype is not None and issubclass(etype, Exception):
            print(self.gateway.logs())
        if self.settle:
            self.settle.stop()
        self.gateway.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def load(self, scenario, name, *extra, timeout=120):
        """Runs flashgate-load --quiet on the scenario file (its target, admin API,
        broker and database: this rehearsal's), its output in <tmp>/<name>, and
        prints what it printed. Returns (the process, its output lines by what
        precedes their first ':' (e.g. "PASS stock"), the output dir). extra: more
        flashgate-load arguments (e.g. --identity-key)."""
        g, out = self.gateway, os.path.join(self.tmp, name)
        p = subprocess.run([os.path.join(BIN, "flashgate-load"), "--scenario", scenario,
                            "--target", "http://127.0.0.1:%d" % g.port,
                            "--admin", "http://127.0.0.1:%d" % g.admin_port,
                            "--admin-token", g.token, "--kafka-brokers", self.boot,
                            "--db", self.settle.db_path, "--out", out, "--quiet", *extra],
                           capture_output=True, text=True, timeout=timeout)
        print(p.stdout)
        lines = {ln.split(":")[0]: ln for ln in p.stdout.splitlines() if ":" in ln}
        return p, lines, out


def load_report(out):
    """flashgate-load's report.json in its output dir out."""
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)
