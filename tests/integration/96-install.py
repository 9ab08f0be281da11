"""`cmake --install` (what `make install` runs) into a DESTDIR: every file the
systemd units and the docs point at is there.

- the four programs in <prefix>/bin, and each unit's ExecStart binary;
- each unit's Documentation= file (share/doc/flashgate/README.md,
  .../docs/settlement.md), and every relative link of the installed README to
  a file of the repository that is installed beside it (docs/*.md);
- the units in lib/systemd/system (systemd's /usr/local/lib/systemd/system),
  the sample configs and environment examples the units' comments install,
  the admin-cgroup drop-in the runbook names;
- the installed flashgate answers --version and --check-config, and every
  installed program's --help fits 100 columns.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, check, eq, finish, need_binary  # noqa: E402

for b in ("flashgate", "flashgate-settle", "flashgate-load", "flashgate-spool"):
    need_binary(b)
PREFIX = "/usr/local"
tmp = tempfile.mkdtemp(prefix="fg-install-")
try:
    dest = os.path.join(tmp, "root")
    env = dict(os.environ, DESTDIR=dest)
    out = subprocess.run(["cmake", "--install", BIN, "--prefix", PREFIX], env=env,
                         capture_output=True, text=True, timeout=120)
    eq(out.returncode, 0, "cmake --install: " + out.stderr[-800:])

    def there(path):
        return os.path.exists(dest + path)

    for b in ("flashgate", "flashgate-settle", "flashgate-load", "flashgate-spool"):
        p = PREFIX + "/bin/" + b
        check(there(p) and os.access(dest + p, os.X_OK), "installed: " + p)
    check(not any(n.startswith("flashgate-bench") for n in os.listdir(dest + PREFIX + "/bin")),
          "benchmark helpers are not installed")
    units = PREFIX + "/lib/systemd/system/"
    for u in ("flashgate.service", "flashgate-settle.service"):
        check(there(units + u), "installed: " + units + u)
        text = open(os.path.join(SRC, "deploy", "systemd", u)).read()
        for doc in re.findall(r"^Documentation=file:(\S+)", text, re.M):
            check(there(doc), "%s: Documentation=%s is installed" % (u, doc))
        exe = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
        check(there(exe), "%s: ExecStart binary %s is installed" % (u, exe))
        for sample in re.findall(r"install -m 06[04]0 (?:-g \S+ )?deploy/(?:systemd/)?(\S+) ", text):
            p = PREFIX + "/share/doc/flashgate/examples/" + sample
            check(there(p), "%s: the sample %s its comments install is installed (%s)" % (u, sample, p))
    doc = PREFIX + "/share/doc/flashgate/"
    readme = open(dest + doc + "README.md").read()
    links = sorted(set(l.split("#")[0] for l in re.findall(r"\]\(((?:docs)/[^)\s]+)\)", readme)))
    check(len(links) >= 5, "README links docs (%d)" % len(links))
    for l in links:
        check(there(doc + l), "the installed README's link %s resolves" % l)
    check(there(doc + "examples/flashgate.service.d/admin-cgroup.conf"), "the drop-in is installed")
    check(there(PREFIX + "/share/flashgate/loadtest/scenarios/standard.json"),
          "flashgate-load's scenarios are installed")
    fg = dest + PREFIX + "/bin/flashgate"
    out = subprocess.run([fg, "--version"], capture_output=True, text=True, timeout=30)
    eq(out.returncode, 0, "the installed flashgate runs: " + out.stderr[-300:])
    out = subprocess.run([fg, "--check-config", "--data-dir", os.path.join(tmp, "d")],
                         capture_output=True, text=True, timeout=30)
    eq(out.returncode, 0, "the installed flashgate --check-config: " + out.stderr[-300:])
    # --help of every installed program fits 100 columns (the options' lines are
    # wrapped by the shared printer, common/cm_config.c)
    for b in ("flashgate", "flashgate-settle", "flashgate-load", "flashgate-spool"):
        out = subprocess.run([dest + PREFIX + "/bin/" + b, "--help"], capture_output=True,
                             text=True, timeout=30)
        long_lines = [l for l in (out.stdout + out.stderr).splitlines() if len(l) >= 100]
        eq(long_lines[:2], [], b + " --help: every line under 100 characters")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
finish()
