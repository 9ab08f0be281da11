"""Leftovers by lot on one gateway (embedded broker, flashgate-settle): a
lottery with 8 entrants for 3 units draws 3 winners and waitlists the other
5 in draw order. While they wait, a first-come buyer who never entered gets
410 sold_out (the body says the units go to the waitlist). An operator cancel
of a winner's settled order frees a unit: it goes to the first loser in draw
order (GET /admin/v1/sales/{id}/draw), not to the first-come buyer who asks at
once; a restock of 2 goes to the next two. After a restart the waitlist goes
on where it was: the next restock admits the next loser, nobody twice. No
oversell (accepted units never above the stock), and every winner's order is
in the spool and in the topic exactly once."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, check, eq, finish, need_binary, rfc3339  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
fgq.need_tool("kcat")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
        "--set", "limits.sale_rps=0"]
STOCK, ENTRANTS = 3, 8


def draw(g):
    return g.admin("GET", "/admin/v1/sales/lv/draw").json


def outcomes(g):
    return [e["outcome"] for e in draw(g)["entries"]]


def wait_outcomes(g, want, timeout=10):
    ok = fgq.wait_until(lambda: outcomes(g) == want, timeout, step=0.05)
    eq(outcomes(g), want, "outcomes in draw order")
    return ok


def spool_orders(g):
    out = subprocess.run([os.path.join(BIN, "flashgate-spool"), "dump", "--data-dir", g.data_dir],
                         capture_output=True, text=True, timeout=60)
    eq(out.returncode, 0, "flashgate-spool dump: " + out.stderr[-300:])
    ids = []
    for line in out.stdout.splitlines():
        rec = json.loads(line)
        if "order_id" in rec and "event" not in rec:
            ids.append(rec["order_id"])
    return ids


def once(g, ids):
    """Each order of ids in the topic exactly once, in the spool at most once, and no order
    in the topic twice."""
    boot = fgq.bootstrap(g.data_dir)
    fgq.wait_until(lambda: set(ids) <= set(fgq.topic_order_ids(boot)), 15, step=0.2)
    tids, sp = fgq.topic_order_ids(boot), spool_orders(g)
    for w in ids:
        eq(tids.count(w), 1, "order %s in the topic once" % w)
        check(sp.count(w) <= 1, "order %s in the spool at most once" % w)
    eq(len(tids), len(set(tids)), "no order twice in the topic")


g = Gateway(*ARGS)
st = None
try:
    g.start()
    st = fgq.Settle(g.data_dir, tmp=os.path.join(g.tmp, "st")).start()
    starts = time.time() + 1.5
    r = g.admin("PUT", "/admin/v1/sales/lv", body={
        "stock": STOCK, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 1000, "fair_early_ms": 1500})
    eq(r.status, 201, "sale with a lottery")
    entry = {}
    for i in range(ENTRANTS):
        r = g.buy("lv", "e%d" % i)
        eq((r.status, r.json.get("status")), (202, "entered"), "entry e%d" % i)
        entry[r.json["order_id"]] = "e%d" % i
    ok = fgq.wait_until(lambda: draw(g)["state"] == "drawn", 10, step=0.05)
    check(ok, "drawn")
    d = draw(g)
    order = d["entries"]  # in draw order
    eq([e["outcome"] for e in order], ["won"] * STOCK + ["waitlisted"] * (ENTRANTS - STOCK),
       "the first 3 drawn won, the other 5 wait")
    eq((d["waitlisted"], d["lost"]), (ENTRANTS - STOCK, 0), "counts")
    for k, e in enumerate(order[STOCK:]):
        r = g.order(e["order_id"])
        eq((r.status, r.json.get("status"), r.json.get("waitlist_position"),
            r.json.get("draw_position")), (410, "waitlisted", k + 1, e["position"]),
           "a loser reads waitlisted with its place")

    # a first-come buyer who never entered: 410 while losers wait
    r = g.buy("lv", "outsider")
    eq((r.status, r.json.get("error")), (410, "sold_out"), "first-come outsider: sold out")

    # the winners settle; an operator cancel of the first frees its unit
    w0 = order[0]["order_id"]
    ok = fgq.wait_until(lambda: g.order(w0).json.get("status") == "settled", 15, step=0.05)
    check(ok, "winner's order settled")
    r = g.admin("POST", "/admin/v1/orders/%s/cancel" % w0, body={"reason": "leftovers test"})
    eq(r.status, 202, "cancel requested")
    # the outsider hammers while the unit comes back: never served
    outsider = []
    deadline = time.time() + 10
    while time.time() < deadline and outcomes(g)[STOCK] != "won":
        outsider.append(g.buy("lv", "outsider").status)
        time.sleep(0.02)
    wait_outcomes(g, ["won"] * (STOCK + 1) + ["waitlisted"] * (ENTRANTS - STOCK - 1))
    check(outsider and all(s == 410 for s in outsider),
          "the outsider never bought while losers wait (%d tries: %s)"
          % (len(outsider), sorted(set(outsider))))
    r = g.buy("lv", "outsider")
    eq(r.status, 410, "still 410 after the promotion")
    check("waitlist" in r.json.get("message", ""), "the body says units go to the waitlist: %r"
          % r.json)
    promoted = order[STOCK]["order_id"]
    r = g.order(promoted)
    check(r.status == 200 and r.json.get("status") in ("queued", "settled"),
          "the first loser has an order now: %r" % r.json)
    eq(g.order(w0).json.get("status"), "cancelled", "the cancelled winner")

    # a restock of 2: the next two in draw order
    r = g.admin("POST", "/admin/v1/sales/lv/restock", body={"add": 2})
    eq(r.status, 200, "restock")
    wait_outcomes(g, ["won"] * (STOCK + 3) + ["waitlisted"] * (ENTRANTS - STOCK - 3))
    eq(g.buy("lv", "outsider").status, 410, "losers still wait: 410")

    # every winner so far in the topic exactly once, in the spool at most once (the
    # relay releases what the broker has; the embedded broker does not outlive a kill -9)
    once(g, [e["order_id"] for e in draw(g)["entries"] if e["outcome"] == "won"])

    # a restart continues the waitlist: nobody admitted twice, the next one next
    g.kill9()
    g.start()
    wait_outcomes(g, ["won"] * (STOCK + 3) + ["waitlisted"] * (ENTRANTS - STOCK - 3), timeout=5)
    eq(g.buy("lv", "outsider").status, 410, "after the restart: still 410")
    r = g.admin("POST", "/admin/v1/sales/lv/restock", body={"add": 1})
    eq(r.status, 200, "restock after the restart")
    wait_outcomes(g, ["won"] * (STOCK + 4) + ["waitlisted"])
    # the last loser in: then first-come as before
    r = g.admin("POST", "/admin/v1/sales/lv/restock", body={"add": 2})
    wait_outcomes(g, ["won"] * ENTRANTS)
    ok = fgq.wait_until(lambda: g.buy("lv", "outsider").status == 202, 5, step=0.05)
    check(ok, "no loser left: first-come again (the outsider buys the spare unit)")

    s = g.admin("GET", "/admin/v1/sales/lv").json
    # 3 + 2 + 1 + 2 = 8 units made available; 9 orders, 1 cancelled
    eq((s["accepted_units"], s["stock_left"]), (8, 0), "no oversell, nothing lost")
    once(g, [e["order_id"] for e in draw(g)["entries"]][STOCK + 3:])
except Exception:
    print(g.logs()[-4000:])
    raise
finally:
    if st:
        st.stop()
    g.stop()
finish()
