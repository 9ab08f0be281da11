"""Past spool.max_bytes the buy path answers 503 "unavailable" rather than
accept an order it cannot keep, and the refused order takes no stock."""
import http.client
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-spool")

g = Gateway("--kafka-brokers", "none", "--spool-max-bytes", "1m", "--spool-segment-bytes", "64k",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0").start()
try:
    g.put_sale("big", stock=100000, per_user_limit=1)
    counts, accepted, lock = {}, [], threading.Lock()

    def client(i):
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        for n in range(1500):
            c.request("POST", "/v1/sales/big/orders", body=json.dumps({"user_id": "u%d-%d" % (i, n)}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            body = json.loads(r.read())
            with lock:
                key = (r.status, body.get("error", ""))
                counts[key] = counts.get(key, 0) + 1
                if r.status == 202:
                    accepted.append(body["order_id"])
                if r.status == 503:
                    check(r.getheader("Retry-After") is not None, "503 has Retry-After")
                    return
    ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    check(counts.get((503, "unavailable"), 0) > 0, "spool full answers 503 unavailable: %r" % counts)
    check(5000 < len(accepted) < 12000, "about 1 MiB of orders accepted (%d)" % len(accepted))
    s = g.admin("GET", "/admin/v1/sales/big").json
    eq(s["accepted_orders"], len(accepted), "a refused order took no stock")
    eq(s["stock_left"], 100000 - len(accepted), "stock matches the accepted orders")
    eq(sorted(g.spool_ids()), sorted(accepted), "the spool holds exactly the accepted orders")
    r = g.buy("big", "late-user-0001")  # longer than any refused record: cannot fit either
    eq((r.status, r.json["error"]), (503, "unavailable"), "still full")
    eq(g.get("/v1/sales/big").status, 200, "reads keep working while full")
finally:
    g.cleanup()
finish()
