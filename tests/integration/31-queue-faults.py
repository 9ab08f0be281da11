"""Faults on the order queue, with the real binaries and the embedded broker:

A. the broker is taken down (PUT /admin/v1/debug/broker {"down":true}): orders
   keep being accepted (202) into the spool, the stats show them unreleased, none
   reaches the database; once it is back, every one reaches the topic and the
   database exactly once.
B. kill -9 of flashgate in the middle of a burst, restart on the same data dir
   (the embedded broker comes back empty on a new port; flashgate-settle finds it
   through kafka.bootstrap): every 202 of both runs is in the database exactly once
   and GET /v1/orders says settled for all of them.
C. kill -9 of flashgate-settle in the middle of a rate-limited run, restart:
   database rows == 202 answers, no duplicates, nothing else.
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

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0",
        "--enable-debug-routes"]
STOCK = 100000


def db_ids(s):
    return [r[0] for r in fgq.sqlite_query(s.db_path, "SELECT order_id FROM orders")]


def check_db(s, accepted, what, timeout, unanswered=0):
    """Every 202 in SQLite once, nothing else; up to `unanswered` extra rows are
    orders the gateway took whose answer the kill -9 cut off."""
    want = set(accepted)
    ok = fgq.wait_until(lambda: fgq.sqlite_count(s.db_path) >= len(want), timeout, step=0.2)
    check(ok, "[%s] %d rows in SQLite within %d s (has %d)"
          % (what, len(want), timeout, fgq.sqlite_count(s.db_path)))
    time.sleep(0.5)  # anything extra would land now
    ids = db_ids(s)
    got = set(ids)
    eq(len(ids), len(got), "[%s] no order id twice in SQLite" % what)
    check(not (want - got), "[%s] every 202 order id in SQLite: %d missing (e.g. %r)"
          % (what, len(want - got), sorted(want - got)[:3]))
    check(len(got - want) <= unanswered,
          "[%s] SQLite rows == 202 answers (+ at most %d cut off by the kill): %d extra"
          % (what, unanswered, len(got - want)))
    if got - want:
        print("[%s] %d order(s) taken but unanswered at the kill, settled too" % (what, len(got - want)))
    eq(fgq.sqlite_count(s.db_path, "status <> 'settled'"), 0, "[%s] all rows settled" % what)
    return ok


def warm_up(g, sale, user):
    """One order settled: the consumer group has joined."""
    r = g.buy(sale, user)
    eq(r.status, 202, "warm-up buy")
    oid = r.json["order_id"]
    ok = fgq.wait_until(lambda: g.order(oid).json.get("status") == "settled", 20)
    check(ok, "warm-up order %s settled within 20 s" % oid)
    return oid


def dump_logs(*procs):
    if FAILS:
        for p in procs:
            if p:
                print("--- %s log\n%s" % (type(p).__name__, p.logs()[-6000:]), file=sys.stderr)


# ---------------------------------------------------------------- A. broker down
def part_a():
    g = Gateway(*ARGS)
    s = None
    try:
        g.start()
        boot = fgq.bootstrap(g.data_dir)
        g.put_sale("bd", stock=STOCK, per_user_limit=1)
        s = fgq.Settle(g.data_dir, tmp=os.path.join(g.tmp, "st")).start()
        acc = [warm_up(g, "bd", "warm")]

        r = g.admin("PUT", "/admin/v1/debug/broker", body={"down": True})
        eq(r.status, 200, "broker down: %r" % r)
        a1, counts = fgq.burst(g.port, "bd", ["d%04d" % i for i in range(800)], clients=4)
        print("[A] while down: %r" % counts)
        eq(len(a1), 800, "[A] every order accepted (202) with the broker down")
        acc += a1
        st = fgq.wait_until(lambda: (fgq.stats_relay(g).get("unreleased_records", 0) >= 800
                                     and fgq.stats_relay(g)), 5)
        check(st, "[A] stats relay shows >= 800 unreleased records: %r" % fgq.stats_relay(g))
        if st:
            print("[A] relay while down: unreleased=%d oldest_unacked_age_ms=%s inflight=%s"
                  % (st["unreleased_records"], st.get("oldest_unacked_age_ms"), st.get("inflight")))
        time.sleep(1.0)
        eq(fgq.sqlite_count(s.db_path), 1, "[A] nothing reaches the DB while the broker is down")
        some = fgq.statuses(g, a1[:50])
        eq(set(some.values()), {"queued"}, "[A] orders are queued while the broker is down")
        spooled = set(g.spool_ids())
        eq(len(set(a1) - spooled), 0, "[A] every 202 of the outage is in the spool")

        r = g.admin("PUT", "/admin/v1/debug/broker", body={"down": False})
        eq(r.status, 200, "broker up: %r" % r)
        t0 = time.time()
        a2, _ = fgq.burst(g.port, "bd", ["a%04d" % i for i in range(200)], clients=2)
        eq(len(a2), 200, "[A] accepted after the broker is back")
        acc += a2
        check_db(s, acc, "A", 40)
        print("[A] %d orders settled %.1f s after the broker came back" % (len(acc), time.time() - t0))
        tids = fgq.topic_order_ids(boot)
        check(set(tids) == set(acc), "[A] topic order ids == 202 order ids: %d missing, %d extra"
              % (len(set(acc) - set(tids)), len(set(tids) - set(acc))))
        d = fgq.dups(tids)
        print("[A] topic: %d messages, %d distinct, %d ids sent more than once"
              % (len(tids), len(set(tids)), len(d)))
        ok = fgq.wait_until(lambda: set(fgq.statuses(g, acc).values()) == {"settled"}, 10,
                            step=0.5)
        check(ok, "[A] GET /v1/orders says settled for all after the outage")
        ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("unreleased_records") == 0, 10)
        check(ok, "[A] spool drained after the outage: %r" % fgq.stats_relay(g))
    finally:
        dump_logs(g, s)
        if s:
            s.cleanup()
        g.cleanup()


# ------------------------------------------------ B. kill -9 of flashgate mid-burst
def part_b():
    g = Gateway(*ARGS)
    g2 = s = None
    try:
        g.start()
        boot1 = fgq.bootstrap(g.data_dir)
        g.put_sale("k9", stock=STOCK, per_user_limit=1)
        s = fgq.Settle(g.data_dir, tmp=os.path.join(g.tmp, "st")).start()
        acc = [warm_up(g, "k9", "warm")]
        ts, a1, counts, stop = fgq.burst_async(g.port, "k9", ["b%05d" % i for i in range(20000)],
                                               clients=4)
        # kill once some orders are settled and more are only spooled or in the topic
        fgq.wait_until(lambda: len(a1) >= 1500 and fgq.sqlite_count(s.db_path) >= 400, 10,
                       step=0.01)
        g.kill9()
        stop.set()
        for t in ts:
            t.join(20)
        print("[B] killed -9 after %d accepted: %r" % (len(a1), counts))
        check(500 <= len(a1) < 20000, "[B] killed mid-burst (%d accepted)" % len(a1))
        acc += a1
        time.sleep(0.3)
        at_kill = fgq.sqlite_count(s.db_path)
        print("[B] at the kill: %d in SQLite" % at_kill)
        check(at_kill > 1, "[B] some orders were settled before the kill")

        os.unlink(os.path.join(g.data_dir, "kafka.bootstrap"))  # so we read the new one
        g2 = Gateway(*ARGS, data_dir=g.data_dir).start()
        boot2 = fgq.bootstrap(g.data_dir)
        print("[B] broker moved %s -> %s" % (boot1, boot2))
        a2, counts2 = fgq.burst(g2.port, "k9", ["c%04d" % i for i in range(300)], clients=2)
        eq(len(a2), 300, "[B] accepted after the restart: %r" % counts2)
        acc += a2
        eq(len(set(acc)), len(acc), "[B] 202 order ids distinct across both runs")
        t0 = time.time()
        cut = sum(v for k, v in counts.items() if str(k).startswith("error"))
        if not check_db(s, acc, "B", 40, unanswered=cut):
            raise RuntimeError("[B] settlement did not resume after the restart")
        print("[B] %d orders in SQLite %.1f s after the restart" % (len(acc), time.time() - t0))
        ok = fgq.wait_until(lambda: set(fgq.statuses(g2, acc).values()) == {"settled"}, 15,
                            step=0.5)
        if not ok:
            st = fgq.statuses(g2, acc)
            bad = {k: v for k, v in st.items() if v != "settled"}
            check(False, "[B] GET /v1/orders settled for all after the restart (%d not, e.g. %r)"
                  % (len(bad), list(bad.items())[:3]))
        tids = fgq.topic_order_ids(boot2)
        check(len(set(tids) - set(acc)) <= cut,
              "[B] the new broker's topic holds only 202 orders (+ at most %d unanswered)" % cut)
        print("[B] new topic: %d messages (%d re-sent from the spool)" % (len(tids), len(set(a1) & set(tids))))
        ok = fgq.wait_until(lambda: fgq.stats_relay(g2).get("unreleased_records") == 0, 10)
        check(ok, "[B] spool drained: %r" % fgq.stats_relay(g2))
    finally:
        dump_logs(g, g2, s)
        if s:
            s.cleanup()
        if g2:
            g2.cleanup()
        g.cleanup()


# ------------------------------------------- C. kill -9 of flashgate-settle mid-run
def part_c():
    g = Gateway(*ARGS)
    s = s2 = None
    try:
        g.start()
        g.put_sale("sk", stock=STOCK, per_user_limit=1)
        tmp = os.path.join(g.tmp, "st")
        s = fgq.Settle(g.data_dir, "--max-rate", "500", "--batch", "50", tmp=tmp).start()
        acc = [warm_up(g, "sk", "warm")]
        a1, counts = fgq.burst(g.port, "sk", ["s%04d" % i for i in range(2000)], clients=4)
        eq(len(a1), 2000, "[C] burst accepted: %r" % counts)
        acc += a1
        fgq.wait_until(lambda: fgq.sqlite_count(s.db_path) >= 600, 15, step=0.02)
        s.kill9()
        n = fgq.sqlite_count(s.db_path)
        print("[C] settle killed -9 at %d of %d rows" % (n, len(acc)))
        check(300 <= n < len(acc), "[C] killed mid-run (%d rows)" % n)
        s2 = fgq.Settle(g.data_dir, "--batch", "200", tmp=tmp).start()
        t0 = time.time()
        check_db(s2, acc, "C", 40)
        print("[C] all settled %.1f s after the restart" % (time.time() - t0))
        ok = fgq.wait_until(lambda: set(fgq.statuses(g, acc).values()) == {"settled"}, 10,
                            step=0.5)
        check(ok, "[C] GET /v1/orders settled for all after the settle restart")
        eq(s2.stop(), 0, "[C] settle exits 0 on SIGTERM")
    finally:
        dump_logs(g, s2 or s)
        if s2:
            s2.stop()
        if s:
            s.cleanup()
        g.cleanup()


parts = sys.argv[1:] or ["a", "b", "c"]
for p in parts:
    t = time.time()
    try:
        {"a": part_a, "b": part_b, "c": part_c}[p]()
    except Exception as e:  # a part that cannot go on fails, the others still run
        check(False, "part %s: %s: %s" % (p.upper(), type(e).__name__, e))
    print("part %s: %.1f s" % (p.upper(), time.time() - t))
finish()
