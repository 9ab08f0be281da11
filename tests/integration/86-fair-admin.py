"""Start-window lottery, admin API: a PUT the lottery refuses (400) changes
nothing, not even the sale's own fields. Were the sale written first and
the lottery asked after, a refused window change would still move the stock
and starts_at under the entries taken (and with them the draw's time), and
a new sale refused a lottery (the table of 64 is full) was made anyway,
selling first-come."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import eq, finish, Gateway, need_binary, rfc3339  # noqa: E402

need_binary("flashgate")

NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none"]


g = Gateway(*NOLIMITS).start()
try:
    starts = rfc3339(time.time() + 600)
    g.put_sale("fa", stock=5, per_user_limit=1, starts_at=starts, fair_window_ms=2000,
               fair_early_ms=3600000)
    r = g.buy("fa", "u1")
    eq((r.status, r.json["status"]), (202, "entered"), "an entry")
    # every secret the data dir holds is the owner's alone: the lottery's
    # per-sale keys (fair.json) as the admin token and the status key
    # (admin.token is there when no token was given: not here)
    for name in ("fair.json", "status.key", "admin.token"):
        path = os.path.join(g.data_dir, name)
        if name == "admin.token" and not os.path.exists(path):
            continue
        eq((name, os.path.exists(path) and oct(os.stat(path).st_mode & 0o777)), (name, "0o600"),
           "%s is mode 0600" % name)
    before = g.admin("GET", "/admin/v1/sales/fa").json

    # --- a window change while the lottery has entries: refused, nothing changed ---
    r = g.admin("PUT", "/admin/v1/sales/fa", body={
        "stock": 50, "per_user_limit": 1, "starts_at": rfc3339(time.time() + 900),
        "fair_window_ms": 5000, "fair_early_ms": 3600000})
    eq((r.status, r.json["error"]), (400, "bad_request"), "window change with entries refused")
    after = g.admin("GET", "/admin/v1/sales/fa").json
    eq({k: after[k] for k in ("stock_total", "starts_at", "fair_window_ms")},
       {k: before[k] for k in ("stock_total", "starts_at", "fair_window_ms")},
       "the refused PUT left the sale as it was")
    # a PUT that leaves the window alone still changes the sale
    r = g.admin("PUT", "/admin/v1/sales/fa", body={
        "stock": 6, "per_user_limit": 1, "starts_at": starts})
    eq((r.status, r.json["stock_total"], r.json["fair_window_ms"]), (200, 6, 2000),
       "a PUT without a window change goes through")

    # --- the 65th lottery is refused: the sale is not made either ---
    for i in range(63):
        r = g.admin("PUT", "/admin/v1/sales/w%02d" % i, body={"stock": 1, "waiting_room_rate": 10})
        eq(r.status, 201, "room %d" % i)
    r = g.admin("PUT", "/admin/v1/sales/x65", body={
        "stock": 5, "starts_at": rfc3339(time.time() - 10), "fair_window_ms": 2000})
    eq(r.status, 400, "the 65th lottery is refused")
    eq(g.admin("GET", "/admin/v1/sales/x65").status, 404, "and its sale was not made")
    eq(g.buy("x65", "u1").status, 404, "nobody buys first-come from a refused sale")

    # --- the lottery part fails after the sale was saved: audited, and the error says so ---
    # (fair.json.tmp a directory: saving the lottery's configuration fails, as on a full
    # disk, after the check passed and the sale was written. The sale has changed, so
    # the answer carries an audit line, not a bare 503.)
    tmpdir = os.path.join(g.data_dir, "fair.json.tmp")
    os.mkdir(tmpdir)
    v0 = g.admin("GET", "/admin/v1/audit").json["version"]
    r = g.admin("PUT", "/admin/v1/sales/fa", body={
        "stock": 7, "per_user_limit": 1, "starts_at": starts, "fair_window_ms": 2000,
        "fair_early_ms": 3600000, "waiting_room_rate": 5})
    eq((r.status, r.json.get("sale_saved")), (503, True), "lottery save failed: 503 sale_saved")
    eq("is saved" in r.json["message"] and "lottery" in r.json["message"], True,
       "the message says the sale is saved and the lottery part failed: %s" % r.json["message"])
    eq(g.admin("GET", "/admin/v1/sales/fa").json["stock_total"], 7, "the sale did change")
    au = g.admin("GET", "/admin/v1/audit?since=%d" % v0).json["entries"]
    eq([(e["what"], e["target"]) for e in au], [("sale.put", "fa")],
       "the change that was made is audited, once")
    eq((au[0]["old"]["stock_total"], au[0]["new"]["stock_total"]), (6, 7), "old and new stock")
    eq("lottery_error" in au[0]["new"], True, "the audit says the lottery part failed")
    os.rmdir(tmpdir)
    r = g.admin("PUT", "/admin/v1/sales/fa", body={
        "stock": 7, "per_user_limit": 1, "starts_at": starts, "fair_window_ms": 2000,
        "fair_early_ms": 3600000, "waiting_room_rate": 5})
    eq((r.status, r.json.get("waiting_room_rate")), (200, 5), "the PUT again sets it")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()
finish()
