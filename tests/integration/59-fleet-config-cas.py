"""A limits change on one gateway made over a version another gateway published
that it has not read yet: the publish is a compare-and-set, so the newer
version's fields survive (one redis-server, no timing in any assertion).

Gateway A runs with a one-hour fleet tick (debug.fleet_tick, a test seam the
config takes only with the debug routes on), so it
reads the config only at start and on a pub/sub message. "Gateway B"'s versions
are written straight into Redis without a PUBLISH: A cannot have read them
when it is PATCHed, whatever the machine's speed. (Each of A's own publishes
wakes its tick once; the test waits for that tick before the next write.)

- A PATCH of global_rps over B's newer version (sale_rps/sale_burst changed): the
  publish is refused, A applies B's version, lays global_rps over it and
  publishes: B's sale fields survive in Redis and on A, and the audit's old is
  B's version (what the PATCH replaced). Before, A's stale sale fields were
  written back over B's (last writer wins).
- B's newer version turned the global scope off (0/0) and A's PATCH sets
  global_rps alone: merged, that is a rate without a burst. 409 conflict
  (reason fleet_config_conflict) naming the fields; Redis unchanged; A is on B's
  version.
- A rollback over B's newer version (user_rps changed): the rollback's limits
  are exactly the audited version's, published over B's, and its audit's old is
  B's version.
- Redis away (requirepass set, the gateways' connections killed): gateway C
  PATCHes ip_rps (applied here, not published); B's version (subnet_rps) goes
  into Redis meanwhile; Redis back: C's late publish is refused, merged over B's
  version and published: ip_rps from C, subnet_rps from B.
"""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis, _Reader, _resp_encode, need_redis, stats, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

FLAGS = ["--kafka-brokers", "none", "--set", "limits.global_rps=300", "--set",
         "limits.global_burst=30", "--set", "limits.sale_rps=0", "--set", "limits.user_rps=0",
         "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set", "inventory.redis_timeout=1s"]
PASSWORD = "cas-test-pw"
auth = None  # the password while Redis wants one


def rcmd(*args):
    """One command on a fresh connection (after AUTH while Redis wants a password)."""
    s = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
    try:
        if auth:
            s.sendall(_resp_encode(("AUTH", auth)) + _resp_encode(args))
            rd = _Reader(s)
            eq(rd.read(), "OK", "AUTH")
            return rd.read()
        s.sendall(_resp_encode(args))
        return _Reader(s).read()
    finally:
        s.close()


def fleet_config():
    """(version, limits as a dict, by) as stored."""
    v, lim, by = rcmd("HMGET", "{flashgate:fleet}:config", "version", "limits", "by")
    return int(v or 0), json.loads(lim) if lim else None, by


def write_as_b(**changes):
    """B's next version straight into Redis (no PUBLISH): the stored limits with
    `changes` (thousandths for rates), version + 1. Returns (version, limits)."""
    v, lim, _ = fleet_config()
    lim = dict(lim)
    lim.update(changes)
    rcmd("HSET", "{flashgate:fleet}:config", "version", str(v + 1), "limits",
         json.dumps(lim, sort_keys=True, separators=(",", ":")), "by", "gateway-B", "at", "0")
    return v + 1, lim


def heartbeats(g):
    return stats(g)["fleet"]["heartbeats"]


def quiet_after(g, before):
    """Waits for the tick that g's own publish wakes (its pub/sub message): after
    it, a one-hour tick reads nothing until the next message."""
    ok, _ = wait_for(lambda: heartbeats(g) > before, 10)
    check(ok, "gateway %d ran the tick its own publish woke" % g.port)


def limits(g):
    return g.admin("GET", "/admin/v1/limits").json


def last_audit(g):
    return g.admin("GET", "/admin/v1/audit").json["entries"][-1]


redis = Redis().start()
gws = []
try:
    # B's first version is there before A starts: A loads it at start.
    rcmd("HSET", "{flashgate:fleet}:config", "version", "1", "by", "gateway-B", "at", "0",
         "limits", json.dumps({"global_rps": 300000, "global_burst": 30, "sale_rps": 0,
                               "sale_burst": 1000, "user_rps": 0, "user_burst": 5,
                               "ip_rps": 0, "ip_burst": 40, "subnet_rps": 0,
                               "subnet_burst": 200}, sort_keys=True, separators=(",", ":")))
    A = Gateway("--inventory", redis.url, *FLAGS, "--enable-debug-routes",
                "--set", "debug.fleet_tick=1h")
    gws.append(A)
    A.start()
    # the start's tick and the thread's first one (it subscribes, then reloads)
    ok, _ = wait_for(lambda: heartbeats(A) >= 2, 10)
    check(ok, "A's fleet thread ran its first tick")
    eq(stats(A)["fleet"]["config_version"], 1, "A loaded version 1 at start")

    # --- a PATCH over B's version A has not read ---
    v2, lim2 = write_as_b(sale_rps=50000, sale_burst=60)
    eq((limits(A)["sale_rps"], stats(A)["fleet"]["config_version"]), (0.0, 1),
       "A has not read B's version 2 (its tick is an hour)")
    hb = heartbeats(A)
    r = A.admin("PATCH", "/admin/v1/limits", body={"global_rps": 500})
    eq(r.status, 200, "PATCH global_rps on A over B's unread version")
    eq((r.json["global_rps"], r.json["sale_rps"], r.json["sale_burst"]), (500.0, 50.0, 60),
       "A's answer: its global_rps with B's sale fields")
    v, lim, by = fleet_config()
    eq((v, lim["global_rps"], lim["sale_rps"], lim["sale_burst"]), (3, 500000, 50000, 60),
       "Redis: version 3 keeps B's sale_rps/sale_burst under A's global_rps")
    check(by != "gateway-B", "version 3 is A's (%s)" % by)
    eq({k: lim[k] for k in lim if k != "global_rps"},
       {k: lim2[k] for k in lim2 if k != "global_rps"}, "every other field is B's")
    f = stats(A)["fleet"]
    eq((f["config_version"], f.get("config_conflicts")), (3, 1),
       "A is on version 3; one publish refused by the compare-and-set")
    a = last_audit(A)
    eq((a["what"], a["old"]["sale_rps"], a["old"]["global_rps"], a["new"]["global_rps"]),
       ("limits.patch", 50.0, 300.0, 500.0), "the audit's old is B's version (what it replaced)")
    quiet_after(A, hb)

    # --- merged over B's newer version, the change is no limit: 409, nothing changed ---
    v4, lim4 = write_as_b(global_rps=0, global_burst=0)
    r = A.admin("PATCH", "/admin/v1/limits", body={"global_rps": 100})
    eq(r.status, 409, "PATCH global_rps alone over B's version that turned the scope off")
    eq((r.json["error"], r.json["reason"]), ("conflict", "fleet_config_conflict"),
       "the error names the fleet conflict")
    for word in ("version %d" % v4, "gateway-B", "global_rps", "global_burst"):
        check(word in r.json["message"], "the message names %r: %s" % (word, r.json["message"]))
    eq(fleet_config()[0], v4, "Redis: nothing written (still B's version 4)")
    eq((limits(A)["global_rps"], limits(A)["global_burst"], limits(A)["sale_rps"]),
       (0.0, 0, 50.0), "A is on B's version 4")
    eq(last_audit(A)["what"], "limits.patch", "the refused PATCH is not audited")
    eq(last_audit(A)["new"]["global_rps"], 500.0, "(the last entry is still the 500 one)")
    eq(stats(A)["fleet"]["config_version"], v4, "A's config_version")
    hb = heartbeats(A)
    eq(A.admin("PATCH", "/admin/v1/limits", body={"global_rps": 100, "global_burst": 10}).status,
       200, "sent together, the fields are accepted")
    eq(fleet_config()[1]["global_burst"], 10, "and published")
    quiet_after(A, hb)

    # --- a rollback over B's version A has not read ---
    entries = A.admin("GET", "/admin/v1/audit").json["entries"]
    target = [e for e in entries if e["what"] == "limits.patch"][0]  # global_rps 500 over B's v2
    vb, limb = write_as_b(user_rps=7000, user_burst=9)
    hb = heartbeats(A)
    r = A.admin("POST", "/admin/v1/config/rollback", body={"version": target["version"]})
    eq(r.status, 200, "rollback on A over B's unread version")
    v, lim, _ = fleet_config()
    eq(v, vb + 1, "the rollback published the next version")
    eq((lim["global_rps"], lim["global_burst"], lim["sale_rps"], lim["user_rps"],
        lim["user_burst"]), (500000, 30, 50000, 0, 5),
       "Redis holds exactly the restored version's limits")
    a = last_audit(A)
    eq((a["what"], a["old"]["limits"]["user_rps"], a["old"]["limits"]["user_burst"]),
       ("config.rollback", 7.0, 9), "the rollback's audit old is B's version it replaced")
    eq(stats(A)["fleet"].get("config_conflicts"), 3, "the 409 and the rollback were refused once each")
    quiet_after(A, hb)
    eq(A.stop(), 0, "A stops cleanly (a sanitizer build: no leak, no report)")

    # --- a change made while Redis is away, published late over B's version ---
    C = Gateway("--inventory", redis.url, *FLAGS)
    gws.append(C)
    C.start()
    vc = fleet_config()[0]
    ok, _ = wait_for(lambda: stats(C)["fleet"]["config_version"] == vc, 10)
    check(ok, "C is on version %d" % vc)
    rcmd("CONFIG", "SET", "requirepass", PASSWORD)
    auth = PASSWORD
    rcmd("CLIENT", "KILL", "TYPE", "normal")  # (not this one: SKIPME yes)
    rcmd("CLIENT", "KILL", "TYPE", "pubsub")
    r = C.admin("PATCH", "/admin/v1/limits", body={"ip_rps": 33, "ip_burst": 66})
    eq(r.status, 200, "PATCH on C while it cannot reach Redis")
    eq(r.json["ip_rps"], 33.0, "applied on C")
    eq(fleet_config()[0], vc, "not in Redis")
    ok, _ = wait_for(lambda: not stats(C)["fleet"]["redis_ok"], 10)
    check(ok, "C sees Redis away")
    vb, limb = write_as_b(subnet_rps=44000, subnet_burst=88)
    rcmd("CONFIG", "SET", "requirepass", "")
    auth = None
    ok, waited = wait_for(lambda: fleet_config()[0] == vb + 1, 15)
    check(ok, "C published its change once Redis was back (%.1f s)" % waited)
    v, lim, by = fleet_config()
    eq((lim["ip_rps"], lim["ip_burst"], lim["subnet_rps"], lim["subnet_burst"]),
       (33000, 66, 44000, 88), "C's ip fields laid over B's version: B's subnet fields survive")
    eq({k: lim[k] for k in lim if not k.startswith("ip_")},
       {k: limb[k] for k in limb if not k.startswith("ip_")}, "every other field is B's")
    ok, _ = wait_for(lambda: limits(C)["subnet_rps"] == 44.0, 10)
    check(ok, "and C enforces B's subnet_rps")
    eq(limits(C)["ip_rps"], 33.0, "with its own ip_rps")
    check(stats(C)["fleet"].get("config_conflicts", 0) >= 1, "C's late publish was refused once")
    eq(C.stop(), 0, "C stops cleanly")
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
