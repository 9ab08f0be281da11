"""An order sent again to Kafka after settlement cancelled it changes nothing.

The gateway's relay produces an order again when the broker dropped it below
its partition's low watermark before its outcome came back
(relay.retention_resent, 35-broker-retention.py), which can be after the cancel
of that order was settled. With the real binaries (embedded broker,
flashgate-settle with a --sql ledger, SQLite): an order settles, an operator
cancel makes it cancelled and gives its unit back; then the order's record is
produced again, as it is in the topic, to its partition with its key (what a
resend is). Settlement publishes `cancelled` again with the first reason; the
row stays cancelled, one row, the user's statement ran once; the unit is not
given back a second time (stock_left, read after a later order of the same
sale has settled: its outcome comes behind the repeated one, on the sale's
outcomes partition, so the gateway has handled the repeat by then).
"""
import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import FAILS, Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
fgq.need_tool("kcat")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]
LEDGER = "CREATE TABLE ledger (order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, qty INTEGER);"
SQL = "INSERT INTO ledger (order_id, user_id, qty) VALUES (:order_id, :user_id, :qty)"


def left(gw, sale):
    return gw.get("/v1/sales/" + sale).json["stock_left"]


def status(gw, oid):
    r = gw.order(oid)
    return r.json.get("status") if r.status == 200 else r.status


def wait_status(gw, oid, want, timeout=10):
    ok = fgq.wait_until(lambda: status(gw, oid) == want, timeout, step=0.05)
    check(ok, "order %s becomes %s within %d s (is %r)" % (oid, want, timeout, status(gw, oid)))
    return ok


def buy(gw, sale, user):
    r = gw.buy(sale, user)
    eq(r.status, 202, "buy %s by %s: %r" % (sale, user, r))
    return r.json.get("order_id")


def outcomes_of(boot, oid):
    return [(v.get("status"), v.get("reason")) for v in fgq.kcat_values(boot, fgq.OUTCOMES)
            if isinstance(v, dict) and v.get("order_id") == oid]


def order_record(boot, oid):
    """(partition, key, value) of the order message (not the cancel) of oid."""
    out = subprocess.run(["kcat", "-C", "-b", boot, "-t", fgq.TOPIC, "-o", "beginning", "-e", "-q",
                          "-f", "%p\t%k\t%s\n"], capture_output=True, text=True, timeout=30)
    eq(out.returncode, 0, "kcat -C: %s" % out.stderr[-300:])
    for line in out.stdout.splitlines():
        p, k, v = line.split("\t", 2)
        if '"order_id":"%s"' % oid in v and '"type":"cancel"' not in v:
            return int(p), k, v
    return None


g = Gateway(*ARGS)
s = None
try:
    g.start()
    boot = fgq.bootstrap(g.data_dir)
    s = fgq.Settle(g.data_dir, "--sql", SQL, tmp=os.path.join(g.tmp, "st"))
    con = sqlite3.connect(s.db_path)
    con.executescript(LEDGER)
    con.close()
    s.start()
    g.put_sale("rs", stock=5, per_user_limit=1)

    # 1. settled, then cancelled: the unit is back
    o1 = buy(g, "rs", "alice")
    wait_status(g, o1, "settled", 20)  # includes the consumer group join
    r = g.admin("POST", "/admin/v1/orders/%s/cancel" % o1, body={"reason": "customer asked"})
    eq(r.status, 202, "cancel: %r" % r)
    wait_status(g, o1, "cancelled")
    ok = fgq.wait_until(lambda: left(g, "rs") == 5, 5, step=0.05)
    check(ok, "the cancelled order's unit is back (stock_left %r)" % left(g, "rs"))
    eq(outcomes_of(boot, o1), [("settled", None), ("cancelled", "customer asked")],
       "outcomes before the resend")

    # 2. the order's record again, as the relay resends it: same partition, same key
    rec = order_record(boot, o1)
    check(rec is not None, "the order's record is in the topic")
    p, key, val = rec
    eq(key, o1, "the orders topic is keyed by order id")
    out = subprocess.run(["kcat", "-P", "-b", boot, "-t", fgq.TOPIC, "-p", str(p), "-K", "\t"],
                         input="%s\t%s\n" % (key, val), capture_output=True, text=True, timeout=30)
    eq(out.returncode, 0, "kcat -P: %s" % out.stderr[-300:])
    ok = fgq.wait_until(lambda: len(outcomes_of(boot, o1)) == 3, 15, step=0.1)
    check(ok, "settlement answers the resend (%r)" % outcomes_of(boot, o1))
    eq(outcomes_of(boot, o1)[-1], ("cancelled", "customer asked"),
       "the resend re-publishes cancelled with the first reason")

    # 3. a later order of the same sale: its outcome comes behind the repeat
    o2 = buy(g, "rs", "bob")
    wait_status(g, o2, "settled")
    eq(left(g, "rs"), 4, "stock_left: the cancelled unit was given back once")
    eq(status(g, o1), "cancelled", "the resent order stays cancelled at the gateway")
    eq(fgq.sqlite_query(s.db_path, "SELECT status, reason FROM orders WHERE order_id = ?", (o1,)),
       [("cancelled", "customer asked")], "one row, still cancelled, the first reason")
    eq(fgq.sqlite_count(s.db_path), 2, "rows in the DB")
    eq(fgq.sqlite_query(s.db_path, "SELECT count(*) FROM ledger WHERE order_id = ?", (o1,))[0][0],
       1, "the user's statement ran once for the resent order")
    eq(s.stop(), 0, "settle exits 0 on SIGTERM")
finally:
    if FAILS:
        for x in (g, s):
            if x:
                print("--- %s log\n%s" % (type(x).__name__, x.logs()), file=sys.stderr)
    if s:
        s.cleanup()
    g.cleanup()
finish()
