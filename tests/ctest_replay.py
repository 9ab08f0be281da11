"""Replays a `make test` log's per-test times through ctest's parallel scheduler,
with the COST and PROCESSORS a configured build directory gives its tests now:
what a stage's wall time becomes when the slots, the costs or a test's time
change, without running the suite.

    python3 tests/ctest_replay.py BUILD_DIR LOG [-L REGEX] [-j N] [--set NAME=SECONDS ...]

BUILD_DIR: a configured tree (cmake -S . -B DIR with the stage's flags; no build
needed), whose `ctest --show-only=json-v1` gives the tests, labels, COST and
PROCESSORS. LOG: the output of `make test` (or of one stage); the times are read
from every ctest run in it on a directory of BUILD_DIR's name (build, build-asan,
build-tsan). -L: the label regex the stage runs (Makefile). --set replaces a
test's time (the effect of making it faster). A test missing from the log counts
its COST, else 0 (listed).

The model is ctest 3.25's (cmCTestMultiProcessHandler::StartNextTests): the tests
sorted by COST, highest first, ties in registration order; whenever a test ends,
every test in that order that fits the free slots starts, and one that needs more
slots than are free is passed over (so a two-slot test waits for two free slots
while one-slot tests take each slot that frees). It replays CI's 2-core run of
the dev stage (-j5) and the ASan stage (-j4) to the second (404 s and 443 s).
"""
import argparse
import heapq
import json
import os
import re
import subprocess
import sys


def read_times(log, dirname):
    times = {}
    cur = None
    with open(log, errors="replace") as f:
        for ln in f:
            m = re.match(r"Test project (\S+)", ln)
            if m:
                cur = os.path.basename(m.group(1).rstrip("/"))
                continue
            m = re.search(r"Test +#\d+: (\S+) \.+\s+\**\s*\w[\w ]*?\s+([\d.]+) sec", ln)
            if m and cur == dirname:
                times[m.group(1)] = float(m.group(2))
    return times


def read_tests(build):
    out = subprocess.run(["ctest", "--show-only=json-v1"], cwd=build, capture_output=True,
                         text=True, check=True).stdout
    tests = []
    for i, t in enumerate(json.loads(out)["tests"]):
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        tests.append({"name": t["name"], "index": i, "labels": props.get("LABELS", []),
                      "cost": float(props.get("COST", 0)),
                      "procs": int(props.get("PROCESSORS", 1))})
    return tests


def replay(tests, times, jobs):
    order = sorted(tests, key=lambda t: (-t["cost"], t["index"]))
    pending = list(order)
    running = []
    now = 0.0
    used = 0
    while pending or running:
        free = jobs - used
        for t in list(pending):
            if free <= 0:
                break
            p = min(t["procs"], jobs)
            if p <= free:
                heapq.heappush(running, (now + times[t["name"]], t["index"], p))
                pending.remove(t)
                used += p
                free -= p
        now, _, p = heapq.heappop(running)
        used -= p
    return now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("log")
    ap.add_argument("-L", dest="label", default="unit|integration|sim")
    ap.add_argument("-j", dest="jobs", type=int, default=4)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    times = read_times(a.log, os.path.basename(os.path.abspath(a.build)))
    for s in a.set:
        n, v = s.split("=")
        times[n] = float(v)
    tests = [t for t in read_tests(a.build) if any(re.search(a.label, l) for l in t["labels"])]
    missing = [t["name"] for t in tests if t["name"] not in times]
    for t in tests:
        times.setdefault(t["name"], t["cost"])
    if missing:
        print("not in the log (COST used): %s" % " ".join(missing), file=sys.stderr)
    slot_s = sum(times[t["name"]] * min(t["procs"], a.jobs) for t in tests)
    print("%d tests, %.0f slot-seconds, -j%d: %.0f s" % (len(tests), slot_s, a.jobs,
                                                       replay(tests, times, a.jobs)))


if __name__ == "__main__":
    main()
