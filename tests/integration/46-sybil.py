"""The rehearsal sees persons: loadtest/scenarios/sybil.json (900 people and 100
scalper operators with 20 accounts and 2 persons each, from 1,000 proxy
addresses, a 300-unit start-window lottery) against one real gateway with
identity off (one lottery entry per account), the embedded broker and
flashgate-settle.

  - every invariant holds (stock, no oversell, each winner's order in the topic
    and the database exactly once, one unit per account);
  - the fairness line, which judges per person, FAILs on the scalpers: they are
    ~18% of the entrant persons and win ~70% of the units, far over the
    hypergeometric tolerance of their share of persons (recomputed here from
    report.json), several units per scalper person, one per person of the people;
  - flashgate-load exits 1 (the audit FAILs): the rehearsal has teeth.
Then the same crowd against a gateway with identity.mode=jwt and
identity.person_claim=person, every account with a token minted from the
gateway's key whose person claim names its person (flashgate-load
--identity-key): one lottery entry per person (a second account of an entered
person is answered 409 already_entered), so

  - the fairness line PASSes: the scalpers' units are within the tolerance of
    their share of entrant persons, and no person, scalper or not, holds more
    than per_user_limit (1) unit;
  - every other invariant still holds and flashgate-load exits 0.
Bounded: 2,900 accounts over 3 s per run, loopback only (~25 s for both)."""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, Gateway, check, eq, finish, need_binary  # noqa: E402
from fgq import Settle, bootstrap  # noqa: E402

for b in ("flashgate", "flashgate-load", "flashgate-settle"):
    need_binary(b)


def hyper_limit(N, n, K, tail=2.87e-7):
    """Smallest x with P(X > x) < tail for X ~ Hypergeometric(N, n, min(K, N)), as the audit."""
    K = min(K, N)

    def lc(a, b):
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
    cdf = 0.0
    for x in range(max(0, K - (N - n)), min(n, K) + 1):
        cdf += math.exp(lc(n, x) + lc(N - n, K - x) - lc(N, K))
        if 1 - cdf < tail:
            return x
    return min(n, K)


def rehearse(tmp, g, st, boot, identity_key=None):
    """Runs sybil.json against g; returns (process, report.json, lines by check name)."""
    out = os.path.join(tmp, "out")
    cmd = [os.path.join(BIN, "flashgate-load"),
           "--scenario", os.path.join(SRC, "loadtest/scenarios/sybil.json"),
           "--target", "http://127.0.0.1:%d" % g.port,
           "--admin", "http://127.0.0.1:%d" % g.admin_port,
           "--admin-token", g.token, "--kafka-brokers", boot,
           "--db", st.db_path, "--out", out, "--quiet",
           "--identity-key", identity_key or ""]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    print(p.stdout)
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    lines = {ln.split(":")[0]: ln for ln in p.stdout.splitlines() if ":" in ln}
    return p, rep, lines


def identity_off(tmp):
    os.makedirs(tmp)
    g = Gateway("--server-trusted-proxies", "127.0.0.1/32", "--threads", "2")
    st = None
    try:
        g.start()
        boot = bootstrap(g.data_dir, timeout=30)
        st = Settle(g.data_dir, tmp=tmp).start()
        p, rep, lines = rehearse(tmp, g, st, boot)
        eq(p.returncode, 1, "flashgate-load exits 1: the audit FAILs")
        for c in ("PASS stock", "PASS no_oversell", "PASS kafka", "PASS db",
                  "PASS per_user_limit", "FAIL fairness"):
            check(c in lines, "%s (%s)" % (c, lines.get(c.split()[1], "no line")))
        fl = lines.get("FAIL fairness", "")
        check("scalpers won" in fl and "OVER" in fl.split("scalpers won")[1].split(";")[0],
              "the scalpers are the class over: %r" % fl)
        check("people won" in fl and "OVER" not in fl.split("people won")[1].split(";")[0],
              "the people are not over")
        check("top operator" in fl and "per person" in fl, "units per person of the top operators")
        check("audit: FAIL" in p.stdout, "audit: FAIL printed")

        fair = rep["figures"]["fair"]
        cls = fair["classes"]
        sc, pp = cls["scalpers"], cls["people"]
        eq(sc["users"], 2000, "2,000 scalper accounts")
        eq(sc["persons"], 200, "held by 200 persons")
        eq(pp["persons"], 900, "900 people")
        n = sum(c["entrant_persons"] for c in cls.values())
        k = sum(c["won_orders"] for c in cls.values())
        eq((k, rep["figures"]["orders"]["units"]), (300, 300), "the stock went to entrants, exactly")
        limit = hyper_limit(n, sc["entrant_persons"], k)
        share = sc["entrant_persons"] / n
        print("scalpers: %d of %d entrant persons (%.1f%%), %d entrant accounts, won %d of %d "
              "(%.1f%%), tolerance %d" % (sc["entrant_persons"], n, 100 * share, sc["entrants"],
                                          sc["won_orders"], k, 100 * sc["won_orders"] / k, limit))
        check(sc["won_orders"] > limit, "scalpers over the tolerance of their share of persons")
        check(sc["won_orders"] > 2 * share * k, "far over: more than twice their share of persons")
        check(str(limit) in fl.split("scalpers won")[1],
              "the line's max is the tolerance (%d)" % limit)
        check(sc["max_units_per_person"] >= 2, "a scalper person won several units (%d)"
              % sc["max_units_per_person"])
        eq(pp["max_units_per_person"], 1, "one unit per person of the people")
        ops = fair["top_operators"]
        check(len(ops) == 5 and ops[0]["won_units"] >= ops[-1]["won_units"] and
              ops[0]["units_per_person"] == ops[0]["won_units"] / 2,
              "top operators, most units first: %r" % ops[:2])
        eq([c["result"] for c in rep["audit"]["checks"] if c["name"] == "fairness"], ["FAIL"],
           "report.json: fairness FAIL")
    except Exception:
        print(g.logs())
        raise
    finally:
        if st:
            st.stop()
        g.cleanup()


def persons_on(tmp):
    os.makedirs(tmp)
    g = Gateway("--server-trusted-proxies", "127.0.0.1/32", "--threads", "2",
                "--set", "identity.mode=jwt", "--set", "identity.person_claim=person",
                identity_mode=None)
    st = None
    try:
        g.start()
        boot = bootstrap(g.data_dir, timeout=30)
        st = Settle(g.data_dir, tmp=tmp).start()
        p, rep, lines = rehearse(tmp, g, st, boot,
                                 identity_key=os.path.join(g.data_dir, "identity.key"))
        for c in ("PASS stock", "PASS no_oversell", "PASS kafka", "PASS db",
                  "PASS per_user_limit", "PASS fairness"):
            check(c in lines, "persons: %s (%s)" % (c, lines.get(c.split()[1], "no line")))
        eq(p.returncode, 0, "persons: flashgate-load exits 0, the audit PASSes (%s)"
           % p.stderr[-300:])
        fair = rep["figures"]["fair"]
        cls = fair["classes"]
        sc, pp = cls["scalpers"], cls["people"]
        n = sum(c["entrant_persons"] for c in cls.values())
        k = sum(c["won_orders"] for c in cls.values())
        eq(rep["figures"]["orders"]["units"], k, "every unit went to a drawn entrant")
        check(k > 0, "the draw admitted winners (%d)" % k)
        check(sc["entrants"] <= sc["persons"],
              "one entry per scalper person: %d entries for %d persons"
              % (sc["entrants"], sc["persons"]))
        limit = hyper_limit(n, sc["entrant_persons"], k)
        share = sc["entrant_persons"] / n
        print("persons: scalpers %d of %d entrant persons (%.1f%%), %d entrant accounts, won %d "
              "of %d (%.1f%%), tolerance %d" % (sc["entrant_persons"], n, 100 * share,
                                                sc["entrants"], sc["won_orders"], k,
                                                100 * sc["won_orders"] / max(k, 1), limit))
        check(sc["won_orders"] <= limit, "scalpers within the tolerance of their share of persons")
        for name, c in cls.items():
            check(c.get("max_units_per_person", 0) <= 1,
                  "no %s person over per_user_limit 1 (%d)"
                  % (name, c.get("max_units_per_person", 0)))
        eq([c["result"] for c in rep["audit"]["checks"] if c["name"] == "fairness"], ["PASS"],
           "report.json: fairness PASS")
    except Exception:
        print(g.logs())
        raise
    finally:
        if st:
            st.stop()
        g.cleanup()


tmp = tempfile.mkdtemp(prefix="fg-sybil-")
try:
    identity_off(os.path.join(tmp, "off"))
    persons_on(os.path.join(tmp, "on"))
finally:
    subprocess.run(["rm", "-rf", tmp])
finish()
