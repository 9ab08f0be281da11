"""The overload tests' shared set-up: a gateway capped with a cgroup v1 CPU
quota and flashgate-load's internet crowd (connection_mode open: a new
connection when none is idle, people who give up after 2 s), run while a
watcher probes the gateway. Used by the 5x-overload-* tests (51-58).

cgroups must be available (CI runs as root): their absence is a failure.
"""
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.join(HERE, "..", "..", "bench"))
from fg import BIN, Gateway, check  # noqa: E402
from cpucap import CpuCap  # noqa: E402  (the overload bench caps the same way)


class Cgroup(CpuCap):
    """`pct` percent of one core (bench/cpucap.py: 5% is 1 ms per 20 ms)."""

    def __init__(self, name, pct=5):
        CpuCap.__init__(self, name, pct / 100.0)


def crowd_gateway(*extra):
    """A one-worker gateway for a crowd: no Kafka, levels automatic, no per-user
    or per-IP rate limit (the crowd's users and addresses are few); `extra`
    flags are added."""
    return Gateway("--kafka-brokers", "none", "--overload-level", "auto",
                   "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0",
                   "--log-level", "warn", *extra, threads=1)


def run_crowd(g, sale, tag, seed, load_s, rate, watch, every=0.2, scenario=None, figures=None):
    """Runs `rate` buy arrivals/s at gateway `g` for `load_s` seconds, calling
    watch() every `every` seconds while the crowd runs; checks that the load
    generator ran and returns its answer counts ({"202": n, "503": n, ...}).
    `scenario` overrides keys of the scenario (e.g. a fixed pool of connections);
    `figures`, a dict, receives the report's whole figures."""
    scen = {
        "name": "it-" + tag, "seed": seed, "duration_s": load_s, "drain_s": 2,
        "targets": ["http://127.0.0.1:%d" % g.port],
        "admin": "http://127.0.0.1:%d" % g.admin_port, "admin_token": g.token,
        "connections": 32, "connection_mode": "open", "connections_max": 1024,
        "give_up_ms": 2000, "request_timeout_ms": 2000,
        "sale": {"id": sale, "create": False},
        "crowd": {"users": 200000, "addresses": 5000, "qty": 1},
        "behaviour": {"max_retries": 0, "poll_max": 0, "settle_wait_s": 0},
        "arrivals": [{"kind": "plateau", "duration_s": load_s, "rate": rate}],
    }
    scen.update(scenario or {})
    path = os.path.join(g.tmp, "scenario-%s.json" % tag)
    with open(path, "w") as f:
        json.dump(scen, f)
    out = os.path.join(g.tmp, "load-" + tag)
    load = subprocess.Popen([os.path.join(BIN, "flashgate-load"), "--scenario", path,
                             "--out", out, "--no-audit", "--no-create", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def loop():
        while load.poll() is None:
            watch()
            time.sleep(every)

    t = threading.Thread(target=loop)
    t.start()
    try:
        lo, _ = load.communicate(timeout=load_s + 40)
    except subprocess.TimeoutExpired:
        load.kill()
        lo, _ = load.communicate()
    t.join(timeout=30)
    check(load.returncode == 0, "flashgate-load ran (%s): rc %s %s" % (tag, load.returncode,
                                                                      lo[-600:]))
    figs = json.load(open(os.path.join(out, "report.json")))["figures"]
    # The fine timeline's send delay per bin: one per bin, and never past the bin's
    # slowest answer (an answer's latency counts from the same scheduled time).
    fine = figs.get("fine_timeline") or {}
    lags, worst = fine.get("lag_max_ms", []), fine.get("max_ms", [])
    check(len(lags) == len(worst) == len(fine.get("n", [])),
          "fine_timeline: a lag_max_ms per bin (%s)" % tag)
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(lags, worst)) if a > b]
    check(not bad, "fine_timeline: lag_max_ms <= max_ms in every bin (%s): %s" % (tag, bad[:3]))
    if figures is not None:
        figures.update(figs)
    codes = figs["answers"]
    print("%s: answers %s" % (tag, json.dumps(codes)))
    return codes
