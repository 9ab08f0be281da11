"""Start-window lottery entries are capped per sale (sales.max_lottery_entries):
each entry is held in memory until the lottery goes, so past the cap a new
person's buy in the window is refused 409 conflict, reason lottery_full, and
nothing is entered (not in the draw, not in the entry log after a restart); a
person who entered still gets their own entry back."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, Gateway, need_binary, rfc3339  # noqa: E402

need_binary("flashgate")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
        "--kafka-brokers", "none", "--set", "sales.max_lottery_entries=3"]

g = Gateway(*ARGS).start()
try:
    starts = int(time.time()) + 30
    r = g.admin("PUT", "/admin/v1/sales/cap", body={
        "stock": 2, "per_user_limit": 1, "starts_at": rfc3339(starts),
        "fair_window_ms": 2000, "fair_early_ms": 60000})
    eq(r.status, 201, "sale with a lottery created")
    ids = {}
    for u in ("u0", "u1", "u2"):
        r = g.buy("cap", u)
        eq((r.status, r.json.get("status")), (202, "entered"), "entry of " + u)
        ids[u] = r.json["order_id"]
    r = g.buy("cap", "u3")
    eq((r.status, r.json.get("error"), r.json.get("reason")), (409, "conflict", "lottery_full"),
       "a fourth person past the cap is refused, naming the reason")
    check("max_lottery_entries" in r.json.get("message", ""), "the message names the setting")
    r = g.buy("cap", "u1")
    eq((r.status, r.json.get("order_id"), r.json.get("duplicate")), (202, ids["u1"], True),
       "an entrant's own entry still comes back at the cap")
    eq(g.admin("GET", "/admin/v1/sales/cap/draw").json["entrants"], 3, "3 entrants, not 4")
    g.kill9()
    g.start()
    eq(g.admin("GET", "/admin/v1/sales/cap/draw").json["entrants"], 3,
       "the refused entry is not in the log either")
    r = g.buy("cap", "u4")
    eq((r.status, r.json.get("reason")), (409, "lottery_full"), "still full after a restart")
finally:
    g.stop()
finish()
