"""A small bot-heavy crowd (40% bots, most of them aggressive, from 8
addresses, firing early and 2 ms after the start) against one real gateway
with the embedded broker and flashgate-settle, audited by flashgate-load:

  - with a start-window lottery: the audit PASSes (stock, no oversell, every
    winner's order in the topic and the database exactly once) and its
    fairness line PASSes: no class won more than its share of entrants plus
    5 sigma of the hypergeometric spread (recomputed here from report.json);
  - the same crowd first-come (no window): the fairness line WARNs (over its
    level, reported, not enforced), so the line is not one that cannot fail.
Bounded: 3,000 users over 3 s per run, loopback only."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary  # noqa: E402
from fgq import Rehearsal, hyper_limit, load_report  # noqa: E402

for b in ("flashgate", "flashgate-load", "flashgate-settle"):
    need_binary(b)

SCENARIO = {
    "name": "it-bot-heavy", "seed": 11, "duration_s": 3, "drain_s": 8,
    "connections": 64,
    "sale": {"create": True, "stock": 60, "per_user_limit": 1, "start_offset_s": 1.5,
             "duration_s": 600},
    "crowd": {"users": 3000, "addresses": 2000, "bot_fraction": 0.4, "aggressive_fraction": 0.8,
              "bot_addresses": 8, "qty": 1, "person_reaction_ms": 300, "bot_reaction_ms": 2,
              "bot_early_ms": 300},
    "behaviour": {"max_retries": 3, "retry_default_ms": 500, "bot_retry_ms": 20,
                  "bot_max_retries": 25, "poll_interval_ms": 300, "poll_max": 10},
    "arrivals": [{"kind": "ramp", "duration_s": 1.5, "rate": 300, "rate_end": 1200},
                 {"kind": "spike", "duration_s": 1, "rate": 1500},
                 {"kind": "decay", "duration_s": 0.5, "rate": 600, "rate_end": 50}],
}


with Rehearsal("fg-fair-reh-") as reh:
    g = reh.gateway

    def run(sale, window_ms):
        sc = json.loads(json.dumps(SCENARIO))
        sc["sale"]["id"] = sale
        sc["targets"] = ["http://127.0.0.1:%d" % g.port]
        sc["admin"] = "http://127.0.0.1:%d" % g.admin_port
        # said either way: a scenario silent about it gets the gateway's default window
        sc["sale"]["fair_window_ms"] = window_ms
        if window_ms:
            sc["sale"]["fair_early_ms"] = 400
        path = os.path.join(reh.tmp, sale + ".json")
        with open(path, "w") as f:
            json.dump(sc, f)
        p, lines, out = reh.load(path, "out-" + sale)
        if p.returncode not in (0, 1):
            raise RuntimeError("flashgate-load exit %d: %s" % (p.returncode, p.stderr[-2000:]))
        return p.returncode, lines, load_report(out)

    # --- with the window ---
    rc, lines, rep = run("it-fair", 1000)
    eq(rc, 0, "audit exit status with a fair window")
    for c in ("PASS stock", "PASS no_oversell", "PASS kafka", "PASS db", "PASS per_user_limit",
              "PASS fairness"):
        check(c in lines, "%s (%s)" % (c, lines.get(c.split()[1], "no line")))
    fair = rep["figures"]["fair"]
    cls = fair["classes"]
    n = sum(c["entrants"] for c in cls.values())
    k = sum(c["won_orders"] for c in cls.values())
    check(n > 200, "a crowd entered (%d)" % n)
    eq((k, rep["figures"]["orders"]["units"]), (60, 60), "the stock went to entrants, exactly")
    bots_n = cls["bots"]["entrants"] + cls["aggressive_bots"]["entrants"]
    bots_won = cls["bots"]["won_orders"] + cls["aggressive_bots"]["won_orders"]
    limit = hyper_limit(n, bots_n, k)
    print("with window: bots %d of %d entrants (%.1f%%), won %d of %d (%.1f%%), 5-sigma limit %d"
          % (bots_n, n, 100 * bots_n / n, bots_won, k, 100 * bots_won / k, limit))
    check(bots_won <= limit, "bots' units within the 5-sigma level of their share of entrants")

    # --- the same crowd first-come ---
    rc, lines, rep = run("it-fcfs", 0)
    eq(rc, 0, "first-come run: the other checks pass, fairness is not enforced")
    fl = lines.get("WARN fairness", "")
    check(fl and "not enforced" in fl and "OVER" in fl,
          "first-come: the fairness line WARNs: %r" % lines.get("PASS fairness", fl))
    check("FAIL fairness" not in lines, "first-come: no FAIL line for a check not enforced")
    eq([c["result"] for c in rep["audit"]["checks"] if c["name"] == "fairness"], ["WARN"],
       "report.json: fairness WARN")
    o = rep["figures"]["orders"]
    print("first-come: bots won %d of %d units" % (o["won_by_bots"], o["units"]))
finish()
