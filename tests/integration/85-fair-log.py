"""Start-window lottery: the entry log after a torn line. A crash (or a full
disk) in the middle of an entry's write(2) leaves part of a line at the end
of <data-dir>/fair/<sale>.log; that entry was never answered. Entries taken
after the restart are appended to the same file: they must not be glued to
the torn piece, or the next restart loses entries that were answered 202."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import eq, finish, Gateway, need_binary, rfc3339  # noqa: E402

need_binary("flashgate")

NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none"]


g = Gateway(*NOLIMITS).start()
try:
    # entries open now (an hour early), the window closes long after the test
    g.put_sale("ft", stock=5, per_user_limit=1, starts_at=rfc3339(time.time() + 600),
               fair_window_ms=2000, fair_early_ms=3600000)
    ids = {}
    for u in ("a1", "a2"):
        r = g.buy("ft", u)
        eq((r.status, r.json["status"]), (202, "entered"), "entry " + u)
        ids[u] = r.json["order_id"]

    # kill -9 in the middle of an entry's write: part of its line is on disk
    g.kill9()
    log = os.path.join(g.data_dir, "fair", "ft.log")
    with open(log, "a") as fp:
        fp.write("E 0AMTORN000000 torn-user 1 17")
    g.start()

    r = g.buy("ft", "a1")
    eq((r.status, r.json["order_id"], r.json.get("duplicate")), (202, ids["a1"], True),
       "an entry of before the torn line is kept")
    r = g.buy("ft", "b1")
    eq((r.status, r.json["status"]), (202, "entered"), "an entry after the restart")
    ids["b1"] = r.json["order_id"]
    eq(g.admin("GET", "/admin/v1/sales/ft/draw").json["entrants"], 3,
       "the torn entry is not an entrant")

    # another restart: the entry answered after the torn line is still there
    g.kill9()
    g.start()
    d = g.admin("GET", "/admin/v1/sales/ft/draw").json
    eq(sorted((e["user_id"], e["order_id"]) for e in d["entries"]), sorted(ids.items()),
       "every answered entry survives the next restart")
    r = g.buy("ft", "b1")
    eq((r.status, r.json["order_id"], r.json.get("duplicate")), (202, ids["b1"], True),
       "the entry taken after the torn line is the user's entry")
    with open(log) as fp:  # a journal: its magic line, then "%08x %08x <line>" a frame
        eq([ln.split()[4] for ln in fp.read().splitlines()[1:]], ["a1", "a2", "b1"],
           "the log holds whole lines only")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()
finish()
