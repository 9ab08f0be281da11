"""Orders the embedded broker dropped before settle read them are sent again.

librdkafka 2.0.2's mock cluster keeps at most 5 MiB (or 100,000 message sets)
per partition and drops the oldest message sets past that. With settle stopped,
the gateway accepts orders, then filler (garbage that settle and the gateway
skip) is written to every partition of the orders topic until the orders fall
below the partitions' log start. The relay produces them again, settle
still stopped; a second filler pushes them out again, and they come back
again (after a back-off). Settle is started: every accepted order must
still reach SQLite (the relay sees its order's offset fall below the low
watermark and produces it again from the spool), the spool must release them
all, and the gateway's relay.retention_resent must count the resends.

Before the fix the orders were never settled: they stayed in the spool,
unsettled, until the gateway restarted.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
fgq.need_tool("kcat")

ORDERS = 200
PARTITIONS = 4           # the embedded broker's default
FILLER_BYTES = 512 * 1024
FILLER_PER_PART = 12     # 6 MiB a partition: more than the mock's 5 MiB
ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]

g = Gateway(*ARGS)
s = None
try:
    g.start()
    boot = fgq.bootstrap(g.data_dir)
    g.put_sale("ret", stock=ORDERS, per_user_limit=1)

    # 1. orders accepted and delivered to the broker; nobody settles them
    users = ["u%04d" % i for i in range(ORDERS)]
    acc, counts = fgq.burst(g.port, "ret", users, clients=4)
    eq(len(acc), ORDERS, "202 answers (%r)" % counts)
    ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("awaiting_outcome") == ORDERS, 10)
    check(ok, "all %d orders delivered, awaiting their outcome (%r)" % (ORDERS, fgq.stats_relay(g)))

    # 2. filler pushes them out of the broker's log (kcat -P, one value a line)
    filler = os.path.join(g.tmp, "filler")
    with open(filler, "w") as f:
        for i in range(FILLER_PER_PART):
            f.write(("filler-%d-" % i) + "x" * (FILLER_BYTES - 20) + "\n")

    def push_out(what):
        r0 = fgq.stats_relay(g).get("retention_resent", 0)
        for p in range(PARTITIONS):
            out = subprocess.run(["kcat", "-P", "-b", boot, "-t", fgq.TOPIC, "-p", str(p),
                                  "-X", "message.max.bytes=1000000", "-l", filler],
                                 capture_output=True, text=True, timeout=30)
            eq(out.returncode, 0, "kcat -P partition %d (%s)" % (p, out.stderr[-300:]))
        left = [i for i in fgq.topic_order_ids(boot) if i in set(acc)]
        # the relay may already have produced the first partitions' orders again
        # (its watermark look is once a second; a slow run, e.g. under ASan, sees
        # it before reading the topic): whatever is still there must be a resend
        again = fgq.stats_relay(g).get("retention_resent", 0) - r0
        check(len(left) <= again, "accepted orders still held by the broker after the %s "
              "filler: %d, of which produced again since it began: %d" % (what, len(left), again))

    push_out("first")
    # still no settle: the relay puts them back (1 s after their delivery) ...
    ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("retention_resent", 0) >= ORDERS, 10)
    check(ok, "orders produced again while settle is stopped (%r)" % fgq.stats_relay(g))
    ok = fgq.wait_until(lambda: len(set(fgq.topic_order_ids(boot)) & set(acc)) == ORDERS, 10)
    check(ok, "every accepted order is back in the topic")
    # ... and once more when they fall out again (after a 2 s back-off)
    push_out("second")
    t1 = time.time()
    ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("retention_resent", 0) >= 2 * ORDERS, 10)
    check(ok, "produced again after falling out twice (%r)" % fgq.stats_relay(g))
    print("second resend %.1f s after the second filler" % (time.time() - t1))

    # 3. settle starts: every accepted order reaches SQLite all the same
    t0 = time.time()
    s = fgq.Settle(g.data_dir, tmp=os.path.join(g.tmp, "st")).start()
    ok = fgq.wait_until(lambda: fgq.sqlite_count(s.db_path) >= ORDERS, 40)
    n = fgq.sqlite_count(s.db_path)
    check(ok, "every accepted order settled within 40 s of settle's start (%d of %d)" % (n, ORDERS))
    print("%d orders settled %.1f s after settle started" % (n, time.time() - t0))
    rows = set(r[0] for r in fgq.sqlite_query(s.db_path, "SELECT order_id FROM orders"))
    eq(len(set(acc) - rows), 0, "202 order ids missing from SQLite")
    eq(len(rows - set(acc)), 0, "SQLite order ids not answered 202")

    # 4. the spool lets them go, and the stats say why they went twice
    ok = fgq.wait_until(lambda: fgq.stats_relay(g).get("unreleased_records") == 0, 15)
    rs = fgq.stats_relay(g)
    check(ok, "the spool releases every order (%r)" % rs)
    check(rs.get("retention_resent", 0) >= 2 * ORDERS,
          "relay.retention_resent counts the resends (%r)" % rs.get("retention_resent"))
    st = fgq.statuses(g, acc[:20])
    eq(sorted(set(st.values())), ["settled"], "GET /v1/orders says settled")
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
