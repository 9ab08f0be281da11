"""Orders end to end with the real binaries: flashgate (embedded broker) ->
topic flashgate.orders -> flashgate-settle -> SQLite.

A burst of 2,000 buyers for 1,500 units: exactly the stock is answered 202, every
202 order id is in the topic exactly once (kcat) and in SQLite exactly once,
nothing else is; GET /v1/orders/{id} says "settled" for all of them, and a fresh
order settles within a few seconds once the consumer group has joined; every
order has a "settled" outcome and the spool keeps no unsettled record.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
fgq.need_tool("kcat")

STOCK = 1500
BUYERS = 2000
ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]

g = Gateway(*ARGS)
s = None
try:
    g.start()
    boot = fgq.bootstrap(g.data_dir)
    g.put_sale("e2e", stock=STOCK, per_user_limit=1)
    s = fgq.Settle(g.data_dir, tmp=os.path.join(g.tmp, "st")).start()

    # 1. the first order: settled within a few seconds (the group join is ~3-4 s)
    t0 = time.time()
    r = g.buy("e2e", "first")
    eq(r.status, 202, "first buy")
    first = r.json["order_id"]
    st = fgq.wait_until(lambda: g.order(first).json.get("status") == "settled", 15)
    check(st, "first order settled within 15 s (group join included)")
    print("first order settled after %.2f s (consumer group join included)" % (time.time() - t0))

    # a HUP (a reload meant for the gateway, a log rotation) does not end settlement:
    # the burst below settles in the same process
    s.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    eq(s.proc.poll(), None, "flashgate-settle is still running after a SIGHUP")

    # 2. the burst: 2,000 distinct users for the remaining stock
    users = ["u%05d" % i for i in range(BUYERS)]
    t0 = time.time()
    acc, counts = fgq.burst(g.port, "e2e", users, clients=4)
    dt = time.time() - t0
    acc.append(first)
    print("burst: %d requests in %.2f s: %r" % (BUYERS, dt, counts))
    eq(len(acc), STOCK, "202 answers == stock")
    eq(counts.get(410, 0), BUYERS - (STOCK - 1), "the rest are 410 sold_out")
    eq(len(set(acc)), len(acc), "202 order ids are distinct")

    # 3. SQLite: every 202 once, nothing else, all settled
    ok = fgq.wait_until(lambda: fgq.sqlite_count(s.db_path) >= STOCK, 30)
    check(ok, "SQLite reaches %d rows within 30 s (has %d)" % (STOCK, fgq.sqlite_count(s.db_path)))
    print("all %d settled into SQLite %.2f s after the burst ended" % (STOCK, time.time() - t0 - dt))
    time.sleep(0.5)
    rows = fgq.sqlite_query(s.db_path, "SELECT order_id, status, sale_id, qty FROM orders")
    db_ids = [x[0] for x in rows]
    eq(len(db_ids), STOCK, "rows in SQLite")
    eq(set(db_ids), set(acc), "SQLite order ids == 202 order ids")
    eq(sum(1 for x in rows if x[1] == "settled"), STOCK, "every row settled")
    eq(sum(1 for x in rows if x[2] != "e2e" or x[3] != 1), 0, "sale id and qty as bought")
    sold = g.get("/v1/sales/e2e").json
    eq(sold.get("stock_left"), 0, "stock_left after the burst")

    # 4. the topic: every 202 exactly once (a clean run: the relay never re-sends)
    tids = fgq.topic_order_ids(boot)
    eq(len(tids), STOCK, "order messages in %s" % fgq.TOPIC)
    eq(len(fgq.dups(tids)), 0, "no order id twice in the topic")
    eq(set(tids), set(acc), "topic order ids == 202 order ids")
    vals = [v for v in fgq.kcat_values(boot) if isinstance(v, dict)]
    bad = [v for v in vals if v.get("sale_id") != "e2e" or v.get("qty") != 1 or
           not v.get("user_id") or not isinstance(v.get("accepted_at"), int)]
    eq(len(bad), 0, "every message carries sale_id, user_id, qty, accepted_at (first bad: %r)"
       % (bad[:1],))

    # 5. outcomes: a settled outcome for every order
    def outcome_ids():
        return {v["order_id"] for v in fgq.kcat_values(boot, fgq.OUTCOMES)
                if isinstance(v, dict) and v.get("status") == "settled"}
    got = fgq.wait_until(lambda: outcome_ids() >= set(acc), 10, step=0.3)
    check(got, "a settled outcome for every order")

    # 6. GET /v1/orders/{id}: settled for every 202
    def all_settled():
        st = fgq.statuses(g, acc)
        return [i for i, v in st.items() if v != "settled"] or True
    left = fgq.wait_until(lambda: all_settled() is True, 10, step=0.3)
    if not left:
        notyet = all_settled()
        check(False, "GET /v1/orders says settled for all (%d not: %r)"
              % (len(notyet), list(fgq.statuses(g, notyet[:3]).items())))

    # 7. steady state: a new order settles within 2 s of its 202 (group already joined)
    g.admin("POST", "/admin/v1/sales/e2e/restock", body={"add": 10})
    lat = []
    for i in range(5):
        t0 = time.time()
        r = g.buy("e2e", "late%d" % i)
        if r.status != 202:
            check(False, "late buy %d: %r" % (i, r))
            continue
        oid = r.json["order_id"]
        fgq.wait_until(lambda: g.order(oid).json.get("status") == "settled", 5,
                       step=0.02)
        lat.append(time.time() - t0)
    if lat:
        print("accept-to-settled (steady state): max %.3f s of %d" % (max(lat), len(lat)))
        check(max(lat) < 2.0, "accept-to-settled within 2 s: %r" % lat)

    # 8. the embedded broker's spool keeps nothing that is settled
    rel = fgq.wait_until(lambda: fgq.stats_relay(g).get("unreleased_records") == 0 or None, 5)
    check(rel, "no unreleased spool records once everything settled: %r" % fgq.stats_relay(g))
    eq(fgq.stats_relay(g).get("errors"), 0, "relay errors")

    eq(s.stop(), 0, "settle exits 0 on SIGTERM")
    eq(g.stop(), 0, "flashgate exits 0 on SIGTERM")
finally:
    from fg import FAILS
    if FAILS:
        print("--- flashgate log\n" + g.logs(), file=sys.stderr)
        if s:
            print("--- settle log\n" + s.logs(), file=sys.stderr)
    if s:
        s.cleanup()
    g.cleanup()
finish()
