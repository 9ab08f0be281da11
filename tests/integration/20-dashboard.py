"""The dashboard (GET /admin/) in a real browser: Debian's headless chromium,
driven by playwright-core from npm (tests/browser/, installed with `npm ci` into
the build dir), against a running flashgate under a small load. The page loads
without a token and without console errors, its numbers match /admin/v1/stats,
a limit changed in its form takes effect on the public API, a dry-run rule and
a restock made in it work, and a screenshot lands in the build's Testing/ dir."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import need_browser  # noqa: E402
from fg import BIN, SRC, Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
NODE, MODULES = need_browser()
pkg = os.path.join(SRC, "tests", "browser")

g = Gateway("--log-summary-interval", "0")
g.start()
profile = tempfile.mkdtemp(prefix="fg-chromium-")
done_flag = os.path.join(g.tmp, "load-done")
try:
    # The page and its assets need no token; the API does.
    r = request(g.admin_port, "GET", "/admin/")
    check(r.status == 200 and r.headers["content-type"].startswith("text/html") and
          b"flashgate" in r.raw, "GET /admin/ without a token: %r" % r)
    for a, ct in (("app.js", "text/javascript"), ("uPlot.iife.min.js", "text/javascript"),
                  ("uPlot.min.css", "text/css"), ("uPlot.LICENSE", "text/plain")):
        r = request(g.admin_port, "GET", "/admin/assets/" + a)
        check(r.status == 200 and r.headers["content-type"].startswith(ct), "asset %s: %r" % (a, r))
    eq(request(g.admin_port, "GET", "/admin/assets/nope.js").status, 404, "unknown asset")
    eq(request(g.admin_port, "GET", "/admin/v1/stats").status, 401, "the API still needs a token")

    g.put_sale("live", stock=100000, per_user_limit=1000)
    g.admin("PATCH", "/admin/v1/limits", body={"user_rps": 0, "ip_rps": 0, "subnet_rps": 0})

    def load():
        # ~60 buys/s for 6 s, bounded; rejected ones included (sold-out sale).
        g.put_sale("gone", stock=1)
        end = time.time() + 6
        i = 0
        while time.time() < end:
            g.buy("live", "crowd-%d" % (i % 500))
            if i % 5 == 0:
                g.buy("gone", "crowd-%d" % i)
            i += 1
            time.sleep(0.015)
        open(done_flag, "w").close()

    t = threading.Thread(target=load, daemon=True)
    t.start()
    shot = os.path.join(BIN, "Testing", "dashboard.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    env = dict(os.environ, FG_ADMIN="http://127.0.0.1:%d" % g.admin_port,
               FG_PUBLIC="http://127.0.0.1:%d" % g.port, FG_TOKEN=g.token, FG_SALE="live",
               FG_SHOT=shot, FG_PROFILE=profile, FG_LOAD_DONE=done_flag,
               FG_MODULES=MODULES)
    p = subprocess.run([NODE, os.path.join(pkg, "dashboard.test.js")], env=env,
                       capture_output=True, text=True, timeout=180)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr[-4000:])
    check(p.returncode == 0, "browser test passed (see above)")
    check(os.path.exists(shot), "screenshot at " + shot)
    print("screenshot:", shot)
    t.join(30)
    # What the page changed is real and audited.
    lim = g.admin("GET", "/admin/v1/limits").json
    eq((lim["user_rps"], lim["user_burst"]), (0.001, 1), "form's limits applied")
    whats = [json.loads(x)["what"] for x in open(os.path.join(g.data_dir, "audit.log"))]
    for w in ("limits.patch", "rule.put", "sale.restock", "degrade.set"):
        check(w in whats, "the page's change audited: " + w)
finally:
    g.cleanup()
    shutil.rmtree(profile, ignore_errors=True)
finish()
