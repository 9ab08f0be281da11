"""The waiting room's pre-queue, one place per person and admission tokens
spent once, on one gateway.

- Scalpers join first, then people, all before starts_at: each is told
  "prequeue" (no place yet), joining again counts once, the seed is secret.
- From the start every pre-queue person holds the rank of SipHash(seed, person)
  with the seed the admin draw view now publishes: recomputed here, rank for
  rank, so the order is the hash's and not the arrival's; the scalpers who
  came first gain nothing (they do not hold the first places; their mean rank
  is printed beside the people's). Later arrivals are first-come behind.
- The admission token admits one order: a second buy with it is 403
  admission_spent, of 8 concurrent buys with one token exactly one is 202, the
  retry of the spending buy with its Idempotency-Key gets its order back, and a
  buy refused (sold out) leaves the token to buy after a restock.
- Room and lottery: the lottery's entry window takes entries without a token;
  after the draw the room governs first-come buys (403 without a token, 202
  with one).
- The admin export (GET /admin/v1/sales/{id}/room/persons) lists the sealed
  pre-queue's persons with their ranks, in pages.
- A fleet of three gateways on Redis (one room in Redis: 103-room-fleet has the
  rest): the pre-queue each gateway took is ranked with the others' by the one
  published seed, a token given by one gateway buys through another, once, and
  of 8 concurrent buys with one token exactly one is 202."""
import os
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, rfc3339  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

M64 = (1 << 64) - 1


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & M64


def siphash24(key, data):
    """SipHash-2-4 of data under the 16-byte key (the auditor's side of the order)."""
    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d, k0 ^ 0x6c7967656e657261,
         k1 ^ 0x7465646279746573]

    def rnd():
        v[0] = (v[0] + v[1]) & M64; v[1] = _rotl(v[1], 13); v[1] ^= v[0]; v[0] = _rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M64; v[3] = _rotl(v[3], 16); v[3] ^= v[2]
        v[0] = (v[0] + v[3]) & M64; v[3] = _rotl(v[3], 21); v[3] ^= v[0]
        v[2] = (v[2] + v[1]) & M64; v[1] = _rotl(v[1], 17); v[1] ^= v[2]; v[2] = _rotl(v[2], 32)

    n = len(data)
    tail = n & ~7
    for i in range(0, tail, 8):
        m = struct.unpack("<Q", data[i:i + 8])[0]
        v[3] ^= m; rnd(); rnd(); v[0] ^= m
    last = (n & 0xff) << 56
    for i, c in enumerate(data[tail:]):
        last |= c << (8 * i)
    v[3] ^= last; rnd(); rnd(); v[0] ^= last
    v[2] ^= 0xff
    for _ in range(4):
        rnd()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def wait_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
            "limits.subnet_rps=0", "--kafka-brokers", "none"]
SCALPERS = ["scalper%d" % i for i in range(10)]
PEOPLE = ["person%02d" % i for i in range(30)]

g = Gateway(*NOLIMITS).start()
try:
    # level 0 pinned: the front moves at the configured rate on a loaded machine too
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 0}).status, 200, "level 0 pinned")
    starts = int(time.time()) + 4
    r = g.admin("PUT", "/admin/v1/sales/pq", body={
        "stock": 1000, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "waiting_room_rate": 1000})
    eq(r.status, 201, "sale with a waiting room, starting in 4 s")
    r = g.admin("PUT", "/admin/v1/sales/rl", body={
        "stock": 10, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 1000, "fair_early_ms": 3000, "waiting_room_rate": 1000})
    eq(r.status, 201, "sale with a lottery and a waiting room")

    # --- before the start: the pre-queue ---
    for u in SCALPERS + PEOPLE:
        r = g.get("/v1/sales/pq/queue?user_id=" + u)
        eq((r.status, r.json.get("prequeue"), "position" in r.json), (200, True, False),
           "%s joins the pre-queue, no place yet" % u)
    check(r.json["starts_at"].startswith(rfc3339(starts).rstrip("Z")),
          "the pre-queue answer says when the order is drawn: %r" % r.json)
    for u in SCALPERS:  # scripts hammer the join
        g.get("/v1/sales/pq/queue?user_id=" + u)
    eq(g.get("/v1/sales/pq/queue").json["prequeued"], 40, "one pre-queue entry per person")
    room = g.admin("GET", "/admin/v1/sales/pq/draw").json["room"]
    eq((room["prequeue_size"], room["sealed"], "seed" in room), (40, False, False),
       "the seed is secret before the start")
    eq(g.buy("pq", "person00").status, 425, "no buy before the start")

    # room + lottery: the entry window takes entries without an admission token
    wait_until(starts - 2.5)  # the entry window opens 3 s before the start
    entrants = ["ent%d" % i for i in range(3)]
    for u in entrants:
        r = g.buy("rl", u)
        eq((r.status, r.json.get("status")), (202, "entered"),
           "a lottery entry needs no admission token (%s)" % u)

    # --- the start ---
    wait_until(starts + 0.3)
    late = []
    for i in range(5):
        r = g.get("/v1/sales/pq/queue?user_id=late%d" % i)
        late.append(r.json["position"])
    eq(late, list(range(41, 46)), "later arrivals queue first-come behind the pre-queue")
    room = g.admin("GET", "/admin/v1/sales/pq/draw").json["room"]
    eq((room["prequeue_size"], room["sealed"], room["hash"]), (40, True, "siphash-2-4"),
       "the pre-queue is sealed at the start")
    seed = bytes.fromhex(room["seed"])
    pos = {}
    for u in SCALPERS + PEOPLE:
        r = g.get("/v1/sales/pq/queue?user_id=" + u)
        pos[u] = r.json["position"]
    eq(sorted(pos.values()), list(range(1, 41)), "the pre-queue holds places 1..40")
    keys = {u: (siphash24(seed, u.encode()) or 1) for u in pos}
    order = sorted(pos, key=lambda u: keys[u])
    eq({u: i + 1 for i, u in enumerate(order)}, pos,
       "every place is the rank of SipHash(published seed, person): reproducible")
    listed, cursor = {}, "0"
    while cursor is not None:
        r = g.admin("GET", "/admin/v1/sales/pq/room/persons?limit=16&cursor=" + cursor)
        eq(r.status, 200, "the pre-queue export's page at %s" % cursor)
        listed.update({x["person"]: x["rank"] for x in r.json["persons"]})
        cursor = r.json["next_cursor"]
    eq(listed, pos, "the export lists every pre-queue person with their rank")
    mean_s = sum(pos[u] for u in SCALPERS) / len(SCALPERS)
    mean_p = sum(pos[u] for u in PEOPLE) / len(PEOPLE)
    print("mean rank: scalpers (joined first) %.1f, people %.1f, first-come would be 5.5 / 25.5"
          % (mean_s, mean_p))
    # 10 of 40 at random: all of them in places 1..10 has probability 1/C(40,10)
    # (1.2e-9), a mean rank of 6 or less (sum <= 60) 12/C(40,10)
    check(sorted(pos[u] for u in SCALPERS) != list(range(1, 11)),
          "the scalpers who came first do not hold the first places")
    check(mean_s > 6.0, "scalpers' mean rank %.1f is not the first-comers' 5.5" % mean_s)

    # --- admission tokens: one order each ---
    time.sleep(0.3)  # 1000 per second: the front passed 45
    best = order[0]
    r = g.get("/v1/sales/pq/queue?user_id=" + best)
    tok = r.json["admission_token"]
    r = g.buy("pq", best, key="k-best", headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("status")), (202, "queued"), "the best place buys")
    oid = r.json["order_id"]
    r = g.buy("pq", best, key="k-best", headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("order_id")), (202, oid),
       "the retry with the Idempotency-Key of the spending buy gets its order back")
    r = g.buy("pq", best, headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("error"), r.json.get("reason")),
       (403, "admission_required", "admission_spent"), "a second buy with the token is refused")

    racer = order[1]
    tok2 = g.get("/v1/sales/pq/queue?user_id=" + racer).json["admission_token"]
    codes, lock = [], threading.Lock()

    def race():
        rr = g.buy("pq", racer, headers={"X-Admission-Token": tok2})
        with lock:
            codes.append((rr.status, rr.json.get("reason")))

    ths = [threading.Thread(target=race) for _ in range(8)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    eq(sorted(codes), [(202, None)] + [(403, "admission_spent")] * 7,
       "8 concurrent buys with one token: exactly one order")

    # a refused buy does not spend the token
    r = g.admin("PUT", "/admin/v1/sales/one", body={"stock": 1, "waiting_room_rate": 1000})
    eq(r.status, 201, "a sale of one unit with a waiting room")
    ta = g.get("/v1/sales/one/queue?user_id=a").json
    tb = g.get("/v1/sales/one/queue?user_id=b").json
    time.sleep(0.3)
    ta = g.get("/v1/sales/one/queue?user_id=a").json["admission_token"]
    tb = g.get("/v1/sales/one/queue?user_id=b").json["admission_token"]
    eq(g.buy("one", "a", headers={"X-Admission-Token": ta}).status, 202, "a buys the unit")
    eq(g.buy("one", "b", headers={"X-Admission-Token": tb}).status, 410, "b: sold out")
    eq(g.admin("POST", "/admin/v1/sales/one/restock", body={"add": 1}).status, 200, "restock")
    eq(g.buy("one", "b", headers={"X-Admission-Token": tb}).status, 202,
       "b's token, not spent by the refusal, buys after the restock")

    # --- room + lottery after the draw: the room governs first-come buys ---
    deadline = time.time() + 10
    while time.time() < deadline:
        d = g.admin("GET", "/admin/v1/sales/rl/draw").json
        if d["state"] == "drawn":
            break
        time.sleep(0.1)
    eq(d["state"], "drawn", "the lottery drew")
    eq(d["won_orders"], 3, "every entrant won (stock 10)")
    r = g.buy("rl", "after1")
    eq((r.status, r.json.get("error")), (403, "admission_required"),
       "after the draw a buy needs its admission token")
    t = g.get("/v1/sales/rl/queue?user_id=after1").json
    check("admission_token" in t, "the room admits after the draw: %r" % t)
    r = g.buy("rl", "after1", headers={"X-Admission-Token": t["admission_token"]})
    eq((r.status, r.json.get("status")), (202, "queued"), "and the token buys")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()


def ranks_by_seed(g, sale, persons):
    seed = bytes.fromhex(g.admin("GET", "/admin/v1/sales/%s/draw" % sale).json["room"]["seed"])
    order = sorted(persons, key=lambda u: siphash24(seed, u.encode()) or 1)
    return {u: i + 1 for i, u in enumerate(order)}


def race(g, sale, user, tok, n=8):
    codes, lock = [], threading.Lock()

    def one():
        rr = g.buy(sale, user, headers={"X-Admission-Token": tok})
        with lock:
            codes.append((rr.status, rr.json.get("reason")))

    ths = [threading.Thread(target=one) for _ in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return sorted(codes)


redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 3, extra=NOLIMITS[:-2])
    for x in gws:
        eq(x.admin("PUT", "/admin/v1/degrade", body={"level": 0}).status, 200, "level 0 pinned")
    starts = int(time.time()) + 3
    r = gws[0].admin("PUT", "/admin/v1/sales/fq", body={
        "stock": 100, "per_user_limit": 1, "starts_at": rfc3339(starts), "waiting_room_rate": 3000})
    eq(r.status, 201, "a fleet sale with a waiting room")
    ok, _ = wait_for(lambda: all(x.get("/v1/sales/fq/queue").status == 200 for x in gws), 5)
    eq(ok, True, "every gateway has the room")
    joined = {i: ["f%d-%02d" % (i, k) for k in range(12)] for i in range(3)}
    for i, x in enumerate(gws):
        for u in joined[i]:
            r = x.get("/v1/sales/fq/queue?user_id=" + u)
            eq((r.status, r.json.get("prequeue")), (200, True), "%s joins the pre-queue" % u)
    wait_until(starts + 0.5)
    everyone = [u for i in range(3) for u in joined[i]]
    ok, _ = wait_for(lambda: all(x.admin("GET", "/admin/v1/sales/fq/draw").json["room"]["sealed"]
                                 for x in gws), 3)
    eq(ok, True, "every gateway knows the seal")
    for i, x in enumerate(gws):
        want = ranks_by_seed(x, "fq", everyone)
        got = {u: x.get("/v1/sales/fq/queue?user_id=" + u).json["position"] for u in joined[i]}
        eq(got, {u: want[u] for u in joined[i]},
           "gateway %d ranks its joiners among the fleet's by the published seed" % i)
    time.sleep(0.3)
    best = [u for u, p in ranks_by_seed(gws[0], "fq", everyone).items() if p == 1][0]
    tok = gws[0].get("/v1/sales/fq/queue?user_id=" + best).json["admission_token"]
    r = gws[1].buy("fq", best, headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("status")), (202, "queued"), "gateway 0's token buys through gateway 1")
    r = gws[1].buy("fq", best, headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("reason")), (403, "admission_spent"), "once")
    second = [u for u, p in ranks_by_seed(gws[2], "fq", everyone).items() if p == 2][0]
    tok2 = gws[2].get("/v1/sales/fq/queue?user_id=" + second).json["admission_token"]
    eq(race(gws[2], "fq", second, tok2), [(202, None)] + [(403, "admission_spent")] * 7,
       "8 concurrent buys with one token, reserves in Redis: exactly one order")
except Exception:
    for x in gws:
        print(x.logs())
    raise
finally:
    for x in gws:
        x.cleanup()
    redis.cleanup()
finish()
