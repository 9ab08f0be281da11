"""The node id lease against the wall clock and against a Redis that lost it.

A. The wall clock steps back 60 s under a fleet gateway (the test seam PUT
   /admin/v1/debug/clock). Its ids may not go back, so they stay ahead of the
   stepped clock; the lease each heartbeat writes must cover them. Buys go on
   (not one refused over the next 3.5 s) and the ids stay unique and in order.
   Before: the lease was "now + 5 s" of the stepped clock, below the
   generator's last id, so every buy answered 503 "order ids paused" until the
   clock caught up, 55 s later (an hour's step: an hour of 503s).
B. Redis loses the fleet's keys (FLUSHALL, as a Redis restarted without
   persistence does) while gateway A, paused, holds a node id and a running
   lease; every other node id is blocked, so gateway B, starting, claims A's.
   There is no floor to start after: B must assume A may have made ids up to
   a lease from now, so all of B's ids of that node id come after all of A's.
   Before: B took "no floor" as 0 and started its ids at its wall clock, in
   the very milliseconds A made its ids in after it resumed (same node id,
   same sequence from 0: the same order ids; 1,100 to 2,100 of them, each
   answered 202 by both gateways).
C. A gateway SIGSTOPped past its node id's TTL: another gateway takes the id
   while it sleeps; after SIGCONT it makes no id of that node id (its lease
   ran out with the wall clock) and answers 503 until it claims a free one.
D. A keyed retry of a taken-over node id's order. A, its clock 20 s ahead,
   sells keyed orders, is paused, its key deleted, and B claims A's node id.
   A's orders (B's node id now, made at milliseconds after B started, as the
   ids A makes after it resumes until its next heartbeat are too), retried
   with their keys on B, are another gateway's: B answers 202 with their ids
   (and spools them too).
   Before: B took them for its own (its node id, made after B started) still
   in flight, and answered 503 "still in progress; retry" for ever.
E. A gateway's start is announced on the events channel ("join <member>"),
   which runs every other gateway's heartbeat at once: a holder whose node id
   the newcomer took learns it then, not up to a second later.
   Before: the PUBLISH went out with the member as a fourth argument, Redis
   refused it (wrong number of arguments), and nothing was ever announced.
"""
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis, _Reader, _resp_encode, stats, wait_for  # noqa: E402

need_binary("flashgate")
ARGS = ("--kafka-brokers", "none", "--enable-debug-routes", "--set", "limits.user_rps=0",
        "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "limits.global_rps=0", "--set", "limits.sale_rps=0")
KEY = "{flashgate:fleet}:nodeid:%d"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def id_value(order_id):
    v = 0
    for ch in order_id:
        v = v * 32 + CROCKFORD.index(ch)
    return v


def node_of(order_id):
    return (id_value(order_id) >> 12) & 1023


def ms_of(order_id):
    return (id_value(order_id) >> 22) + 1704067200000


def pipeline(redis, cmds):
    s = socket.create_connection(("127.0.0.1", redis.port), timeout=10)
    try:
        s.sendall(b"".join(_resp_encode(c) for c in cmds))
        r = _Reader(s)
        return [r.read() for _ in cmds]
    finally:
        s.close()


def seed_floors(redis):
    """Every node id's floor recorded, a second ago: a fleet that has run before (a first
    claim of a node id with no floor starts its ids 5 s ahead, which would blur B)."""
    past = int(time.time() * 1000) - 1000
    args = ["HSET", "{flashgate:fleet}:nodeid_floor"]
    for n in range(1024):
        args += [n, past]
    pipeline(redis, [args])


class Load:
    """Client threads buying distinct users on one gateway; 202 ids kept, other answers counted."""

    def __init__(self, g, tag, n=3, keyed=False):
        self.g, self.tag, self.stop, self.keyed = g, tag, threading.Event(), keyed
        self.by_id = {}
        self.ids, self.refusals, self.lock = [], [], threading.Lock()
        self.ts = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(n)]
        for t in self.ts:
            t.start()

    def run(self, i):
        c, n = None, 0
        while not self.stop.is_set():
            n += 1
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.g.port, timeout=30)
                user = "%s-%d-%d" % (self.tag, i, n)
                h = {"Content-Type": "application/json"}
                if self.keyed:
                    h["Idempotency-Key"] = "k-" + user
                c.request("POST", "/v1/sales/s/orders", body=json.dumps({"user_id": user}),
                          headers=h)
                r = c.getresponse()
                body = json.loads(r.read() or b"{}")
            except (OSError, http.client.HTTPException, ValueError):
                c = None
                time.sleep(0.01)
                continue
            with self.lock:
                if r.status == 202:
                    self.ids.append(body["order_id"])
                    self.by_id[body["order_id"]] = user
                else:
                    self.refusals.append((r.status, body.get("message", "")))

    def count(self):
        with self.lock:
            return len(self.ids), len(self.refusals)

    def join(self):
        self.stop.set()
        for t in self.ts:
            t.join(40)


loads, gws, redises = [], [], []
try:
    # ---- A: the wall clock steps back ----
    redis = Redis(aof=False).start()
    redises.append(redis)
    a = Gateway("--inventory", redis.url, *ARGS)
    gws.append(a)
    a.start()
    a.put_sale("s", stock=10000000, per_user_limit=1)
    eq(stats(a)["fleet"]["node_id_state"], "held", "[A] the gateway holds a node id")
    before = [a.buy("s", "a-before-%d" % i) for i in range(20)]
    check(all(r.status == 202 for r in before), "[A] buys before the step")
    before = [r.json["order_id"] for r in before if r.status == 202]
    r = a.admin("PUT", "/admin/v1/debug/clock", body={"wall_offset_ms": -60000})
    eq(r.status, 200, "[A] the wall clock stepped back 60 s")
    stepped, refused = [], []
    t_end = time.time() + 3.5  # three heartbeats and more under the stepped clock
    i = 0
    while time.time() < t_end:
        i += 1
        r = a.buy("s", "a-after-%d" % i)
        if r.status == 202:
            stepped.append(r.json["order_id"])
        else:
            refused.append((round(time.time() - t_end + 3.5, 2), r.status, r.json))
        time.sleep(0.02)
    eq(refused[:3], [], "[A] no buy refused after the step (%d of %d)" % (len(refused), i))
    ids = before + stepped
    eq(len(ids), len(set(ids)), "[A] every order id is unique")
    eq(ids, sorted(ids), "[A] the ids did not go back with the clock")
    f = stats(a)["fleet"]
    check(f["node_id_lease_ms"] > 55000, "[A] the lease covers the ids ahead of the stepped "
          "clock (%d ms ahead of it)" % f["node_id_lease_ms"])
    eq(a.admin("PUT", "/admin/v1/debug/clock", body={"wall_offset_ms": 0}).status, 200,
       "[A] the clock back to normal")
    a.cleanup()
    gws.remove(a)
    redis.cleanup()
    redises.remove(redis)

    # ---- B: Redis loses the floor under a paused holder ----
    redis = Redis(aof=False).start()
    redises.append(redis)
    seed_floors(redis)
    a = Gateway("--inventory", redis.url, *ARGS)
    b = Gateway("--inventory", redis.url, *ARGS)
    gws += [a, b]
    a.start()
    a.put_sale("s", stock=10000000, per_user_limit=1)
    na = stats(a)["fleet"]["node_id"]
    la = Load(a, "a")
    loads.append(la)
    ok, _ = wait_for(lambda: la.count()[0] >= 100, 30)
    check(ok, "[B] A sells before the loss")
    a.proc.send_signal(signal.SIGSTOP)
    try:
        eq(redis.cmd("FLUSHALL"), "OK", "[B] Redis lost everything (FLUSHALL)")
        pipeline(redis, [["SET", KEY % n, "blocker", "PX", "600000"]
                         for n in range(1024) if n != na])
        b.start()
        eq(stats(b)["fleet"]["node_id"], na, "[B] B claimed the node id A still holds a lease of")
        b.put_sale("s", stock=10000000, per_user_limit=1)  # the flush took the sale too
    finally:
        a.proc.send_signal(signal.SIGCONT)
    lb = Load(b, "b")
    loads.append(lb)
    ok, _ = wait_for(lambda: stats(a)["fleet"]["node_id_state"] == "lost", 10)
    check(ok, "[B] A finds its node id another's")
    ok, _ = wait_for(lambda: lb.count()[0] >= 100, 30)
    check(ok, "[B] B sells under the node id (%r)" % (lb.count(),))
    la.join()
    lb.join()
    a_na = [i for i in la.ids if node_of(i) == na]
    check(len(lb.ids) > 0 and len(a_na) > 0, "[B] both sold under node id %d (A %d, B %d)"
          % (na, len(a_na), len(lb.ids)))
    if a_na and lb.ids:
        print("info: A's last id of node %d at %d, B's first at %d (+%d ms)"
              % (na, ms_of(max(a_na)), ms_of(min(lb.ids)), ms_of(min(lb.ids)) - ms_of(max(a_na))))
        check(min(lb.ids) > max(a_na), "[B] all of B's ids come after all of A's")
    allids = la.ids + lb.ids
    eq(len(allids) - len(set(allids)), 0, "[B] no order id was handed out twice (within A %d, "
       "within B %d, shared %d)" % (len(la.ids) - len(set(la.ids)), len(lb.ids) - len(set(lb.ids)),
                                    len(set(la.ids) & set(lb.ids))))
    for g in (a, b):
        g.cleanup()
        gws.remove(g)
    loads.clear()
    redis.cleanup()
    redises.remove(redis)

    # ---- C: paused past the TTL ----
    redis = Redis(aof=False).start()
    redises.append(redis)
    seed_floors(redis)
    a = Gateway("--inventory", redis.url, *ARGS)
    b = Gateway("--inventory", redis.url, *ARGS)
    gws += [a, b]
    a.start()
    a.put_sale("s", stock=10000000, per_user_limit=1)
    na = stats(a)["fleet"]["node_id"]
    pipeline(redis, [["SET", KEY % n, "blocker", "PX", "600000"] for n in range(1024) if n != na])
    la = Load(a, "a")
    loads.append(la)
    ok, _ = wait_for(lambda: la.count()[0] >= 100, 30)
    check(ok, "[C] A sells before the pause")
    a.proc.send_signal(signal.SIGSTOP)
    try:
        paused_ms = int(time.time() * 1000)
        ok, _ = wait_for(lambda: redis.cmd("EXISTS", KEY % na) == 0, 15)
        check(ok, "[C] A's node id key expired while A sleeps")
        b.start()
        eq(stats(b)["fleet"]["node_id"], na, "[C] B claimed A's node id")
    finally:
        a.proc.send_signal(signal.SIGCONT)
        resumed_ms = int(time.time() * 1000)
    lb = Load(b, "b")
    loads.append(lb)
    ok, _ = wait_for(lambda: stats(a)["fleet"]["node_id_state"] == "lost", 10)
    check(ok, "[C] A finds its node id another's")
    r = a.buy("s", "probe-c")
    eq(r.status, 503, "[C] A refuses buys without a node id")
    ok, _ = wait_for(lambda: lb.count()[0] >= 50, 30)
    check(ok, "[C] B sells")
    la.join()
    lb.join()
    late = [i for i in la.ids if ms_of(i) >= paused_ms + 5000]
    eq(late, [], "[C] A made no id past its lease, after the pause (resumed +%d ms)"
       % (resumed_ms - paused_ms))
    allids = la.ids + lb.ids
    eq(len(allids) - len(set(allids)), 0, "[C] no order id was handed out twice")
    check(min(lb.ids) > max(i for i in la.ids if node_of(i) == na),
          "[C] B's ids come after A's")
    for g in (a, b):
        g.cleanup()
        gws.remove(g)
    loads.clear()
    redis.cleanup()
    redises.remove(redis)

    # ---- D: a keyed retry on the gateway that took the node id over ----
    redis = Redis(aof=False).start()
    redises.append(redis)
    seed_floors(redis)
    a = Gateway("--inventory", redis.url, *ARGS)
    b = Gateway("--inventory", redis.url, *ARGS)
    gws += [a, b]
    a.start()
    a.put_sale("s", stock=10000000, per_user_limit=1)
    na = stats(a)["fleet"]["node_id"]
    pipeline(redis, [["SET", KEY % n, "blocker", "PX", "600000"] for n in range(1024) if n != na])
    # A's clock 20 s ahead: its ids carry milliseconds after B's start without
    # racing A's next heartbeat (as the ids A makes after it resumes do).
    eq(a.admin("PUT", "/admin/v1/debug/clock", body={"wall_offset_ms": 20000}).status, 200,
       "[D] A's clock runs 20 s ahead")
    ok, _ = wait_for(lambda: stats(a)["fleet"]["node_id_lease_ms"] > 4000, 5)
    check(ok, "[D] A's lease follows its clock")
    made = {}
    for i in range(10):
        r = a.buy("s", "d-%d" % i, key="k-d-%d" % i)
        eq(r.status, 202, "[D] A sells keyed order %d" % i)
        if r.status == 202:
            made["d-%d" % i] = r.json["order_id"]
    a.proc.send_signal(signal.SIGSTOP)
    try:
        eq(redis.cmd("DEL", KEY % na), 1, "[D] A's node id key is gone")
        b.start()
        eq(stats(b)["fleet"]["node_id"], na, "[D] B claimed A's node id")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    ok, _ = wait_for(lambda: stats(a)["fleet"]["node_id_state"] == "lost", 10)
    check(ok, "[D] A finds its node id another's")
    check(all(node_of(i) == na for i in made.values()), "[D] A's orders are of node id %d" % na)
    answers = {}
    for user, oid in made.items():
        r = b.buy("s", user, key="k-" + user)
        answers[user] = (r.status, r.json.get("order_id") or r.json.get("message"))
    eq(answers, {u: (202, oid) for u, oid in made.items()},
       "[D] B answers each keyed retry of A's orders 202 with A's order id")
    r = b.buy("s", "d-new", key="k-d-new")
    eq(r.status, 202, "[D] B sells its own")
    check(r.status == 202 and r.json["order_id"] > max(made.values()),
          "[D] ... after A's ids of the node id")
    for g in (a, b):
        g.cleanup()
        gws.remove(g)
    redis.cleanup()
    redises.remove(redis)

    # ---- E: the join announcement ----
    redis = Redis(aof=False).start()
    redises.append(redis)
    sub = socket.create_connection(("127.0.0.1", redis.port), timeout=10)
    sub.sendall(_resp_encode(["SUBSCRIBE", "flashgate:fleet:events"]))
    rd = _Reader(sub)
    eq(rd.read()[0], "subscribe", "[E] subscribed to the events channel")
    c = Gateway("--inventory", redis.url, *ARGS)
    gws.append(c)
    c.start()
    member = stats(c)["fleet"]["member"]
    sub.settimeout(5)
    got = []
    try:
        while "join " + member not in got:
            m = rd.read()
            if m and m[0] == "message":
                got.append(m[2])
    except OSError:
        pass
    sub.close()
    check("join " + member in got, "[E] the start was announced: %r" % got)
finally:
    for ld in loads:
        ld.stop.set()
    for g in gws:
        g.cleanup()
    for r in redises:
        r.cleanup()
finish()
