"""Settlement throughput per sink, called by bench.py.

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
  settle cpu = flashgate-settle's utime+stime from SIGCONT until its
               /metrics count every message committed, per order; db cpu = the
               same for every postgres process (SQLite runs inside
               flashgate-settle); gateway cpu = the same for the idle gateway:
               its embedded broker serving the fetches, the outcomes and the
               offset commits, and its own consumer of those outcomes (the
               log line per drain splits it by thread)

BENCH_SETTLE_ARGS="--batch 2000" passes flags to every worker (experiments).
BENCH_PG_CONF="shared_buffers=256MB wal_compression=on" passes settings to the
cluster (experiments; -c per word). BENCH_SETTLE_PROFILE=DIR records each
PostgreSQL drain with `perf record -e cpu-clock -g` (the worker, every postgres
process and the gateway) into DIR, loads pg_stat_statements and prints the
statements' executor time per order at the end.
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
PG_CONF = os.environ.get("BENCH_PG_CONF", "").split()
PROFILE = os.environ.get("BENCH_SETTLE_PROFILE", "")


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
        conf = ["max_connections=20"] + PG_CONF
        if PROFILE:
            conf.append("shared_preload_libraries=pg_stat_statements")
        argv = [os.path.join(self.bin, "postgres"), "-D", data, "-k", self.dir,
                "-p", str(self.port), "-h", "127.0.0.1"]
        for c in conf:
            argv += ["-c", c]
        self.proc = B.start(as_user(argv), self.log)
        t_end = time.time() + 30
        while time.time() < t_end:
            if self.proc.poll() is not None:
                break
            if subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.port)]).returncode == 0:
                if PROFILE:
                    self.query("CREATE EXTENSION pg_stat_statements")
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

    def messages(self):
        """flashgate_settle_messages_total: messages whose batch is committed (rows, outcomes
        and offsets), from the worker's /metrics; polling it costs the database nothing."""
        try:
            _, body = B.http_req(self.metrics_port, "GET", "/metrics")
        except OSError:
            return -1
        text = body.decode() if isinstance(body, bytes) else str(body)
        for line in text.splitlines():
            if line.startswith("flashgate_settle_messages_total "):
                return int(float(line.split()[1]))
        return -1

    def wait_messages(self, n, secs):
        t_end = time.time() + secs
        while time.time() < t_end:
            if self.messages() >= n:
                return True
            time.sleep(0.02)
        return False

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


def perf_start(s, pg, gw, rep):
    """perf record of one PostgreSQL drain (BENCH_SETTLE_PROFILE)."""
    if not PROFILE or not s.pg:
        return None
    os.makedirs(PROFILE, exist_ok=True)
    pids = [s.proc.pid, gw.pid, pg.proc.pid] + B.children(pg.proc.pid)
    out = os.path.join(PROFILE, "%s-rep%d.data" % (s.name, rep + 1))
    p = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-o", out, "-p",
                          ",".join(str(p) for p in pids)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the worker thaws (it is stopped: nothing is lost)
    return p


def perf_stop(p):
    if p:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)


def pgss_report(pg, sinks, orders):
    """Executor time per order of each statement, per database (BENCH_SETTLE_PROFILE)."""
    for s in sinks:
        if not s.pg:
            continue
        rows = pg.query("SELECT calls, round(total_exec_time::numeric, 1), rows,"
                        " left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
                        " FROM pg_stat_statements JOIN pg_database d ON d.oid = dbid"
                        " WHERE d.datname = '%s' ORDER BY total_exec_time DESC LIMIT 8" % s.db)
        B.log("pg_stat_statements, %s (%d orders): calls, exec ms, us/order, rows, query"
              % (s.db, orders))
        for r in rows:
            B.log("  %8s %9s %6.2f %8s  %s" % (r[0], r[1], float(r[1]) * 1000 / orders, r[2],
                                              r[3]))


def thread_ticks(pid):
    """utime+stime per thread name of one process, in clock ticks."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            st = open("/proc/%d/task/%s/stat" % (pid, t)).read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        f = st[st.rindex(")") + 2:].split()
        out[name] = out.get(name, 0) + int(f[11]) + int(f[12])
    return out


def ticks_diff(a, b, n):
    """us per order per thread name, largest first, as text."""
    d = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in b), reverse=True)
    return ", ".join("%s %.1f" % (k, v * 1e6 / B.CLK_TCK / n) for v, k in d if v > 0)


def pg_cpu_ticks(pg):
    """utime+stime of the postmaster and all its children (backends, walwriter, ...)."""
    return B.cpu_ticks(pg.proc.pid, with_children=True)


def bench_stmt(tmp, bindir):
    """bench/settle_stmt.c against a private cluster (BENCH_ONLY=settle-stmt): the server's
    CPU per order of each variant of the batch insert, 100 batches of 500 each, interleaved."""
    pg = Postgres(tmp)
    try:
        r = subprocess.run([os.path.join(bindir, "flashgate-bench-settle-stmt"), pg.url(),
                            os.environ.get("BENCH_STMT_BATCHES", "20" if B.QUICK else "100")],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("settle_stmt: %s" % r.stderr[-2000:])
        return r.stdout.rstrip() + "\n  PostgreSQL %s, fsync on; tables of 200,000 rows" % (
            pg.version())
    finally:
        pg.stop()


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
        m0 = {s.name: s.messages() for s in sinks}
        for s in sinks:
            s.proc.send_signal(signal.SIGSTOP)
        B.log("rep %d/%d: settlement sinks, %d orders backlog (wrk -c64), then each sink drains "
              "it alone" % (rep + 1, B.REPS, PG_ORDERS))
        f0 = thread_ticks(gw.pid)
        r = B.run_wrk(gw.url(), 64, B.SECONDS, scripts["buy"], [sale], gw.pid)
        accepted = r["answers"].get(202, 0)
        B.log("  producer (the gateway filling the backlog: HTTP, reserve, spool, relay, broker): "
              "%d requests, %d accepted; cpu us/request by thread: %s"
              % (r["requests"], accepted, ticks_diff(f0, thread_ticks(gw.pid),
                                                     max(r["requests"], 1))))
        time.sleep(1.0)  # the relay's last records reach the broker
        for s in sinks:
            c0 = B.cpu_ticks(s.proc.pid)
            p0 = pg_cpu_ticks(pg)
            g0 = B.cpu_ticks(gw.pid)
            gt0, st0 = thread_ticks(gw.pid), thread_ticks(s.proc.pid)
            perf = perf_start(s, pg, gw, rep)
            s.proc.send_signal(signal.SIGCONT)
            # The worker's counter, not the table: polling with psql cost the database
            # ~1 us per order of this bench's own queries (and a backend per poll).
            if m0[s.name] < 0 or not s.wait_messages(m0[s.name] + accepted, 120):
                B.log("  %s: metrics did not show %d messages; polling the table" %
                      (s.name, accepted))
                s.wait_rows(sale, accepted, 120)
            perf_stop(perf)
            c1 = B.cpu_ticks(s.proc.pid)
            p1 = pg_cpu_ticks(pg)
            g1 = B.cpu_ticks(gw.pid)
            gt1, st1 = thread_ticks(gw.pid), thread_ticks(s.proc.pid)
            s.proc.send_signal(signal.SIGSTOP)
            got = s.rows(sale)
            n = max(len(got), 1)
            B.log("  %s cpu us/order by thread: worker: %s; gateway: %s"
                  % (s.name, ticks_diff(st0, st1, n), ticks_diff(gt0, gt1, n)))
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
    if PROFILE:
        pgss_report(pg, sinks, PG_ORDERS * B.REPS)
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
             "gateway cpu us/order", "rows/accepted", "target"], rows)
    print("  PostgreSQL %s, private cluster, fsync on; batch 500 (the default); the sinks drain "
          "one after the other on the same 2 cores, nothing else running but the idle gateway"
          % sk["pg_version"])
    print("  gateway cpu = the idle gateway over the drain: its embedded broker (fetches, outcomes, "
          "offset commits) and its own outcome consumer (most of it; per thread in the log)")
