"""Compensation with the real binaries (embedded broker, flashgate-settle, SQLite):

- POST /admin/v1/orders/{id}/cancel of a settled order: status "cancelled" on
  GET and in the DB, the unit back exactly once (stock_left +1); a second cancel
  answers "already_final" and changes nothing; two cancels sent back to back
  return the unit once; the user can buy again.
- settlement failure (the user's --sql step raises for users "bad-*"): the order
  is "failed" with the database's message, its unit goes back, the user can buy
  again, and a sold-out sale sells that unit to someone else; cancelling a failed
  order changes nothing.
- after a restart of flashgate on the same data dir nothing is returned twice.
- a --sql statement SQLite cannot prepare stops flashgate-settle at once.
"""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import FAILS, Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]
# RAISE() is allowed only in a trigger: the user's step inserts into a ledger
# whose trigger blocks users "bad-*" (SQLITE_CONSTRAINT_TRIGGER -> order failed).
LEDGER = """
CREATE TABLE ledger (order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, qty INTEGER NOT NULL);
CREATE TRIGGER ledger_block BEFORE INSERT ON ledger WHEN NEW.user_id LIKE 'bad-%'
BEGIN SELECT RAISE(ABORT, 'user blocked'); END;
"""
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


def buy(gw, sale, user, want=202):
    r = gw.buy(sale, user)
    eq(r.status, want, "buy %s by %s: %r" % (sale, user, r))
    return r.json.get("order_id") if r.status == 202 else None


def cancel(gw, oid, body=None):
    return gw.admin("POST", "/admin/v1/orders/%s/cancel" % oid, body=body)


def db_row(s, oid):
    rows = fgq.sqlite_query(s.db_path, "SELECT status, reason FROM orders WHERE order_id = ?",
                            (oid,))
    return tuple(rows[0]) if rows else None


def stays(gw, sale, want, secs=1.0):
    """stock_left is want now and still after secs (a late second release would show)."""
    ok = fgq.wait_until(lambda: left(gw, sale) == want, 5, step=0.05)
    time.sleep(secs)
    got = left(gw, sale)
    eq(got, want, "stock_left of %s" % sale)
    return ok and got == want


g = Gateway(*ARGS)
g2 = s = None
try:
    g.start()
    st_tmp = os.path.join(g.tmp, "st")

    # 0. a statement SQLite cannot prepare (RAISE outside a trigger) stops settle at once
    bad = fgq.Settle(g.data_dir, "--sql",
                     "SELECT CASE WHEN :user_id LIKE 'bad-%' THEN RAISE(ABORT,'user blocked') END",
                     tmp=os.path.join(g.tmp, "badsql"))
    bad.start()
    try:
        rc = bad.proc.wait(15)
    except Exception:
        rc = None
    check(rc not in (None, 0), "settle with an unpreparable --sql exits non-zero (rc %r)" % rc)
    check("trigger" in bad.logs().lower(), "and says why: %r" % bad.logs()[-300:])
    bad.cleanup()

    s = fgq.Settle(g.data_dir, "--sql", SQL, tmp=st_tmp)
    con = sqlite3.connect(s.db_path)
    con.executescript(LEDGER)
    con.close()
    s.start()
    g.put_sale("cp", stock=10, per_user_limit=1)

    # 1. cancel of a settled order: unit back once, second cancel changes nothing
    o1 = buy(g, "cp", "alice")
    wait_status(g, o1, "settled", 20)  # includes the consumer group join
    eq(left(g, "cp"), 9, "stock_left after one order")
    r = cancel(g, o1, body={"reason": "customer asked"})
    eq(r.status, 202, "first cancel: %r" % r)
    eq((r.json or {}).get("cancel"), "requested", "first cancel is requested")
    wait_status(g, o1, "cancelled")
    stays(g, "cp", 10)
    eq(db_row(s, o1), ("cancelled", "customer asked"), "DB row cancelled with the reason")
    eq(g.order(o1).json.get("reason"), "customer asked", "GET shows the reason")
    r = cancel(g, o1)
    eq(r.status, 200, "second cancel: %r" % r)
    eq((r.json or {}).get("cancel"), "already_final", "second cancel is already_final")
    eq((r.json or {}).get("status"), "cancelled", "second cancel reports cancelled")
    stays(g, "cp", 10)
    eq(db_row(s, o1), ("cancelled", "customer asked"), "the second cancel kept the first reason")
    o1b = buy(g, "cp", "alice")  # the purchase slot is free again
    wait_status(g, o1b, "settled")

    # 2. two cancels back to back, before the outcome: the unit comes back once
    o2 = buy(g, "cp", "bob")
    wait_status(g, o2, "settled")
    base = left(g, "cp")
    r1, r2 = cancel(g, o2), cancel(g, o2)
    check(r1.status in (200, 202) and r2.status in (200, 202), "both cancels answered: %r %r"
          % (r1, r2))
    wait_status(g, o2, "cancelled")
    stays(g, "cp", base + 1)
    eq(fgq.sqlite_count(s.db_path, "order_id = '%s'" % o2), 1, "one row for the twice-cancelled order")
    # both cancel records leave the spool once the cancelled outcome is in (a
    # second cancel once held the release point for a 30 s grace)
    ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("unreleased_records") == 0, 5)
    check(ok, "spool released after a double cancel: %r" % fgq.stats_relay(g))

    # 2b. a reason longer than the 127 bytes kept is cut before a character, not
    # inside one: a cut UTF-8 sequence made the cancel a 503 (its event is refused)
    o3 = buy(g, "cp", "carol")
    wait_status(g, o3, "settled")
    r = cancel(g, o3, body={"reason": "x" * 126 + "\u00e9t\u00e9"})
    eq(r.status, 202, "cancel with a long non-ASCII reason: %r" % r)
    wait_status(g, o3, "cancelled")
    eq(db_row(s, o3), ("cancelled", "x" * 126), "the reason cut before a whole character")
    last = g.admin("GET", "/admin/v1/audit?limit=1").json["entries"][-1]
    eq((last["what"], (last["new"] or {}).get("reason")), ("order.cancel", "x" * 126),
       "the audit records the cut reason")

    # 3. unknown order
    r = cancel(g, "0AAAAAAAAAAAA")
    eq(r.status, 404, "cancel of an unknown order: %r" % r)

    # 4. a failed order gives its unit back; the user can buy again
    base = left(g, "cp")
    f1 = buy(g, "cp", "bad-carol")
    wait_status(g, f1, "failed")
    eq(db_row(s, f1), ("failed", db_row(s, f1)[1] if db_row(s, f1) else None), "DB row failed")
    check("user blocked" in ((db_row(s, f1) or ("", ""))[1] or ""),
          "failed reason is the database's message: %r" % (db_row(s, f1),))
    check("user blocked" in (g.order(f1).json.get("reason") or ""),
          "GET shows the failure reason: %r" % g.order(f1).json)
    stays(g, "cp", base)
    eq(fgq.sqlite_query(s.db_path, "SELECT count(*) FROM ledger WHERE user_id LIKE 'bad-%'")[0][0],
       0, "the failed step left nothing in the ledger")
    r = cancel(g, f1)
    eq((r.status, (r.json or {}).get("cancel")), (200, "already_final"), "cancel of a failed order")
    stays(g, "cp", base, 0.5)
    eq(status(g, f1), "failed", "a failed order stays failed after a cancel")
    f1b = buy(g, "cp", "bad-carol")  # slot freed: may buy again (and fails again)
    wait_status(g, f1b, "failed")
    stays(g, "cp", base, 0.5)

    # 5. sold out: a failed order's unit is sold to the next buyer
    g.put_sale("so", stock=2, per_user_limit=1)
    fa = buy(g, "so", "bad-dave")
    ok1 = buy(g, "so", "erin")
    eq(left(g, "so"), 0, "sold out")
    wait_status(g, fa, "failed")
    wait_status(g, ok1, "settled")
    ok = fgq.wait_until(lambda: left(g, "so") == 1, 5)
    check(ok, "the failed order's unit is back in the sold-out sale")
    o5 = buy(g, "so", "frank")
    if o5:
        wait_status(g, o5, "settled")
    buy(g, "so", "grace", want=410)

    # 6. restart on the same data dir: nothing returned twice, statuses kept
    before = {sale: left(g, sale) for sale in ("cp", "so")}
    want_st = {o1: "cancelled", o1b: "settled", o2: "cancelled", f1: "failed", f1b: "failed",
               fa: "failed", ok1: "settled", o5: "settled"}
    ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("unreleased_records") == 0, 5)
    check(ok, "spool released before the restart: %r" % fgq.stats_relay(g))
    eq(g.stop(), 0, "flashgate exits 0 on SIGTERM")
    g2 = Gateway(*ARGS, data_dir=g.data_dir).start()
    time.sleep(1.0)
    eq({sale: left(g2, sale) for sale in ("cp", "so")}, before, "stock_left after the restart")
    got = {o: status(g2, o) for o in want_st}
    eq(got, want_st, "order statuses after the restart")
    r = cancel(g2, o1)
    eq((r.json or {}).get("cancel"), "already_final", "cancel after the restart is already_final")
    o6 = buy(g2, "cp", "heidi")  # and settlement carries on against the new broker
    if o6:
        wait_status(g2, o6, "settled", 30)
    stays(g2, "cp", before["cp"] - 1)
    eq(fgq.sqlite_count(s.db_path, "status = 'cancelled'"), 3, "cancelled rows in the DB")
    eq(s.stop(), 0, "settle exits 0 on SIGTERM")
finally:
    if FAILS:
        for x in (g, g2, s):
            if x:
                print("--- %s log\n%s" % (type(x).__name__, x.logs()), file=sys.stderr)
    if s:
        s.cleanup()
    if g2:
        g2.cleanup()
    g.cleanup()
finish()
