"""With spool.durability=fsync, a waiting-room token's claim is durable before
the 202 of the order it admits (one gateway): the buy's group commit
fdatasyncs the room's log (<data_dir>/fair/<sale>.room) with the order's
spool record, so a power cut cannot keep the order and lose the claim (the
token would buy again).

- fsync: a buy with an admission token is 202, and right after it the draw
  view's room shows the log synced through at least the claim's line (its
  length before the buy plus the "T <jti> <exp> <fp>" line: a front line the
  lottery appends meanwhile only adds to it) and one claim sync, no failure;
  the token is then spent (403 admission_spent).
- write: the same buy makes no claim sync (the lottery thread's periodic
  fdatasync only, as before)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
        "limits.subnet_rps=0", "--kafka-brokers", "none"]


def room(g):
    return g.admin("GET", "/admin/v1/sales/rf/draw").json["room"]


def admitted_token(g, user):
    deadline = time.time() + 5
    while time.time() < deadline:
        tok = g.get("/v1/sales/rf/queue?user_id=" + user).json.get("admission_token")
        if tok:
            return tok
        time.sleep(0.05)
    raise AssertionError("%s was not admitted within 5 s" % user)


def buy_with_token(g, user):
    """Buys with user's admission token; returns (the room before, after, the claim's length)."""
    r = g.admin("PUT", "/admin/v1/sales/rf", body={
        "stock": 10, "per_user_limit": 1, "waiting_room_rate": 20})
    eq(r.status, 201, "sale with a waiting room")
    tok = admitted_token(g, user)
    # "<expiry s>.<jti>.<mac>": the claim line is "T <jti> <expiry> <fp>\n", jti
    # and fp (0: no Idempotency-Key) 16 hex digits each
    claim_len = len("T %016x %s %016x\n" % (0, tok.split(".")[0], 0))
    before = room(g)
    r = g.buy("rf", user, headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("status")), (202, "queued"), "the admitted person buys")
    after = room(g)
    r = g.buy("rf", user, headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("reason")), (403, "admission_spent"), "its token is spent")
    return before, after, claim_len


g = Gateway(*ARGS, "--set", "spool.durability=fsync").start()
w = None
try:
    before, after, claim_len = buy_with_token(g, "u1")
    for k in ("log_bytes", "log_synced_bytes", "claim_syncs", "claim_sync_failures"):
        check(isinstance(after.get(k), int), "the room shows %s: %r" % (k, after))
    check(before["log_bytes"] > 0, "the log holds the keys, the place and its admission")
    eq((before["claim_syncs"], after["claim_syncs"], after["claim_sync_failures"]), (0, 1, 0),
       "one claim sync made by the buy's group commit, none failed")
    check(after["log_bytes"] >= before["log_bytes"] + claim_len,
          "the claim's line was appended: %d -> %d (+%d)"
          % (before["log_bytes"], after["log_bytes"], claim_len))
    check(after["log_synced_bytes"] >= before["log_bytes"] + claim_len,
          "the log is synced through the claim before its 202: %d synced, %d + %d needed"
          % (after["log_synced_bytes"], before["log_bytes"], claim_len))
    log = os.path.join(g.data_dir, "fair", "rf.room")
    with open(log) as f:
        # a journal (common/cm_journal.h): each line "%08x %08x <record>"
        check(any(line[18:].startswith("T ") for line in f), "the claim is a record of %s" % log)
    eq(g.stop(), 0, "graceful stop")

    w = Gateway(*ARGS, "--set", "spool.durability=write").start()
    before, after, _ = buy_with_token(w, "u2")
    eq((before["claim_syncs"], after["claim_syncs"]), (0, 0),
       "write durability: no claim sync (the lottery's periodic fdatasync only)")
    eq(w.stop(), 0, "graceful stop")
except Exception:
    for x in (g, w):
        if x:
            print(x.logs())
    raise
finally:
    for x in (w, g):
        if x:
            x.cleanup()
finish()
