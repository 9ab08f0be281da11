"""Buys through a waiting room under spool.durability=fsync: the fdatasyncs of
each group-commit batch, and what they cost next to buys without a room.

    python3 bench/room_fsync.py [--buyers 3000] [--conc 32] [--threads 2] [--no-strace]

Starts flashgate (build/, or FLASHGATE_BIN) with spool.durability=fsync and two
sales of the same stock: "rb", with a waiting room that admits everyone at once,
and "pb" without one. Every buyer of rb takes an admission token first. Then,
for each sale in turn, --conc connections buy one unit per buyer (rb with the
token: a claim line in the room's log before the reserve), and it prints:
  - orders/s of the buy phase and the buys' latency p50/p99, without strace;
  - in a second run of the same buys under `strace -f -y -e trace=fdatasync`:
    the fdatasyncs on the room's log (<sale>.room) and on the spool's segments;
  - batches: the room's claim_syncs (one per batch of a worker's group commit
    that holds a token's claim, gw_fair_admission_sync), and the room and
    spool fdatasyncs per batch.
Loopback only; the gateway is stopped by its PID; stdlib only.
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fg import Gateway  # noqa: E402

ARGS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
        "limits.subnet_rps=0", "--kafka-brokers", "none", "--set", "spool.durability=fsync"]


def buy_all(port, sale, buyers, tokens, conc):
    """Buys one unit per buyer on conc keep-alive connections; returns (202s, seconds,
    sorted latencies in ms)."""
    ok = [0] * conc
    lat = [[] for _ in range(conc)]
    todo = list(buyers)
    lock = threading.Lock()

    def run(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if not todo:
                    break
                u = todo.pop()
            h = {"Content-Type": "application/json"}
            if tokens:
                h["X-Admission-Token"] = tokens[u]
            t = time.perf_counter()
            c.request("POST", "/v1/sales/%s/orders" % sale, body=json.dumps({"user_id": u}),
                      headers=h)
            r = c.getresponse()
            r.read()
            lat[i].append((time.perf_counter() - t) * 1000)
            ok[i] += r.status == 202
        c.close()

    t0 = time.time()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(ok), time.time() - t0, sorted(x for v in lat for x in v)


def claim_syncs(g):
    return g.admin("GET", "/admin/v1/sales/rb/draw").json["room"]["claim_syncs"]


def run_once(args, traced):
    g = Gateway(*ARGS, threads=args.threads).start()
    try:
        stock = args.buyers + 10
        for sale, room in (("rb", True), ("pb", False)):
            body = {"stock": stock, "per_user_limit": 1}
            if room:
                body["waiting_room_rate"] = 1000000
            assert g.admin("PUT", "/admin/v1/sales/" + sale, body=body).status == 201
        buyers = ["b%05d" % i for i in range(args.buyers)]
        tokens = {}
        for u in buyers:  # a place each, then the token once the front passes it
            g.get("/v1/sales/rb/queue?user_id=" + u)
        deadline = time.time() + 30
        for u in buyers:
            while u not in tokens and time.time() < deadline:
                tok = g.get("/v1/sales/rb/queue?user_id=" + u).json.get("admission_token")
                if tok:
                    tokens[u] = tok
                else:
                    time.sleep(0.02)
        assert len(tokens) == len(buyers), "not every buyer was admitted"
        out = {}
        for sale, toks in (("rb", tokens), ("pb", None)):
            tr = None
            if traced:
                log = os.path.join(g.tmp, "strace-%s.txt" % sale)
                tr = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e", "trace=fdatasync",
                                       "-o", log, "-p", str(g.proc.pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # attached to every thread
            c0 = claim_syncs(g)
            n, secs, lat = buy_all(g.port, sale, buyers, toks, args.conc)
            c1 = claim_syncs(g)
            row = {"orders": n, "secs": secs, "batches": c1 - c0,
                   "p50": lat[len(lat) // 2], "p99": lat[len(lat) * 99 // 100]}
            if tr:
                time.sleep(0.3)
                tr.terminate()
                tr.wait(10)
                room = spool = other = 0
                with open(log) as f:
                    for line in f:
                        m = re.search(r"fdatasync\(\d+<([^>]*)>", line)
                        if not m:
                            continue
                        if m.group(1).endswith(".room"):
                            room += 1
                        elif "/spool/" in m.group(1):
                            spool += 1
                        else:
                            other += 1
                row.update(room_syncs=room, spool_syncs=spool, other_syncs=other)
            out[sale] = row
        return out
    finally:
        g.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--buyers", type=int, default=3000)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-strace", action="store_true")
    args = ap.parse_args()
    plain = run_once(args, False)
    for sale in ("rb", "pb"):
        r = plain[sale]
        print("%s %s: %d orders in %.2f s, %.0f orders/s, latency p50 %.2f ms p99 %.2f ms" % (
            sale, "room " if sale == "rb" else "plain", r["orders"], r["secs"],
            r["orders"] / r["secs"], r["p50"], r["p99"]))
    if args.no_strace:
        return
    traced = run_once(args, True)
    for sale in ("rb", "pb"):
        r = traced[sale]
        b = traced["rb"]["batches"] if sale == "rb" else 0
        line = "%s traced: %d orders, fdatasyncs room %d spool %d other %d" % (
            sale, r["orders"], r["room_syncs"], r["spool_syncs"], r["other_syncs"])
        if b:
            line += "; %d batches with claims: %.2f room + %.2f spool fdatasyncs per batch" % (
                b, r["room_syncs"] / b, r["spool_syncs"] / b)
        print(line)


if __name__ == "__main__":
    main()
