"""Settlement throughput per sink (issue 10, settlement), called by bench.py.

One gateway (embedded Kafka broker) and one private PostgreSQL cluster
(initdb + postgres in the bench's temp dir, 127.0.0.1 at a free port, run as
"nobody" when the bench runs as root, stopped by PID; fsync and
synchronous_commit left on, as SQLite's synchronous=FULL is). Two
flashgate-settle workers, one per sink, each in its own consumer group so both
read every order: they join the group on a warm-up order, then are frozen
(SIGSTOP) while wrk fills a sale, and thawed one at a time (SIGCONT): each
drains the same backlog alone. That measures the settlement step itself and not
the gateway's accept rate (bench.py's latency section does the live pipeline).

  orders/s   = orders committed after the first batch's stamp / span of the
               stamps (settled_at); PostgreSQL stamps a batch once, SQLite each
               order, so the first batch is left out for both
  settle cpu = flashgate-settle's utime+stime from SIGCONT to the last row, per
               order; db cpu = the same for every postgres process (SQLite runs
               inside flashgate-settle); broker cpu = the same for the idle
               gateway, i.e. its embedded broker serving the fetches, the
               outcomes and the offset commits

BENCH_SETTLE_ARGS="--batch 2000" passes flags to every worker (experiments).
FLASHGATE_SETTLE_BIN_OLD=DIR adds a third worker, DIR/flashgate-settle, into
its own database on the same cluster: the code before a change, side by side.
"""
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import bench as B

EXTRA = os.environ.get("BENCH_SETTLE_ARGS", "").split()  # e.g. "--batch 2000", for experiments
PG_ORDERS = 5000 if B.QUICK else 20000   # per run; the mock broker's partition holds ~5 MiB


def pg_bindir():
    for v in (17, 16, 15):
        d = "/usr/lib/postgresql/%d/bin" % v
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            return d
    return None


def as_user(argv):
    if os.getuid() == 0:  # initdb and postgres refuse root
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + argv
    return argv


class Postgres:
    def __init__(self, tmp):
        self.bin = pg_bindir()
        if not self.bin:
            raise RuntimeError("PostgreSQL server binaries not installed (deploy/install-deps.sh)")
        # Its own temp dir: the bench's is private to root, and postgres runs as nobody.
        self.dir = tempfile.mkdtemp(prefix="flashgate-bench-pg-")
        self.proc = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def start(self):
        if os.getuid() == 0:
            shutil.chown(self.dir, "nobody", "nogroup")
        data = os.path.join(self.dir, "data")
        r = subprocess.run(as_user([os.path.join(self.bin, "initdb"), "-D", data, "-U", "postgres",
                                    "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("initdb failed: %s" % (r.stdout + r.stderr)[-2000:])
        self.port = B.free_port()
        self.log = os.path.join(self.dir, "postgres.log")
        self.proc = B.start(as_user([os.path.join(self.bin, "postgres"), "-D", data, "-k", self.dir,
                                     "-p", str(self.port), "-h", "127.0.0.1",
                                     "-c", "max_connections=20"]), self.log)
        t_end = time.time() + 30
        while time.time() < t_end:
            if self.proc.poll() is not None:
                break
            if subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.port)]).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start: %s" % open(self.log).read()[-2000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            B.stop(self.proc, grace=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def query(self, sql, db="postgres"):
        r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d",
                            self.url(db), "-c", sql], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql %r: %s" % (sql, r.stderr[-500:]))
        return [line.split("\t") for line in r.stdout.splitlines()]

    def version(self):
        return self.query("SHOW server_version")[0][0]


class Sink:
    """One flashgate-settle worker and where it writes."""

    def __init__(self, name, binary, gw, pg=None, db=None):
        self.name = name
        self.dir = os.path.join(gw.dir, "settle-" + name)
        os.makedirs(self.dir)
        self.metrics_port = B.free_port()
        self.pg, self.db = pg, db
        argv = [binary, "--kafka-brokers", "@" + os.path.join(gw.dir, "data", "kafka.bootstrap"),
                "--data-dir", self.dir, "--group", "bench-" + name, "--log-level", "warn",
                "--metrics-listen", "127.0.0.1:%d" % self.metrics_port] + EXTRA
        if pg:
            pg.query("CREATE DATABASE %s" % db)
            argv += ["--db", pg.url(db)]
        self.proc = B.start(argv, os.path.join(self.dir, "settle.log"))

    def rows(self, sale):
        """(count, [settled_at...]) of the sale's rows."""
        q = "SELECT settled_at FROM orders WHERE sale_id = '%s'" % sale
        try:
            if self.pg:
                got = [int(r[0]) for r in self.pg.query(q, self.db)]
            else:
                p = os.path.join(self.dir, "orders.db")
                if not os.path.exists(p):
                    return []
                con = sqlite3.connect("file:%s?mode=ro" % p, uri=True, timeout=5)
                got = [r[0] for r in con.execute(q)]
                con.close()
        except (RuntimeError, sqlite3.Error):
            return []
        return got

    def wait_rows(self, sale, n, secs):
        t_end = time.time() + secs
        got = []
        while time.time() < t_end:
            got = self.rows(sale)
            if len(got) >= n:
                break
            time.sleep(0.05)
        return got


def pg_cpu_ticks(pg):
    """utime+stime of the postmaster and all its children (backends, walwriter, ...)."""
    return B.cpu_ticks(pg.proc.pid, with_children=True)


def bench_settle_sinks(tmp, bindir, scripts):
    pg = Postgres(tmp)
    try:
        return drain_runs(tmp, bindir, scripts, pg)
    finally:
        pg.stop()


def drain_runs(tmp, bindir, scripts, pg):
    gw = B.Gateway(tmp, "gw-sinks", os.path.join(bindir, "flashgate"),
                   ["--kafka-brokers", "embedded", "--limits-user-rps", "1"])
    t_end = time.time() + 10
    while (not os.path.exists(os.path.join(gw.dir, "data", "kafka.bootstrap"))
           and time.time() < t_end):
        time.sleep(0.05)
    sinks = [Sink("sqlite", os.path.join(bindir, "flashgate-settle"), gw),
             Sink("postgresql", os.path.join(bindir, "flashgate-settle"), gw, pg, "bench_new")]
    old = os.environ.get("FLASHGATE_SETTLE_BIN_OLD")
    if old:
        sinks.append(Sink("postgresql-old", os.path.join(old, "flashgate-settle"), gw, pg,
                          "bench_old"))
    warm = gw.new_sale("sinkwarm", 10)
    B.http_req(gw.port, "POST", "/v1/sales/%s/orders" % warm, {"user_id": "warm-up", "qty": 1})
    for s in sinks:
        if len(s.wait_rows(warm, 1, 30)) < 1:
            B.log("warning: %s did not settle the warm-up order within 30 s" % s.name)
    res = {s.name: [] for s in sinks}
    for rep in range(B.REPS):
        sale = gw.new_sale("sinks", PG_ORDERS)
        for s in sinks:
            s.proc.send_signal(signal.SIGSTOP)
        B.log("rep %d/%d: settlement sinks, %d orders backlog (wrk -c64), then each sink drains "
              "it alone" % (rep + 1, B.REPS, PG_ORDERS))
        r = B.run_wrk(gw.url(), 64, B.SECONDS, scripts["buy"], [sale], gw.pid)
        accepted = r["answers"].get(202, 0)
        time.sleep(1.0)  # the relay's last records reach the broker
        for s in sinks:
            c0 = B.cpu_ticks(s.proc.pid)
            p0 = pg_cpu_ticks(pg)
            g0 = B.cpu_ticks(gw.pid)
            s.proc.send_signal(signal.SIGCONT)
            got = s.wait_rows(sale, accepted, 120)
            c1 = B.cpu_ticks(s.proc.pid)
            p1 = pg_cpu_ticks(pg)
            g1 = B.cpu_ticks(gw.pid)
            s.proc.send_signal(signal.SIGSTOP)
            first = min(got) if got else 0
            later = sum(1 for t in got if t > first)
            span = (max(got) - first) / 1000 if got else 0
            out = {"accepted": accepted, "rows": len(got),
                   "rate": later / span if span else float("nan"),
                   "cpu_us": (c1 - c0) * 1e6 / B.CLK_TCK / max(len(got), 1),
                   "gw_cpu_us": (g1 - g0) * 1e6 / B.CLK_TCK / max(len(got), 1),
                   "db_cpu_us": ((p1 - p0) * 1e6 / B.CLK_TCK / max(len(got), 1)
                                 if s.pg else float("nan"))}
            res[s.name].append(out)
            B.log("  %s: %d/%d rows, %.0f orders/s" % (s.name, len(got), accepted, out["rate"]))
    for s in sinks:
        s.proc.send_signal(signal.SIGCONT)
        B.stop(s.proc)
    B.stop(gw.proc)
    return {"runs": res, "pg_version": pg.version()}


def report(sk):
    print("== Settlement sinks: one backlog of %d orders per run drained by flashgate-settle "
          "alone, per sink (median of %d) ==" % (PG_ORDERS, B.REPS))
    if not sk:
        print("  not run")
        return
    if "error" in sk:
        print("  FAILED: %s" % sk["error"])
        return
    rows = []
    for name, rs in sk["runs"].items():
        rate = B.med([r["rate"] for r in rs])
        target = ""
        if name == "postgresql":
            target = "%s (>= 40k)" % ("ok" if rate >= 40000 else "MISS")
        rows.append([name, B.fmt(rate, 0),
                     "%s-%s" % (B.fmt(min(r["rate"] for r in rs), 0),
                                B.fmt(max(r["rate"] for r in rs), 0)),
                     B.fmt(B.med([r["cpu_us"] for r in rs]), 1),
                     B.fmt(B.med([r["db_cpu_us"] for r in rs]), 1),
                     B.fmt(B.med([r["gw_cpu_us"] for r in rs]), 1),
                     "%d/%d" % (min(r["rows"] for r in rs), max(r["accepted"] for r in rs)),
                     target])
    B.table(["sink", "orders/s", "(min-max)", "settle cpu us/order", "postgres cpu us/order",
             "broker cpu us/order", "rows/accepted", "target"], rows)
    print("  PostgreSQL %s, private cluster, fsync on; batch 500 (the default); the sinks drain "
          "one after the other on the same 2 cores, nothing else running but the idle gateway"
          % sk["pg_version"])
