"""GET /admin/v1/audit on a large audit log: the time of one answer, and of an
admin write sent while such GETs run.

    python3 bench/audit_list.py [--bin DIR_OR_FILE] [--lines 100000] [--reps 5]
    python3 bench/audit_list.py --start-only [--bin ...] [--lines 100000] [--reps 5]

Makes a data dir whose audit.log holds --lines entries (each line a copy of a
real one the gateway wrote, a rule.put with its "config", with its own version),
starts flashgate on it and times, as the median and the minimum of --reps:
  - GET ?limit=1000            (the newest 1000 of all)
  - GET ?limit=10000           (the largest page)
  - GET ?since=N-500&limit=1000 (fewer match than the limit: the whole log is read)
  - GET ?since=N               (nothing matches)
  - PATCH /admin/v1/limits sent 20 ms after a GET ?limit=10000 starts: the
    write waits for whatever lock the GET holds.
--start-only times instead the gateway's start (exec to an answered admin
/healthz, which comes after the audit log is opened) on that log and on an
empty data dir, --reps times each, and prints the median and the minimum.
Loopback only, every process stopped by its PID; stdlib only.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port  # noqa: E402

TOKEN = "audit-bench-token-0123456789abcdef"


def req(port, method, path, body=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Authorization": "Bearer " + TOKEN}
    if body is not None:
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


class Gw:
    def __init__(self, binary, data_dir, tmp):
        self.port, self.admin = free_port(), free_port()
        self.log = open(os.path.join(tmp, "flashgate-%d.log" % self.port), "ab")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:%d" % self.port,
             "--admin-listen", "127.0.0.1:%d" % self.admin, "--data-dir", data_dir,
             "--threads", "1", "--admin-token", TOKEN, "--kafka-brokers", "none",
             "--log-level", "warn", "--set", "server.drain_grace=0"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("flashgate exited with %s" % self.proc.returncode)
            try:
                if req(self.admin, "GET", "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.005)  # the start is timed to within this (--start-only)
        raise RuntimeError("flashgate not ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def timed(port, path, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        st, body = req(port, "GET", path)
        out.append(time.perf_counter() - t)
        if st != 200:
            raise RuntimeError("GET %s: %d %r" % (path, st, body[:200]))
    return out, json.loads(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "build"))
    ap.add_argument("--lines", type=int, default=100000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--start-only", action="store_true",
                    help="time the start on the log and on an empty data dir")
    a = ap.parse_args()
    binary = a.bin if os.path.isfile(a.bin) else os.path.join(a.bin, "flashgate")
    tmp = tempfile.mkdtemp(prefix="fg-audit-bench-")
    try:
        # 1. a real line: a rule.put, whose "config" holds the limits and one rule
        seed = os.path.join(tmp, "seed")
        g = Gw(binary, seed, tmp)
        try:
            st, _ = req(g.admin, "PUT", "/admin/v1/rules/bench-sale",
                        {"user_rps": 2, "user_burst": 4, "sale_rps": 500, "sale_burst": 1000})
            assert st in (200, 201), st
        finally:
            g.stop()
        with open(os.path.join(seed, "audit.log")) as f:
            tmpl = [json.loads(x) for x in f if '"rule.put"' in x][-1]
        # 2. the large log: versions 1..N
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        with open(os.path.join(data, "audit.log"), "w") as f:
            for v in range(1, a.lines + 1):
                tmpl["version"] = v
                f.write(json.dumps(tmpl, separators=(",", ":")) + "\n")
        size = os.path.getsize(os.path.join(data, "audit.log"))
        if a.start_only:
            rows = []
            for name, d in (("empty data dir", os.path.join(tmp, "empty")),
                            ("audit.log of %d lines" % a.lines, data)):
                ts = []
                for _ in range(a.reps):
                    t0 = time.perf_counter()
                    g = Gw(binary, d, tmp)
                    ts.append(time.perf_counter() - t0)
                    g.stop()
                rows.append((name, statistics.median(ts), min(ts)))
            print("audit.log: %d lines, %.1f MB; %s" % (a.lines, size / 1e6, binary))
            print("| start (exec to admin /healthz) | median ms | min ms |")
            print("| --- | ---: | ---: |")
            for name, med, lo in rows:
                print("| %s | %.1f | %.1f |" % (name, med * 1e3, lo * 1e3))
            return
        t0 = time.perf_counter()
        g = Gw(binary, data, tmp)
        start_s = time.perf_counter() - t0
        try:
            n = a.lines + 1  # the start line
            rows = []
            for path, want in (("/admin/v1/audit?limit=1000", 1000),
                               ("/admin/v1/audit?limit=10000", min(10000, n)),
                               ("/admin/v1/audit?since=%d&limit=1000" % (n - 500), min(500, n)),
                               ("/admin/v1/audit?since=%d" % n, 0)):
                ts, body = timed(g.admin, path, a.reps)
                got = len(body["entries"])
                if got != want:
                    raise RuntimeError("%s: %d entries, want %d" % (path, got, want))
                rows.append((path, statistics.median(ts), min(ts)))
            # 3. a write while a long GET runs
            waits = []
            for i in range(a.reps):
                th = threading.Thread(target=req, args=(g.admin, "GET",
                                                        "/admin/v1/audit?limit=10000"))
                th.start()
                time.sleep(0.02)
                t = time.perf_counter()
                st, _ = req(g.admin, "PATCH", "/admin/v1/limits", {"user_burst": 5 + i % 2})
                waits.append(time.perf_counter() - t)
                th.join()
                assert st == 200, st
            rows.append(("PATCH /admin/v1/limits during a GET ?limit=10000",
                         statistics.median(waits), min(waits)))
        finally:
            g.stop()
        print("audit.log: %d lines, %.1f MB; %s; start %.2f s" % (n, size / 1e6, binary,
                                                                    start_s))
        print("| request | median ms | min ms |")
        print("| --- | ---: | ---: |")
        for path, med, lo in rows:
            print("| `%s` | %.1f | %.1f |" % (path, med * 1e3, lo * 1e3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
