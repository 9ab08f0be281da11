"""The waiting room of a fleet: one room per sale in Redis, shared
by three gateways (docs/design.md "The waiting room, per person", docs/fleet.md).
identity.mode=jwt with identity.person_claim=person, tokens minted by
flashgate-token with --person.

- Scalpers (two accounts each) join the pre-queue on gateway A 2 s before the
  people join it on gateway B: all are told "prequeue", the seed is secret on
  every gateway. From the start every person holds the rank of
  SipHash(seed, person) over the whole fleet's pre-queue, the seed published
  alike by all three gateways: recomputed here from the published seed, rank
  for rank, and the scalpers who came first gain nothing. The admin export
  (GET /admin/v1/sales/{id}/room/persons, paginated) lists the same ranks.
- One place per person across gateways: a second account of a person asks
  gateway C and gets the person's place; later arrivals are first-come behind
  the pre-queue, fleet-wide (one counter).
- The admitted front is the fleet's: every gateway gives an admitted place the
  same token. A token spent on A is refused on B (403 admission_spent); the
  Idempotency-Key retry of the spending buy, sent to B, gets its order back.
- A gateway restarted keeps the room: the places, the seal, the seed, the spent
  token (the state is Redis').
- Redis down: a join and a buy with a token are 503, never a place or an order
  from a local guess; the cheap answers need no Redis (the queue page, a buy
  before the start).
- A sale deleted takes its room's keys with it; made again under the id, its
  room is new (not sealed) and its seed is not the old room's published one
  (a gateway that knew the old room sealed never offers that seed again).
Bounded: ~100 requests, a 5 s pre-queue (~15 s)."""
import os
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, check, eq, finish, need_binary, request, rfc3339  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-token")
need_redis()

TMP = tempfile.mkdtemp(prefix="fg-roomfleet-")
ISSUER = os.path.join(TMP, "issuer")
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


_tokens = {}


def token(user, person):
    if (user, person) not in _tokens:
        out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER,
                              "--ttl", "600", "--person", person, user],
                             capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            raise RuntimeError("flashgate-token: %s" % out.stderr)
        _tokens[(user, person)] = out.stdout.strip()
    return _tokens[(user, person)]


def hdrs(user, person, ip="10.2.0.1", extra=None):
    h = {"X-Forwarded-For": ip, "Authorization": "Bearer " + token(user, person)}
    h.update(extra or {})
    return h


def join(g, sale, user, person):
    return request(g.port, "GET", "/v1/sales/%s/queue?join=1" % sale, headers=hdrs(user, person),
                   timeout=10)


def buy(g, sale, user, person, tok=None, key=None):
    extra = {}
    if tok:
        extra["X-Admission-Token"] = tok
    if key:
        extra["Idempotency-Key"] = key
    return request(g.port, "POST", "/v1/sales/%s/orders" % sale, body={"qty": 1},
                   headers=hdrs(user, person, extra=extra), timeout=10)


def wait_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


def room(g, sale):
    return g.admin("GET", "/admin/v1/sales/%s/draw" % sale).json["room"]


os.makedirs(ISSUER)
subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER, "--init", "--jwks"],
               capture_output=True, check=True, timeout=20)
jwks = os.path.join(TMP, "jwks.json")
with open(jwks, "w") as f:
    f.write(subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", ISSUER, "--jwks"],
                           capture_output=True, text=True, check=True, timeout=20).stdout)

SCALPERS = ["sc%d" % i for i in range(8)]          # persons, two accounts each
PEOPLE = ["pp%02d" % i for i in range(16)]          # persons, one account each
PERSONS = SCALPERS + PEOPLE
ACCOUNTS = {p: ["%s-a" % p, "%s-b" % p] if p in SCALPERS else ["%s-a" % p] for p in PERSONS}
for p in PERSONS:  # minted now: the clock below is the sale's, not flashgate-token's
    for a in ACCOUNTS[p]:
        token(a, p)
token("pp00-c", "pp00")
for u in ("late1", "late2", "late3"):
    token(u, u)

redis = Redis()  # the AOF: a restart keeps the sale and the room
gws = []
try:
    redis.start()
    gws = start_fleet(redis, 3, extra=(
        "--set", "identity.mode=jwt", "--set", "identity.jwks_file=" + jwks,
        "--set", "identity.person_claim=person",
        "--server-trusted-proxies", "127.0.0.1/32",
        "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0",
        "--set", "limits.subnet_rps=0"))
    A, B, C = gws
    starts = int(time.time()) + 5
    r = A.admin("PUT", "/admin/v1/sales/rf", body={
        "stock": 100, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "waiting_room_rate": 1000})
    eq(r.status, 201, "a fleet sale with a waiting room, starting in ~5 s")
    r = A.admin("PUT", "/admin/v1/sales/later", body={
        "stock": 10, "per_user_limit": 1, "starts_at": rfc3339(starts + 3600),
        "waiting_room_rate": 10})
    eq(r.status, 201, "a sale starting in an hour, with a waiting room")
    ok, _ = wait_for(lambda: all(g.get("/v1/sales/rf/queue").status == 200 and
                                 g.get("/v1/sales/later/queue").status == 200 for g in gws), 5)
    eq(ok, True, "every gateway has both rooms")

    # --- before the start: scalpers on A first, people on B 2 s later ---
    for p in SCALPERS:
        for a in ACCOUNTS[p]:
            r = join(A, "rf", a, p)
            eq((r.status, r.json.get("prequeue"), "position" in r.json), (200, True, False),
               "scalper %s (%s) joins the pre-queue on A" % (a, p))
    time.sleep(2)
    for p in PEOPLE:
        r = join(B, "rf", ACCOUNTS[p][0], p)
        eq((r.status, r.json.get("prequeue")), (200, True), "person %s joins on B" % p)
    r = join(C, "rf", "pp00-c", "pp00")
    eq((r.status, r.json.get("prequeue")), (200, True), "pp00's second account joins on C")
    ok, _ = wait_for(lambda: all(g.get("/v1/sales/rf/queue").json["prequeued"] == len(PERSONS)
                                 for g in gws), 3)
    eq(ok, True, "every gateway counts %d pre-queue persons (one per person, fleet-wide)"
       % len(PERSONS))
    for g in gws:
        rm = room(g, "rf")
        eq((rm["sealed"], "seed" in rm), (False, False), "the seed is secret before the start")
    r = A.admin("GET", "/admin/v1/sales/rf/room/persons")
    eq((r.status, r.json.get("reason")), (409, "not_sealed"), "no ranks before the start")

    # --- the start: ranks by the published seed, fleet-wide ---
    wait_until(starts + 0.4)
    late1 = join(C, "rf", "late1", "late1").json.get("position")
    late2 = join(A, "rf", "late2", "late2").json.get("position")
    eq((late1, late2), (len(PERSONS) + 1, len(PERSONS) + 2),
       "later arrivals queue first-come behind the pre-queue, across gateways")
    ok, _ = wait_for(lambda: all(room(g, "rf")["sealed"] for g in gws), 3)
    eq(ok, True, "every gateway knows the seal")
    seeds = {room(g, "rf")["seed"] for g in gws}
    eq(len(seeds), 1, "one seed, published alike by the three gateways")
    seed = bytes.fromhex(seeds.pop())
    order = sorted(PERSONS, key=lambda p: siphash24(seed, p.encode()) or 1)
    want = {p: i + 1 for i, p in enumerate(order)}
    got = {}
    for p in SCALPERS:
        got[p] = join(A, "rf", ACCOUNTS[p][1], p).json["position"]
    for p in PEOPLE:
        got[p] = join(B, "rf", ACCOUNTS[p][0], p).json["position"]
    eq(got, want, "every place is the rank of SipHash(published seed, person) fleet-wide")
    eq(join(C, "rf", "pp00-c", "pp00").json["position"], want["pp00"],
       "pp00's second account on C holds pp00's place")
    mean_s = sum(got[p] for p in SCALPERS) / len(SCALPERS)
    mean_p = sum(got[p] for p in PEOPLE) / len(PEOPLE)
    print("mean rank: scalpers (joined 2 s first, on A) %.1f, people (on B) %.1f; "
          "first-come would be 4.5 / 16.5" % (mean_s, mean_p))
    # 8 of 24 at random all in places 1..8: 1/C(24,8) = 1.4e-6
    check(sorted(got[p] for p in SCALPERS) != list(range(1, 9)),
          "the scalpers who came first do not hold the first places")
    pages, cursor = [], "0"
    while cursor is not None:
        r = C.admin("GET", "/admin/v1/sales/rf/room/persons?limit=10&cursor=" + cursor)
        eq(r.status, 200, "the export's page at %s" % cursor)
        pages.append(r.json)
        cursor = r.json["next_cursor"]
    eq(len(pages), 3, "24 persons in pages of 10")
    listed = {x["person"]: x["rank"] for pg in pages for x in pg["persons"]}
    eq(listed, want, "the export lists every person with the rank recomputed from the seed")
    eq((pages[0]["count"], pages[0]["seed"]), (len(PERSONS), seed.hex()),
       "the export names the count and the seed")

    # --- admission: the fleet's front, one token per place, spent once fleet-wide ---
    time.sleep(0.5)  # 1000 per second over the fleet: the front passed the late arrivals
    best = order[0]
    acct = ACCOUNTS[best][0]
    ta = join(A, "rf", acct, best).json
    tb = join(B, "rf", acct, best).json
    check("admission_token" in ta, "the best place is admitted: %r" % ta)
    eq(tb.get("admission_token"), ta["admission_token"],
       "gateways A and B give the admitted place the same token")
    tok = ta["admission_token"]
    r = buy(A, "rf", acct, best, tok=tok, key="k-best")
    eq((r.status, r.json.get("status")), (202, "queued"), "the token buys on A")
    oid = r.json["order_id"]
    r = buy(B, "rf", acct, best, tok=tok)
    eq((r.status, r.json.get("reason")), (403, "admission_spent"),
       "the token spent on A is refused on B")
    r = buy(B, "rf", acct, best, tok=tok, key="k-best")
    eq((r.status, r.json.get("order_id")), (202, oid),
       "the Idempotency-Key retry on B gets its order back")
    second = order[1]
    t2 = join(C, "rf", ACCOUNTS[second][0], second).json["admission_token"]
    if second in SCALPERS:  # the other account of the person: the same place, the same token
        eq(join(A, "rf", ACCOUNTS[second][1], second).json.get("admission_token"), t2,
           "another account of the person gets the person's token")

    # --- a gateway restarted keeps the room ---
    C.stop()
    C.start()
    eq(join(C, "rf", ACCOUNTS[order[2]][0], order[2]).json.get("position"), 3,
       "restarted, C gives the third person place 3")
    eq(join(C, "rf", "late1", "late1").json.get("position"), len(PERSONS) + 1,
       "and late1 its place")
    r = buy(C, "rf", acct, best, tok=tok)
    eq((r.status, r.json.get("reason")), (403, "admission_spent"),
       "restarted, C refuses the token spent on A")
    ok, _ = wait_for(lambda: room(C, "rf")["sealed"] and room(C, "rf")["seed"] == seed.hex(), 3)
    eq(ok, True, "restarted, C publishes the same seed")
    r = buy(C, "rf", ACCOUNTS[second][0], second, tok=t2)
    eq((r.status, r.json.get("status")), (202, "queued"),
       "a token given before C's restart buys (%r)" % (r.json,))
    late3 = join(B, "rf", "late3", "late3").json.get("position")
    eq(late3, len(PERSONS) + 3, "the counter of later places went on")

    # --- Redis down: 503 for the room, never a local guess; cheap answers without it ---
    t3 = join(A, "rf", ACCOUNTS[order[3]][0], order[3]).json["admission_token"]
    redis.stop()
    r = join(A, "rf", ACCOUNTS[order[4]][0], order[4])
    eq(r.status, 503, "Redis down: a join is 503")
    r = buy(B, "rf", ACCOUNTS[order[3]][0], order[3], tok=t3)
    eq(r.status, 503, "Redis down: a buy with a token is 503, not an order")
    eq(B.get("/v1/sales/rf/queue").status, 200, "the queue page needs no Redis")
    eq(C.admin("GET", "/admin/v1/sales/rf/room/persons").status, 503,
       "Redis down: the export is 503")
    r = buy(B, "later", ACCOUNTS[order[3]][0], order[3])
    eq(r.status, 425, "a buy before the start needs no Redis")
    redis.restart()
    ok, _ = wait_for(lambda: buy(B, "rf", ACCOUNTS[order[3]][0], order[3], tok=t3).status == 202,
                     10, step=0.3)
    eq(ok, True, "Redis back: the token not spent by the 503 buys")

    # --- a deleted room goes with its sale; made again, it is a new room, sealed at its start ---
    ends = int(time.time()) + 2
    r = A.admin("PUT", "/admin/v1/sales/dr", body={
        "stock": 5, "per_user_limit": 1, "ends_at": rfc3339(ends), "waiting_room_rate": 100})
    eq(r.status, 201, "a room that ends in ~2 s")
    ok, _ = wait_for(lambda: join(B, "dr", "late1", "late1").json.get("position") == 1, 3)
    eq(ok, True, "its first join, on B, takes place 1 (no pre-queue: no starts_at)")
    ok, _ = wait_for(lambda: room(A, "dr").get("sealed") and "seed" in room(A, "dr"), 3)
    old_seed = room(A, "dr")["seed"]
    wait_until(ends + 1.2)
    eq(join(A, "dr", "late1", "late1").status, 410, "a join after the end: 410, no place")
    eq(C.admin("DELETE", "/admin/v1/sales/dr").status, 200, "the ended sale is deleted through C")
    eq(redis.cmd("EXISTS", "{flashgate:fair:dr}:wr", "{flashgate:fair:dr}:wrpre",
                 "{flashgate:fair:dr}:wrpl"), 0, "its room's keys are gone from Redis")
    r = C.admin("PUT", "/admin/v1/sales/dr", body={
        "stock": 5, "per_user_limit": 1, "starts_at": rfc3339(int(time.time()) + 3600),
        "waiting_room_rate": 100})
    eq(r.status, 201, "made again under the id, starting in an hour")
    ok, _ = wait_for(lambda: all(join(g, "dr", "late2", "late2").json.get("prequeue") for g in gws), 3)
    eq(ok, True, "every gateway answers the new room's pre-queue")
    # each gateway reads the room back at its next tick (100 ms)
    ok, _ = wait_for(lambda: [room(g, "dr")["sealed"] for g in gws] == [False] * 3, 3)
    eq(ok, True, "the new room is not sealed on any gateway")
    seed_now = redis.cmd("HGET", "{flashgate:fair:dr}:wr", "seed")
    check(seed_now and seed_now != old_seed,
          "the new room's seed is not the old room's published one")
except Exception:
    for x in gws:
        print(x.logs())
    raise
finally:
    for x in gws:
        x.cleanup()
    redis.cleanup()
finish()
