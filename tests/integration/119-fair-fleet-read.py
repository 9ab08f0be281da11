"""A fleet lottery entry is readable on every gateway, not only on the one
that took it (gateway/buy/gw_fair_fleet.c gw_fair__fleet_lookup and
fleet_marks_push; docs/fleet.md "Start-window lottery").

Two gateways on one redis-server, identity off (each account is its own
person: its entry's mark goes to Redis with the lottery thread's next tick).

- Before the draw: an entry taken on gw1 reads 200 "entered" on gw2 with its
  status token (before, 404 until gw2 learnt the draw), and 404 with a wrong
  token; an unknown id with a token of its own is 404.
- After the draw: both gateways read every entry's outcome alike (200 when
  it won, 410 waitlisted when it lost: the losers wait for freed units).
Bounded: ~20 requests, one 1 s window (~6 s)."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, rfc3339  # noqa: E402
from fleet import NO_LIMITS, Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()

redis = Redis(aof=False).start()
gws = []
try:
    gws = start_fleet(redis, 2, extra=NO_LIMITS)
    g1, g2 = gws
    starts = int(time.time()) + 4
    r = g1.admin("PUT", "/admin/v1/sales/rd", body={
        "stock": 2, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 1000, "fair_early_ms": 3500})
    eq(r.status, 201, "a lottery sale through gw1")
    ok, _ = wait_for(lambda: all(g.admin("GET", "/admin/v1/sales/rd").json.get("fair_window_ms")
                                 == 1000 for g in gws), 5)
    check(ok, "the lottery reaches both gateways")
    time.sleep(max(0.0, starts - 3.5 + 0.1 - time.time()))  # the early window is open

    entries = {}
    for i in range(4):
        r = g1.buy("rd", "u%d" % i)
        eq((r.status, r.json.get("status")), (202, "entered"), "u%d enters on gw1" % i)
        entries["u%d" % i] = (r.json["order_id"], r.json["status_token"])
    oid, tok = entries["u0"]

    def reads_entered():
        r = g2.get("/v1/orders/%s?token=%s" % (oid, tok))
        return (r.status, r.json.get("status")) == (200, "entered")
    ok, secs = wait_for(reads_entered, 2)
    check(ok, "gw2 reads gw1's entry as entered before the draw (%.2f s after it)" % secs)
    r = g2.get("/v1/orders/%s?token=%s" % (oid, entries["u1"][1]))
    eq(r.status, 404, "with another entry's token gw2 knows no such entry")
    r = g2.get("/v1/orders/%s" % oid)
    eq(r.status, 404, "without a token either")
    redis.proc.send_signal(signal.SIGSTOP)  # Redis cannot answer: gw2 cannot tell
    try:
        r = g2.get("/v1/orders/%s?token=%s" % (oid, tok))
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    eq((r.status, r.headers.get("retry-after")), (503, "1"),
       "with Redis stopped gw2 answers 503, not 404 (%r)" % r)
    check(time.time() < starts + 1, "read inside the window (else the test proves nothing)")

    def drawn():
        return all(g.admin("GET", "/admin/v1/sales/rd/draw").json["state"] == "drawn" for g in gws)
    time.sleep(max(0.0, starts + 1 - time.time()))
    ok, waited = wait_for(drawn, 15)
    check(ok, "both gateways know the draw (%.1f s after the close)" % waited)
    d = g2.admin("GET", "/admin/v1/sales/rd/draw").json
    outcome = {e["order_id"]: e["outcome"] for e in d["entries"]}
    eq(sorted(outcome.values()), ["waitlisted", "waitlisted", "won", "won"],
       "two winners, two losers waiting for freed units")
    for user, (o, t) in sorted(entries.items()):
        for g in gws:
            r = g.get("/v1/orders/%s?token=%s" % (o, t))
            if outcome[o] == "won":
                check(r.status == 200 and r.json.get("status") != "entered",
                      "%s's entry reads won on gw%d (%r)" % (user, gws.index(g) + 1, r))
            else:
                eq((r.status, r.json.get("error"), r.json.get("status")),
                   (410, "sold_out", "waitlisted"),
                   "%s's entry reads waitlisted on gw%d" % (user, gws.index(g) + 1))
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
