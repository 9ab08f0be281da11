"""Lottery entries over HTTP on one gateway: entries/s and their latency.

    python3 bench/lottery_entries.py [ENTRIES]    (5000 by default)

Starts flashgate (build/, or FLASHGATE_BIN) without Kafka and a sale "lx" whose
start-window lottery takes entries from now (fair_early_ms one hour, starts in
an hour), then ENTRIES buyers enter once each on 32 keep-alive connections
(bench/room_fsync.py's buy_all): each entry is one frame appended to the sale's
entry log (<data-dir>/fair/lx.log) with one write(2). Prints the entries
answered 202, the rate and the latency p50/p99. Loopback only; stdlib only.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
from fg import Gateway, rfc3339  # noqa: E402
from room_fsync import buy_all  # noqa: E402

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
        "limits.subnet_rps=0", "--set", "limits.sale_rps=0", "--kafka-brokers", "none"]

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
g = Gateway(*ARGS).start()
try:
    r = g.admin("PUT", "/admin/v1/sales/lx", body={
        "stock": 10, "per_user_limit": 1, "starts_at": rfc3339(time.time() + 3600),
        "fair_window_ms": 1000, "fair_early_ms": 3600000})
    assert r.status == 201, r.json
    ok, secs, lat = buy_all(g.port, "lx", ["e%05d" % i for i in range(n)], None, 32)
    print("entries: %d in %.2f s, %.0f/s, p50 %.2f ms p99 %.2f ms" % (
        ok, secs, ok / secs, lat[len(lat) // 2], lat[int(len(lat) * 0.99)]))
finally:
    g.cleanup()
