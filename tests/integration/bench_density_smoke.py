"""bench/density.py keeps working: one round of 1 s runs at 1,000 arrivals/s and at
saturation against nginx and flashgate must end cleanly and print the table, with
each server giving the answer it is there to give (nginx and flashgate's sold-out
sale 410, the accepted order 202). It judges no figure: what an answer costs is the
benchmark's to say (bench/README.md), never a test's. Dev stage only.
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fg  # noqa: E402

env = dict(os.environ, FLASHGATE_BIN=fg.BIN)
p = subprocess.run([sys.executable, os.path.join(fg.SRC, "bench", "density.py"), "1000", "1", "1"],
                   capture_output=True, text=True, timeout=120, env=env,
                   preexec_fn=fg.die_with_parent)
print(p.stdout)
if p.returncode != 0:
    print(p.stderr[-4000:], file=sys.stderr)
fg.eq(p.returncode, 0, "bench/density.py exit status")
out = p.stdout
fg.check(re.search(r"^CPU: .+; server on CPU 1, generator on CPU 0", out, re.M) is not None,
         "the CPU model and the pinning are printed")
for name, code in (("nginx 410", "410"), ("flashgate 410", "410"), ("flashgate 202", "202")):
    m = re.search(r"^  round 1 %s\s+1000\s+(\d+) answers .*\b%s=(\d+)" % (name, code), out, re.M)
    fg.check(m is not None and int(m.group(2)) > 0,
             "%s: the open crowd's run got %s answers" % (name, code))
    m = re.search(r"^  round 1 %s\s+sat\s+(\d+) answers .*\b%s=(\d+)" % (name, code), out, re.M)
    fg.check(m is not None and int(m.group(2)) > 0, "%s: the wrk run got %s answers" % (name, code))
    m = re.search(r"^  %s\s+[\d.]+ \([\d.]+x\)\s+[\d.]+ \(1\.00x\)$" % name, out, re.M)
    fg.check(m is not None, "%s: the table's row (1000/s and sat)" % name)
fg.finish()
