"""The overload benchmark keeps working: bench/overload.py --smoke runs every
case (Redis capped, gateway capped, mixed with the test upstream) for a
fraction of a second per load, judges no targets, and must produce its table,
its raw JSON and its PNG, with every request of every run accounted for, and
leave no process or cgroup behind. Performance is never asserted here (that
is the benchmark's job). Dev stage only: the sanitizers add nothing to a
Python script, and a capped ASan gateway is too slow to be a smoke test.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fg  # noqa: E402

out = tempfile.mkdtemp(prefix="fg-bench-overload-")
env = dict(os.environ, FLASHGATE_BIN=fg.BIN)
# A group a killed run left (its pid dead, nobody in it) is removed at the start.
dead = subprocess.Popen(["true"])
dead.wait()
stale = "/sys/fs/cgroup/cpu/flashgate-bench-%d-gateway" % dead.pid
os.makedirs(stale, exist_ok=True)
# overload.py names its cgroups flashgate-bench-<its pid>-<role> (cpu and cpuacct);
# only this run's are judged: a bench killed with SIGKILL elsewhere on the machine
# cannot remove its own, and that is not this run's fault.
proc = subprocess.Popen([sys.executable, os.path.join(fg.SRC, "bench", "overload.py"), "--smoke",
                         "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=env, preexec_fn=fg.die_with_parent)
try:
    stdout, stderr = proc.communicate(timeout=110)
except subprocess.TimeoutExpired:
    proc.kill()
    stdout, stderr = proc.communicate()
p = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
print(p.stdout)
if p.returncode != 0:
    print(p.stderr[-4000:], file=sys.stderr)
fg.eq(p.returncode, 0, "bench/overload.py --smoke exit status")
for case in ("== dep:", "== cpu:", "== mixed:"):
    fg.check(case in p.stdout, "the table has the case %s" % case)
fg.check("THE MACHINE IS SHARED" in p.stdout, "the output says the machine is shared")
fg.check("dep: redis-server flashgate-bench-%d-redis: cpu.cfs_quota_us=1000 "
         "cpu.cfs_period_us=20000 (5%% of one core)" % proc.pid in p.stdout,
         "the output names the cgroup cap of redis-server (--redis-cpu's default, 5%)")
fg.check("physical bound: B = " in p.stdout, "the CPU-bound case prints its physical bound")
fg.check("a at each load (protected" in p.stdout,
         "the CPU-bound case prints what a 202 cost at each load beside the sat pool's a")
jpath = os.path.join(out, "overload.json")
fg.check(os.path.exists(jpath), "raw results written")
fg.check(os.path.getsize(os.path.join(out, "overload.png")) > 1000
         if os.path.exists(os.path.join(out, "overload.png")) else False, "PNG written")
if os.path.exists(jpath):
    res = json.load(open(jpath))
    fg.eq(sorted(res["cases"]), ["cpu", "dep", "mixed"], "cases in the JSON")
    for name, c in res["cases"].items():
        fg.check(c["capacity_rps"] > 0, "%s: a capacity was measured" % name)
        runs = c["runs"] + c["steps"]
        fg.eq(sorted((r["label"], r["mode"]) for r in c["runs"]),
              [("2x", "auto"), ("2x", "off")], "%s: both modes side by side" % name)
        fg.eq(len(c["steps"]), 2, "%s: a step run per mode" % name)
        for r in runs:
            n = sum(v for k, v in r["answers"].items() if k != "poll") + sum(r["pages"].values())
            fg.check(r["arrivals"] > 0, "%s %s %s: the crowd came" % (name, r["label"], r["mode"]))
            fg.eq(n, r["arrivals"], "%s %s %s: every request has an outcome" % (
                name, r["label"], r["mode"]))
            fg.check(r["healthz_ms"]["n"] > 0, "%s %s: /healthz was probed" % (name, r["label"]))
        if name == "mixed":
            pages = sum(sum(r["pages"].values()) for r in runs)
            fg.check(pages > 0.5 * sum(r["arrivals"] for r in runs),
                     "mixed: most of the crowd viewed pages")
fg.check(not os.path.exists(stale), "a killed run's empty cgroup was removed at the start")
if os.path.exists(stale):
    os.rmdir(stale)
mine = "flashgate-bench-%d-" % proc.pid
fg.eq(sorted(os.path.join(r, d) for r in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct")
             if os.path.isdir(r) for d in os.listdir(r) if d.startswith(mine)), [],
      "no cgroup left behind (cpu and cpuacct)")
fg.finish()
