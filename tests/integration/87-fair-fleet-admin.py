"""Start-window lottery in a fleet, admin API: "refused (400) while the
lottery has entries and no draw" holds fleet-wide. Entries stay on the
gateway that took them until the window closes, so a gateway asked to change
the window saw none of them, accepted it, and every gateway applied it from
Redis within half a second, moving the window under the entries taken
elsewhere. Each gateway now marks a sale with entries in Redis; a change is
refused while the mark is there and the draw is not done."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import eq, finish, need_binary, rfc3339  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()


redis = Redis().start()
gws = []
try:
    gws = start_fleet(redis, 2, extra=("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"))
    g0, g1 = gws
    starts = rfc3339(time.time() + 600)
    r = g0.admin("PUT", "/admin/v1/sales/fw", body={
        "stock": 5, "per_user_limit": 1, "starts_at": starts,
        "fair_window_ms": 2000, "fair_early_ms": 3600000})
    eq(r.status, 201, "sale with a lottery")
    ok, _ = wait_for(lambda: g1.admin("GET", "/admin/v1/sales/fw").json.get("fair_window_ms") == 2000, 5)
    eq(ok, True, "the other gateway has the window")
    # before any entry a change is fine
    r = g0.admin("PUT", "/admin/v1/sales/fw", body={
        "stock": 5, "per_user_limit": 1, "starts_at": starts,
        "fair_window_ms": 3000, "fair_early_ms": 3600000})
    eq(r.status, 200, "a window change without entries")
    ok, _ = wait_for(lambda: g1.admin("GET", "/admin/v1/sales/fw").json.get("fair_window_ms") == 3000, 5)
    eq(ok, True, "the other gateway has the new window")

    r = g1.buy("fw", "u1")
    eq((r.status, r.json.get("status")), (202, "entered"), "an entry through g1")
    time.sleep(0.5)  # the lottery thread's tick (20 ms) marks it

    # g0 took no entry: it must still refuse, and nothing may change anywhere
    r = g0.admin("PUT", "/admin/v1/sales/fw", body={
        "stock": 5, "per_user_limit": 1, "starts_at": starts,
        "fair_window_ms": 9000, "fair_early_ms": 3600000})
    eq(r.status, 400, "a window change through a gateway without entries is refused")
    time.sleep(1.2)  # past the half-second configuration poll
    eq([g.admin("GET", "/admin/v1/sales/fw").json.get("fair_window_ms") for g in gws], [3000, 3000],
       "every gateway keeps the window its entries were taken in")
except Exception:
    for g in gws:
        print(g.logs())
    raise
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
finish()
