"""Orders end to end into a real PostgreSQL server started by the test (initdb in
a temp dir, run as an unprivileged user, stopped by PID): flashgate (embedded
broker) -> flashgate-settle --db postgresql://... with a --sql settlement step.

- a burst of 1,500 buyers for 1,200 units: every 202 is in the topic once and in
  the orders table once, nothing else; GET /v1/orders says settled;
- the user's statement (a PL/pgSQL function that raises for users "bad-*") fails
  those orders: stored as failed with the database's message, GET says failed,
  the unit goes back to the stock and the user can buy again;
- kill -9 of flashgate-settle mid-run, restart: rows == 202 answers, no duplicates.
Skips (77) when PostgreSQL's server binaries are not installed.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import FAILS, Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
fgq.need_tool("kcat")
fgq.need_tool("psql")
if not fgq.pg_bindir():
    print("FAIL: PostgreSQL server binaries not installed (deploy/install-deps.sh)")
    sys.exit(1)

STOCK = 1200
BUYERS = 1500
ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]
SQL = "SELECT fg_settle_check($1, $3, $4)"
FUNC = """
CREATE TABLE ledger (order_id text PRIMARY KEY, user_id text NOT NULL, qty int NOT NULL);
CREATE FUNCTION fg_settle_check(oid text, uid text, q int) RETURNS void AS $$
BEGIN
  IF uid LIKE 'bad-%' THEN RAISE EXCEPTION 'user % is blocked', uid; END IF;
  INSERT INTO ledger VALUES (oid, uid, q);
END $$ LANGUAGE plpgsql;
"""

pg = fgq.Postgres()
g = Gateway(*ARGS)
s = s2 = None
try:
    t0 = time.time()
    pg.start()
    print("postgres up on port %d in %.1f s" % (pg.port, time.time() - t0))
    pg.query(FUNC)
    g.start()
    boot = fgq.bootstrap(g.data_dir)
    g.put_sale("pg", stock=STOCK, per_user_limit=1)
    tmp = os.path.join(g.tmp, "st")
    s = fgq.Settle(g.data_dir, "--sql", SQL, db=pg.url, tmp=tmp).start()

    r = g.buy("pg", "warm")
    eq(r.status, 202, "warm-up buy")
    warm = r.json["order_id"]
    ok = fgq.wait_until(lambda: g.order(warm).json.get("status") == "settled", 20)
    check(ok, "warm-up order settled into PostgreSQL within 20 s")

    # 1. the burst
    users = ["u%05d" % i for i in range(BUYERS)]
    acc, counts = fgq.burst(g.port, "pg", users, clients=4)
    acc.append(warm)
    print("burst: %r" % counts)
    eq(len(acc), STOCK, "202 answers == stock")
    ok = fgq.wait_until(lambda: pg.count() >= STOCK, 40, step=0.3)
    check(ok, "orders table reaches %d rows within 40 s (has %d)" % (STOCK, pg.count()))
    time.sleep(0.5)
    rows = pg.query("SELECT order_id, status FROM orders")
    ids = [x[0] for x in rows]
    eq(len(ids), STOCK, "rows in PostgreSQL")
    eq(set(ids), set(acc), "PostgreSQL order ids == 202 order ids")
    eq(sum(1 for x in rows if x[1] == "settled"), STOCK, "every row settled")
    eq(int(pg.query("SELECT count(*) FROM ledger")[0][0]), STOCK,
       "the --sql step ran once per order")
    tids = fgq.topic_order_ids(boot)
    eq(len(tids), STOCK, "order messages in the topic")
    eq(set(tids), set(acc), "topic order ids == 202 order ids")
    ok = fgq.wait_until(lambda: set(fgq.statuses(g, acc).values()) == {"settled"}, 10,
                        step=0.5)
    check(ok, "GET /v1/orders says settled for all")

    # 2. the user's statement fails some orders: failed, unit back, can buy again
    g.admin("POST", "/admin/v1/sales/pg/restock", body={"add": 10})
    left0 = g.get("/v1/sales/pg").json["stock_left"]
    bad = []
    for u in ("bad-1", "bad-2"):
        r = g.buy("pg", u)
        eq(r.status, 202, "buy by %s" % u)
        bad.append(r.json["order_id"])
    ok = fgq.wait_until(lambda: set(fgq.statuses(g, bad).values()) == {"failed"}, 10)
    check(ok, "orders of blocked users fail: %r" % fgq.statuses(g, bad))
    rows = pg.query("SELECT status, reason FROM orders WHERE order_id IN ('%s')" % "','".join(bad))
    eq([x[0] for x in rows], ["failed", "failed"], "failed rows in PostgreSQL")
    check(all("blocked" in x[1] for x in rows), "reason is the database's message: %r" % rows)
    ok = fgq.wait_until(lambda: g.get("/v1/sales/pg").json["stock_left"] == left0, 5)
    check(ok, "units of failed orders back: stock_left %r, want %d"
          % (g.get("/v1/sales/pg").json["stock_left"], left0))
    r = g.buy("pg", "bad-1")
    eq(r.status, 202, "a user whose order failed can buy again")
    if r.status == 202:  # still blocked: fails again, unit back again
        again = r.json["order_id"]
        ok = fgq.wait_until(lambda: g.order(again).json.get("status") == "failed", 10)
        check(ok, "the second order of a blocked user fails too")
    ok = fgq.wait_until(lambda: g.get("/v1/sales/pg").json["stock_left"] == left0, 5)
    check(ok, "stock_left back to %d" % left0)
    eq(int(pg.query("SELECT count(*) FROM ledger WHERE user_id LIKE 'bad-%'")[0][0]), 0,
       "the failed statement left nothing behind (savepoint rolled back)")

    # 3. kill -9 of settle mid-run, restart
    s.stop()
    s = fgq.Settle(g.data_dir, "--sql", SQL, "--max-rate", "300", "--batch", "50", db=pg.url,
                   tmp=tmp).start()
    before = pg.count()
    g.admin("POST", "/admin/v1/sales/pg/restock", body={"add": 800})
    a2, counts = fgq.burst(g.port, "pg", ["k%04d" % i for i in range(800)], clients=4)
    eq(len(a2), 800, "second burst accepted: %r" % counts)
    fgq.wait_until(lambda: pg.count() >= before + 200, 20, step=0.05)
    s.kill9()
    n = pg.count() - before
    print("settle killed -9 after %d of %d new rows" % (n, len(a2)))
    check(0 < n < len(a2), "killed mid-run (%d new rows)" % n)
    s2 = fgq.Settle(g.data_dir, "--sql", SQL, db=pg.url, tmp=tmp).start()
    want = before + len(a2)
    t0 = time.time()
    ok = fgq.wait_until(lambda: pg.count() >= want, 40, step=0.3)
    check(ok, "all rows after the restart within 40 s (have %d, want %d)" % (pg.count(), want))
    print("after the settle restart: all in PostgreSQL in %.1f s" % (time.time() - t0))
    time.sleep(0.5)
    eq(pg.count(), want, "rows == 202 answers after kill -9")
    eq(int(pg.query("SELECT count(DISTINCT order_id) FROM orders")[0][0]), want, "no duplicates")
    eq(int(pg.query("SELECT count(*) FROM ledger")[0][0]), STOCK + len(a2),
       "the --sql step ran exactly once per settled order across the kill")
    got = {x[0] for x in pg.query("SELECT order_id FROM orders")}
    eq(len(set(a2) - got), 0, "every 202 of the second burst is in PostgreSQL")
    eq(s2.stop(), 0, "settle exits 0 on SIGTERM")
finally:
    if FAILS:
        print("--- flashgate log\n" + g.logs(), file=sys.stderr)
        for x in (s2, s):
            if x:
                print("--- settle log\n" + x.logs(), file=sys.stderr)
        print("--- postgres log\n" + pg.logs(), file=sys.stderr)
    for x in (s2, s):
        if x:
            x.stop()
    if s:
        s.cleanup()
    g.cleanup()
    pg.stop()
finish()
