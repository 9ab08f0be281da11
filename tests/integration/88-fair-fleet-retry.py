"""Start-window lottery in a fleet: a drawer whose draw fails on a Redis
error (here a :won key of the wrong type, then put right) resumes at its
next tick, taking the drawer's lock (SET NX PX 15 s) it already holds: if
nobody, itself included, could take it, one failed command would leave the
sale answering 503 "draw running" for the lock's 15 s."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary, rfc3339  # noqa: E402
from fleet import Redis, need_redis, rcmd, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()


redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 1, extra=("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"))
    g = gws[0]
    starts = int(time.time()) + 3
    r = g.admin("PUT", "/admin/v1/sales/fr", body={
        "stock": 2, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 1000, "fair_early_ms": 3000})
    eq(r.status, 201, "sale with a lottery")
    for i in range(5):
        r = g.buy("fr", "u%d" % i)
        eq((r.status, r.json.get("status")), (202, "entered"), "entry u%d" % i)
    # the draw's reads of :won fail until the key is put right
    rcmd(redis.port, "SET", "{flashgate:fair:fr}:won", "not-a-hash")

    def drawn():
        return g.admin("GET", "/admin/v1/sales/fr/draw").json["state"] == "drawn"
    time.sleep(max(0, starts + 1 + 1.0 - time.time()))
    check(not drawn(), "the draw fails while :won is of the wrong type")
    r = g.buy("fr", "late")
    eq(r.status, 503, "buys wait for the draw")

    rcmd(redis.port, "DEL", "{flashgate:fair:fr}:won")
    ok, waited = wait_for(drawn, 25)
    print("drawn %.2f s after Redis was put right" % waited)
    check(ok and waited < 5, "the drawer resumes at once, not after its lock's 15 s (%.1f s)" % waited)
    d = g.admin("GET", "/admin/v1/sales/fr/draw").json
    eq((d["entrants"], d["won_units"]), (5, 2), "the draw allocated the stock")
except Exception:
    for x in gws:
        print(x.logs())
    raise
finally:
    for x in gws:
        x.cleanup()
    redis.cleanup()
finish()
