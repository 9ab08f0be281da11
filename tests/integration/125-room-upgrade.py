"""A data dir written by the line-log release (tests/fixtures/upgrade-room,
made by its make_fixture.py) starts on this binary, and its waiting room and
lottery are the ones they were:

- fair/up.room, fair/lt.log and fair/rg.reg, line logs, are converted at
  the first start to journals
  (common/cm_journal.h): the magic line, then one frame per line, each
  length and CRC-32C right, the records the lines in their order, no
  "<sale>.room.tmp" left;
- the room shows the same seed, sealed, the same pre-queue, every person
  not admitted holds the place they held, the admission front did not go
  back, and a new arrival queues after the last place given;
- the lottery beside it (fair/lt.log) keeps its seed, its entries in draw
  order and their outcomes, and the registrations of a third sale
  (fair/rg.reg) are the persons registered;
- a restart reads the journal back (the new arrival's place included) and
  converts nothing again."""
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import SRC, Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
        "limits.subnet_rps=0", "--kafka-brokers", "none"]
FIX = os.path.join(SRC, "tests", "fixtures", "upgrade-room")
MAGIC = b"flashgate journal 1\n"


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def journal_records(path):
    """The records of a journal, each frame checked; raises on a bad one."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise AssertionError("%s does not start with the journal's magic line: %r"
                             % (path, data[:40]))
    out, off = [], len(MAGIC)
    while off < len(data):
        n = int(data[off:off + 8], 16)
        crc = int(data[off + 9:off + 17], 16)
        rec = data[off + 18:off + 18 + n]
        if data[off + 8:off + 9] != b" " or data[off + 17:off + 18] != b" " or \
                data[off + 18 + n:off + 19 + n] != b"\n" or \
                crc32c(rec, crc32c(data[off:off + 8])) != crc:
            raise AssertionError("bad frame at %d of %s: %r" % (off, path, data[off:off + 60]))
        out.append(rec.decode())
        off += 19 + n
    return out


def places(g, users):
    out = {}
    for u in users:
        r = g.get("/v1/sales/up/queue?user_id=" + u)
        eq(r.status, 200, "%s's place" % u)
        out[u] = r.json["position"]
    return out


def same_room(recs, old, what):
    """The log's records stand for the line log's room: its keys, its
    pre-queue's persons, its seal and every place it gave. The load rewrites
    the log from the room's state (gw_room_store.c: a failed fdatasync of a
    process before may have dropped lines its page cache still shows), so
    the records are that state's, not the old lines one for one."""
    def parts(lines):
        return (lines[:1], sorted(l for l in lines if l.startswith("J ")),
                [l for l in lines if l.startswith("S ")][:1])
    places = lambda lines: set(l for l in lines if l.startswith("P "))
    eq(parts(recs), parts(old), what + ": the keys, the pre-queue and the seal")
    check(places(old) <= places(recs), what + ": every place given")


with open(os.path.join(FIX, "expect.json")) as f:
    want = json.load(f)
with open(os.path.join(FIX, "data", "fair", "up.room")) as f:
    old_lines = f.read().splitlines()
check(old_lines and old_lines[0].startswith("K "), "the fixture's room log is a line log")
with open(os.path.join(FIX, "data", "fair", "lt.log")) as f:
    old_lot = f.read().splitlines()
check(old_lot and old_lot[0].startswith("E "), "the fixture's lottery log is a line log")

tmp = tempfile.mkdtemp(prefix="fg-upgrade-")
data = os.path.join(tmp, "data")
shutil.copytree(os.path.join(FIX, "data"), data)
room_log = os.path.join(data, "fair", "up.room")
lot_log = os.path.join(data, "fair", "lt.log")
reg_log = os.path.join(data, "fair", "rg.reg")
g = g2 = None
try:
    g = Gateway(*ARGS, data_dir=data).start()
    recs = journal_records(room_log)
    same_room(recs, old_lines, "the line log is now a journal of its room")
    check(not os.path.exists(room_log + ".tmp"), "no rewrite left beside it")
    recs = journal_records(lot_log)
    eq(recs[:len(old_lot)], old_lot, "the lottery's line log is now a journal of its lines too")
    check("converted to the journal framing" in g.logs(1 << 20), "the conversion is logged")
    rm = g.admin("GET", "/admin/v1/sales/up/draw").json["room"]
    eq((rm.get("seed"), rm["sealed"], rm["prequeue_size"]),
       (want["seed"], True, want["prequeue_size"]), "the same seed, sealed, the same pre-queue")
    # the admitted person who bought: asked for last. Its place holds while its
    # token (expiry: the token's first field) has not lapsed; once it has (the
    # fixture is older than the token), it joins again at the back.
    bought = want["spent"]["user"]
    lapsed = time.time() > int(want["spent"]["token"].split(".")[0])
    users = sorted(u for u in want["places"] if u != bought)
    kept = {u: want["places"][u] for u in users}
    eq(places(g, users), kept, "every person not admitted holds the place they held")
    check(g.get("/v1/sales/up/queue").json["admitting_through"] >= 2,
          "the admission front did not go back")
    last = max(want["places"].values())
    eq(places(g, ["new1"]), {"new1": last + 1}, "a new arrival queues after the last place given")
    again = last + 2 if lapsed else want["places"][bought]
    eq(places(g, [bought]), {bought: again},
       "the admitted place holds, or joins again at the back once its token lapsed")
    r = g.admin("GET", "/admin/v1/sales/rg/registrations?limit=100")
    eq((r.status, r.json.get("count"), r.json.get("persons")),
       (200, len(want["registered"]["persons"]), want["registered"]["persons"]),
       "the registrations (fair/rg.reg) are the persons registered, in their order")
    eq(journal_records(reg_log), want["registered"]["persons"],
       "the registrations' line log is now a journal of its lines")
    lot = g.admin("GET", "/admin/v1/sales/lt/draw").json
    eq((lot["state"], lot["seed"]), ("drawn", want["lottery"]["seed"]),
       "the lottery beside it (fair/lt.log) is drawn with the same seed")
    eq([{k: e[k] for k in ("position", "order_id", "user_id", "outcome")}
        for e in lot["entries"]], want["lottery"]["entries"],
       "the same entries in the same draw order, the same outcomes")
    eq(g.stop(), 0, "graceful stop")

    g2 = Gateway(*ARGS, data_dir=data).start()
    recs = journal_records(room_log)
    same_room(recs, old_lines, "the journal kept its room")
    check(not any(r.startswith("K ") for r in recs[1:]), "one key record")
    check("converted to the journal framing" not in g2.logs(1 << 20), "nothing converted again")
    eq(journal_records(lot_log)[:len(old_lot)], old_lot, "the lottery's journal kept its records")
    r = g2.admin("GET", "/admin/v1/sales/rg/registrations?limit=100")
    eq(r.json.get("persons"), want["registered"]["persons"], "the registrations kept")
    rm = g2.admin("GET", "/admin/v1/sales/up/draw").json["room"]
    eq((rm.get("seed"), rm["sealed"]), (want["seed"], True), "after a restart: the same seed")
    eq(places(g2, users + ["new1", bought]), dict(kept, new1=last + 1, **{bought: again}),
       "every place kept, those given after the conversion too")
    eq(g2.stop(), 0, "graceful stop")
except Exception:
    for x in (g, g2):
        if x:
            print(x.logs())
    raise
finally:
    for x in (g2, g):
        if x:
            x.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
finish()
