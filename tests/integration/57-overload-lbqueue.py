"""The wait in a load balancer's queue (X-Request-Start, gateway/overload/gw_overload.h):
a request a trusted balancer stamped well before it reached the gateway is
answered 503 queue_time before its body is read while the worker is busy, and
its connection stays open; an idle worker serves it; from a peer that is not a
trusted proxy the stamp means nothing. The balancer's clock here is a second
behind the gateway's: each worker learns that skew while it is not busy (the
least wait it sees on a stamp) and counts only what a stamp waited past it, so
a request stamped "now" by the skewed clock is served.

The busy worker: capped to 5% of one core (cgroup v1 cpu quota) under
flashgate-load's crowd at several times its capacity. Probes stamped 2 s in
the past (what a balancer's queue of that length writes) and stamped now are
sent beside the crowd, each on a new connection (refused while the door is
shut: those count for nothing). cgroups must be available (CI runs
as root): their absence is a failure."""
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crowd import Cgroup, crowd_gateway, run_crowd  # noqa: E402
from fg import check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-load")

RATE = 4000
LOAD_S = 3
SKEW = 1.0  # the balancer's clock is this far behind the gateway's


def probe(g, user, age_s, keep=False):
    """A buy stamped age_s seconds ago (nginx's t=${msec}); (status, body, open after)."""
    c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    body = json.dumps({"user_id": user}).encode()
    try:
        c.request("POST", "/v1/sales/s79q/orders", body=body,
                  headers={"Content-Type": "application/json",
                           "X-Request-Start": "t=%.3f" % (time.time() - age_s)})
        r = c.getresponse()
        data = r.read()
        status = r.status
        still_open = False
        if keep:  # the connection still serves: a second request on it is answered
            c.request("GET", "/healthz")
            r2 = c.getresponse()
            r2.read()
            still_open = r2.status in (200, 503)
        return status, data.decode(errors="replace"), still_open
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e), False
    finally:
        c.close()


def stats(g):
    return g.admin("GET", "/admin/v1/stats").json["overload"]


def busy_run(g, tag):
    """The crowd against g while probes go in beside it; the probes' answers."""
    seen = {"stale": [], "fresh": []}
    n = [0]

    def watch():
        n[0] += 1
        seen["stale"].append(probe(g, "stale-%s-%d" % (tag, n[0]), SKEW + 2.0, keep=True))
        seen["fresh"].append(probe(g, "fresh-%s-%d" % (tag, n[0]), SKEW))

    codes = run_crowd(g, "s79q", "lbq-" + tag, 797, LOAD_S, RATE, watch, every=0.1)
    check(codes.get("202", 0) > 0, "the crowd got orders (%s): %r" % (tag, codes))
    return seen


cg = None
trusted = crowd_gateway("--server-trusted-proxies", "127.0.0.1/32")
untrusted = crowd_gateway()
try:
    trusted.start()
    untrusted.start()
    for g in (trusted, untrusted):
        g.put_sale("s79q", stock=100000, per_user_limit=1)

    # idle: the worker learns the skew from stamps of a balancer that queues nothing
    for i in range(3):
        for g in (trusted, untrusted):
            st, body, _ = probe(g, "calm-%d" % i, SKEW)
            eq(st, 202, "a calm request is served: %s" % body)
    # idle: the stamp says 2 s more, but the worker has nothing to do: served
    st, body, _ = probe(trusted, "idle-1", SKEW + 2.0)
    eq(st, 202, "an idle worker serves a request stamped 2 s ago: %s" % body)
    eq(stats(trusted)["shed_late_upstream"], 0, "nothing shed for its stamp")

    cg = Cgroup("flashgate-it79lbq-%d" % os.getpid())
    cg.add(trusted.proc.pid)
    seen = busy_run(trusted, "trusted")
    shed = [p for p in seen["stale"] if p[0] == 503 and "X-Request-Start" in p[1]]
    print("# stale probes: %d answered, %d shed for the stamp; fresh: %r" % (
        sum(1 for p in seen["stale"] if p[0]), len(shed), sorted(set(p[0] or 0 for p in seen["fresh"]))))
    check(len(shed) >= 1, "stale probes are answered 503 queue_time for their stamp: %r" %
          [p[:2] for p in seen["stale"]][:6])
    check(all('"queue_time"' in p[1] for p in shed), "with the reason queue_time")
    check(all(p[2] for p in shed), "and their connections stay open (the balancer's pool)")
    check(not any("X-Request-Start" in (p[1] or "") for p in seen["fresh"]),
          "no probe stamped now (by the skewed clock) is shed for its stamp")
    o = stats(trusted)
    check(o["shed_late_upstream"] >= len(shed), "counted: %r" % o["shed_late_upstream"])
    check(o["shed_late"] >= o["shed_late_upstream"], "within shed_late")
    cg.remove()
    cg = None

    # the same stamp from a peer that is not a trusted proxy: not believed
    cg = Cgroup("flashgate-it79lbq-u-%d" % os.getpid())
    cg.add(untrusted.proc.pid)
    seen = busy_run(untrusted, "untrusted")
    check(not any("X-Request-Start" in (p[1] or "") for p in seen["stale"]),
          "an untrusted peer's stamp sheds nothing")
    eq(stats(untrusted)["shed_late_upstream"], 0, "and nothing is counted")
finally:
    if cg:
        cg.remove()
    trusted.cleanup()
    untrusted.cleanup()
finish()
