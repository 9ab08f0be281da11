"""flashgate-settle's probes follow its dependencies (settle/st_http.c).

One gateway (its embedded broker), one real PostgreSQL, one settle worker with
--metrics-listen:
- ready (200) once both are up; /metrics passes promtool check metrics;
- PostgreSQL stopped: after an order arrives its batch fails, /readyz answers
  503 naming the database, flashgate_settle_db_up 0, /healthz stays 200 (a
  restart would not help); PostgreSQL back on the same data: the batch is
  written and /readyz is 200 again, with the order settled;
- the gateway (and its broker) stopped: /readyz 503 naming kafka,
  flashgate_settle_kafka_up 0; the gateway restarted on its data dir: 200.
"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, free_port, need_binary, request  # noqa: E402
from fgq import Postgres, Settle, need_tool, wait_until  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
need_tool("promtool")


def probe(port, path):
    try:
        r = request(port, "GET", path, timeout=2)
        return r.status, (r.json or {}).get("component")
    except OSError:
        return None, None


def gauge(port, name):
    try:
        text = request(port, "GET", "/metrics", timeout=2).raw.decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


pg = Postgres().start()
g = Gateway(threads=1).start()
mport = free_port()
st = Settle(g.data_dir, "--metrics-listen", "127.0.0.1:%d" % mport, db=pg.url).start()
try:
    g.put_sale("s1", stock=10, per_user_limit=1)
    check(wait_until(lambda: probe(mport, "/readyz")[0] == 200, 30, step=0.2),
          "settle ready with its broker and PostgreSQL up")
    eq(g.buy("s1", "u1").status, 202, "an order")
    check(wait_until(lambda: pg.count() == 1, 30), "the order settles")
    text = request(mport, "GET", "/metrics").raw.decode()
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    eq(out.returncode, 0, "settle /metrics passes promtool check metrics: " + out.stdout + out.stderr)

    # ---- the database goes away (same data dir, same port, started again below) ----
    pg_cmd = pg.proc.args
    pg.proc.send_signal(signal.SIGINT)
    pg.proc.wait(15)
    eq(g.buy("s1", "u2").status, 202, "an order while the database is down")
    check(wait_until(lambda: probe(mport, "/readyz") == (503, "database"), 30, step=0.2),
          "settle /readyz 503 naming the database once a batch fails (%r)" % (probe(mport, "/readyz"),))
    eq(gauge(mport, "flashgate_settle_db_up"), 0.0, "flashgate_settle_db_up 0")
    eq(gauge(mport, "flashgate_settle_ready"), 0.0, "flashgate_settle_ready 0")
    eq(probe(mport, "/healthz")[0], 200, "settle /healthz stays 200: a restart would not help")
    pg.proc = subprocess.Popen(pg_cmd, stdout=pg.log, stderr=subprocess.STDOUT)
    check(wait_until(lambda: probe(mport, "/readyz")[0] == 200, 60, step=0.2),
          "settle ready again once the database is back")
    check(wait_until(lambda: pg.count() == 2, 30), "the order kept in Kafka settles")
    eq(gauge(mport, "flashgate_settle_db_up"), 1.0, "flashgate_settle_db_up 1")

    # ---- the broker goes away with its gateway, and comes back ----
    g.stop()
    check(wait_until(lambda: probe(mport, "/readyz") == (503, "kafka"), 30, step=0.2),
          "settle /readyz 503 naming kafka with the broker gone (%r)" % (probe(mport, "/readyz"),))
    eq(gauge(mport, "flashgate_settle_kafka_up"), 0.0, "flashgate_settle_kafka_up 0")
    g.start()
    check(wait_until(lambda: probe(mport, "/readyz")[0] == 200, 60, step=0.2),
          "settle ready again with the gateway's broker back")
    eq(g.buy("s1", "u3").status, 202, "an order after the broker came back")
    check(wait_until(lambda: pg.count() == 3, 30), "it settles")
finally:
    st.cleanup()
    g.cleanup()
    pg.stop()
finish()
