"""One gateway's waiting room survives a restart: kill -9 in the
middle of a sale, then a graceful restart, on the same data dir.

- Before the start persons join the pre-queue; at the start it is sealed,
  later arrivals queue behind it, the front admits the first places, one
  admitted person spends their token on an order, another holds an unspent one.
- kill -9, restart: the room's seed is the same, the pre-queue the same size
  and every person holds the place they held (ranks of the pre-queue, places of
  the later arrivals); a new arrival queues after the last place given, not at
  1; the front did not go back; the spent token is 403 admission_spent and its
  Idempotency-Key retry gets its order; the unspent one is given again as it
  was (same expiry and replay id) and buys once.
- A graceful restart (SIGTERM) keeps the same, with the second token now spent,
  and a torn last line (a write cut short) is cut off at the load: the lines
  written after it are read back at the next start."""
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, rfc3339  # noqa: E402

need_binary("flashgate")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
        "limits.subnet_rps=0", "--kafka-brokers", "none"]
PRE = ["pre%02d" % i for i in range(20)]
LATE = ["late%d" % i for i in range(5)]


def wait_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


def room(g):
    return g.admin("GET", "/admin/v1/sales/rr/draw").json["room"]


def places(g, users):
    out = {}
    for u in users:
        r = g.get("/v1/sales/rr/queue?user_id=" + u)
        eq(r.status, 200, "%s's place" % u)
        out[u] = r.json["position"]
    return out


def token(g, u):
    return g.get("/v1/sales/rr/queue?user_id=" + u).json.get("admission_token")


def spent(r):
    return (r.status, r.json.get("reason")) == (403, "admission_spent")


g = Gateway(*ARGS).start()
g2 = g3 = g4 = None
try:
    starts = int(time.time()) + 3
    r = g.admin("PUT", "/admin/v1/sales/rr", body={
        "stock": 100, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "waiting_room_rate": 4})
    eq(r.status, 201, "sale with a waiting room (4 admissions a second), starting in 3 s")
    for u in PRE:
        eq(g.get("/v1/sales/rr/queue?user_id=" + u).json.get("prequeue"), True,
           "%s joins the pre-queue" % u)
    wait_until(starts + 0.2)
    late = places(g, LATE)
    eq(sorted(late.values()), list(range(21, 26)), "later arrivals queue behind the pre-queue")
    before = places(g, PRE)
    eq(sorted(before.values()), list(range(1, 21)), "the pre-queue holds places 1..20")
    before.update(late)
    rm = room(g)
    seed = rm["seed"]
    check(rm["sealed"], "sealed at the start")
    rank = sorted(PRE, key=lambda u: before[u])
    deadline = time.time() + 5
    while g.get("/v1/sales/rr/queue").json["admitting_through"] < 2 and time.time() < deadline:
        time.sleep(0.05)
    t1, t2 = token(g, rank[0]), token(g, rank[1])
    check(t1 and t2, "the first two places are admitted: %r %r" % (t1, t2))
    r = g.buy("rr", rank[0], key="k-first", headers={"X-Admission-Token": t1})
    eq((r.status, r.json.get("status")), (202, "queued"), "the first place buys")
    oid = r.json["order_id"]
    check(spent(g.buy("rr", rank[0], headers={"X-Admission-Token": t1})),
          "its token is spent (before the restart)")
    front = g.get("/v1/sales/rr/queue").json["admitting_through"]

    # --- kill -9 and restart ---
    g.kill9()
    g2 = Gateway(*ARGS, data_dir=g.data_dir).start()
    rm = room(g2)
    eq((rm.get("seed"), rm["sealed"], rm["prequeue_size"]), (seed, True, 20),
       "after kill -9: the same seed, sealed, the same pre-queue")
    check(g2.get("/v1/sales/rr/queue").json["admitting_through"] >= front,
          "the admission front did not go back (%d before)" % front)
    eq(places(g2, PRE + LATE), before, "every person holds the place they held")
    eq(places(g2, ["new1"]), {"new1": 26}, "a new arrival queues after the last place given")
    r = g2.buy("rr", rank[0], headers={"X-Admission-Token": t1})
    check(spent(r), "the spent token is refused after kill -9: %d %r" % (r.status, r.json))
    r = g2.buy("rr", rank[0], key="k-first", headers={"X-Admission-Token": t1})
    eq((r.status, r.json.get("order_id")), (202, oid),
       "its Idempotency-Key retry gets its order back")
    eq(token(g2, rank[1]), t2, "the unspent token is given again as it was")

    # --- a graceful restart, with a torn last line ---
    eq(g2.buy("rr", rank[1], headers={"X-Admission-Token": t2}).status, 202,
       "the second place buys with the token given before the kill")
    front = g2.get("/v1/sales/rr/queue").json["admitting_through"]
    eq(g2.stop(), 0, "graceful stop")
    logs = glob.glob(os.path.join(g.data_dir, "fair", "rr.room"))
    eq(len(logs), 1, "the room's log is <data_dir>/fair/rr.room")
    size = os.path.getsize(logs[0])
    with open(logs[0], "a") as f:
        f.write("P 00000000")  # a write cut short
    g3 = Gateway(*ARGS, data_dir=g.data_dir).start()
    eq(os.path.getsize(logs[0]) >= size, True, "the log is kept")
    with open(logs[0]) as f:
        check("P 00000000" not in f.read(), "the torn line was cut off at the load")
    rm = room(g3)
    eq((rm.get("seed"), rm["prequeue_size"]), (seed, 20), "after SIGTERM: the same seed")
    check(g3.get("/v1/sales/rr/queue").json["admitting_through"] >= front,
          "the front did not go back (%d before)" % front)
    eq(places(g3, PRE + LATE + ["new1"]), dict(before, new1=26), "every place kept")
    check(spent(g3.buy("rr", rank[1], headers={"X-Admission-Token": t2})),
          "the token spent before the graceful restart is refused")
    check(spent(g3.buy("rr", rank[0], headers={"X-Admission-Token": t1})),
          "and the one spent before the kill still is")
    eq(places(g3, ["new2"]), {"new2": 27}, "a place given after the cut line")
    eq(g3.stop(), 0, "graceful stop")
    g4 = Gateway(*ARGS, data_dir=g.data_dir).start()
    eq(places(g4, ["new2", "new1"]), {"new2": 27, "new1": 26},
       "the lines written after the cut are read back")
    eq(g4.stop(), 0, "graceful stop")
except Exception:
    for x in (g, g2, g3, g4):
        if x:
            print(x.logs())
    raise
finally:
    for x in (g4, g3, g2, g):
        if x:
            x.cleanup()
finish()
