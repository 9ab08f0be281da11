"""The dashboard's history and fleet view in a real browser (Debian's chromium,
playwright-core from npm: tests/browser/fleet.test.js): three gateways on one
redis-server under a few seconds of buys, then the page is opened on one of
them. Its fleet table lists all three live gateways with their figures (each
one's accepted units, read through Redis), and its charts show the load that
ran before the page was opened, again after a reload: the gateway's ring
(GET /admin/v1/history) keeps the samples, not the page. A gateway that
stops leaves the fleet view."""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import PKG, need_browser  # noqa: E402
from fg import BIN, check, eq, finish, need_binary  # noqa: E402
from fleet import Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()
NODE, MODULES = need_browser()

NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
            "limits.global_rps=0", "--set", "limits.sale_rps=0"]
redis = Redis(aof=False)
redis.start()
gws = []
profile = tempfile.mkdtemp(prefix="fg-chromium-")
try:
    gws = start_fleet(redis, 3, extra=NOLIMITS)
    a = gws[0]
    a.put_sale("fleet", stock=100000, per_user_limit=1000)
    a.put_sale("gone", stock=1)

    # ~4 s of buys spread over the three (about 90/s in all), some on a sold-out sale.
    def load(g, k):
        end = time.time() + 4
        i = 0
        while time.time() < end:
            g.buy("fleet", "u%d-%d" % (k, i % 300))
            if i % 4 == 0:
                g.buy("gone", "u%d-%d" % (k, i))
            i += 1
            time.sleep(0.03)

    ts = [threading.Thread(target=load, args=(g, k), daemon=True) for k, g in enumerate(gws)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    loaded_at = time.time()

    # The API first: the ring holds the load, the fleet view every member's figures.
    h = a.admin("GET", "/admin/v1/history").json
    check(len(h["t_ms"]) >= 4 and max(h["answers_per_s"]["202"]) > 5,
          "ring holds the load: %s" % h["answers_per_s"]["202"][-8:])
    check(max(x or 0 for x in h["buy_p99_ms"]) > 0, "buy p99 in the ring")
    check(h["stock_left"].get("gone", [None])[-1] == 0, "stock left per sale in the ring")
    eq(a.admin("GET", "/admin/v1/history?since=-1").status, 400, "a bad since is refused")
    last = h["t_ms"][-1]
    # a sample may land between the two reads (one a second): none at or before last
    newer = a.admin("GET", "/admin/v1/history?since=%d" % last).json["t_ms"]
    check(all(t > last for t in newer) and len(newer) <= 2,
          "since: only newer samples: got %r after %d" % (newer, last))
    ok, _ = wait_for(lambda: len(gws[1].admin("GET", "/admin/v1/fleet").json["members"]) == 3 and all(
        m["figures"].get("accepted_units", 0) > 0
        for m in gws[1].admin("GET", "/admin/v1/fleet").json["members"]), 6)
    check(ok, "every gateway sees the three members with figures: %s"
          % gws[1].admin("GET", "/admin/v1/fleet").raw[:1500])

    shot = os.path.join(BIN, "Testing", "dashboard-fleet.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    env = dict(os.environ, FG_ADMIN="http://127.0.0.1:%d" % a.admin_port, FG_TOKEN=a.token,
               FG_SHOT=shot, FG_PROFILE=profile, FG_MODULES=MODULES,
               FG_LOADED_AT_MS=str(int(loaded_at * 1000)),
               FG_LISTENS=",".join("127.0.0.1:%d" % g.port for g in gws))
    p = subprocess.run([NODE, os.path.join(PKG, "fleet.test.js")], env=env,
                       capture_output=True, text=True, timeout=120)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr[-4000:])
    check(p.returncode == 0, "browser test passed (see above)")
    print("screenshot:", shot)

    # A gateway that stops leaves the view (its figures go with its membership).
    eq(gws[2].stop(), 0, "a gateway stops cleanly (exit 0: no sanitizer report)")
    ok, _ = wait_for(lambda: len(a.admin("GET", "/admin/v1/fleet").json["members"]) == 2, 6)
    check(ok, "a stopped gateway leaves the fleet view")
    for g in gws[:2]:
        eq(g.stop(), 0, "gateway %d stops cleanly" % g.port)
finally:
    for g in gws:
        g.cleanup()
    redis.cleanup()
    shutil.rmtree(profile, ignore_errors=True)
finish()
