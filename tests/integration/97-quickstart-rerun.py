"""`make run` twice on one data dir: both audits are true (PASS), and a stop,
after the rehearsal or by Ctrl-C, leaves settlement's log clean.

deploy/quickstart.sh keeps ./data between runs (spool, order table, orders.db)
and the scenario's crowd is fixed by its seed. Each run rehearses a sale of its
own (rehearsal-<scenario>-<start time>); under one fixed sale id, the second
run's buys carried the first run's Idempotency-Keys, were answered with the
first run's orders, and the audit read them as lost ("kafka: 202 ids missing").

Buyers are verified as on the defaults (identity.mode=jwt): flashgate-load mints
every account's token from the data dir's key.

The quickstart runs here on the smoke scenario (a few seconds) instead of the
standard one (about 30 s): the same script, binaries and audit. The second run
takes the first one's ports a second after it stopped, as a second `make run`
does, while the connections the first one closed are in TIME_WAIT.

Ctrl-C is a SIGINT to the terminal's foreground process group: the test sends
one to the quickstart's group. It must stop flashgate-settle before flashgate
(which hosts the embedded broker settle consumes from) and exit 0.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, check, eq, finish, free_port, need_binary  # noqa: E402

for b in ("flashgate", "flashgate-settle", "flashgate-load"):
    need_binary(b)
if not shutil.which("setsid"):
    print("FAIL: setsid (util-linux) not found", file=sys.stderr)
    sys.exit(1)

tmp = tempfile.mkdtemp(prefix="fg-quickstart-")
data = os.path.join(tmp, "data")


PORTS = (free_port(), free_port())  # runs 1 and 2


def env_for(exit_after, ports=None):
    port, admin = ports or (free_port(), free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    env.update(FLASHGATE_BIN=BIN, FLASHGATE_DATA_DIR=data, QUICKSTART_HOST="127.0.0.1",
               QUICKSTART_PORT=str(port), QUICKSTART_ADMIN_PORT=str(admin),
               QUICKSTART_SCENARIO=os.path.join(SRC, "loadtest", "scenarios", "smoke.json"),
               QUICKSTART_RESULTS=os.path.join(tmp, "results"),
               QUICKSTART_EXIT="1" if exit_after else "0")
    return env


def settle_log_clean(what):
    """librdkafka's lines (%N|...) in settle.log: a broker that went away under
    settlement (e.g. "incorrect security.protocol configuration?")."""
    log = open(os.path.join(data, "logs", "settle.log")).read()
    bad = [l for l in log.splitlines() if re.match(r"%\d\|", l) or "level=warn" in l
           or "level=error" in l]
    eq(bad[:3], [], what + ": settle.log has no broker errors or warnings")
    check("msg=stopped" in log, what + ": settle logged its stop")


def no_servers_left(what):
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    eq([l for l in ps.splitlines() if data in l], [], what + ": no server left running")


sales = []
try:
    for n in (1, 2):
        p = subprocess.run(["sh", os.path.join(SRC, "deploy", "quickstart.sh")],
                           env=env_for(True, PORTS), capture_output=True, text=True, timeout=180)
        out = p.stdout + p.stderr
        eq(p.returncode, 0, "run %d: quickstart exits 0: %s" % (n, out[-1500:]))
        check("audit: PASS" in out and "quickstart: audit PASS" in out,
              "run %d: audit PASS" % n)
        check("202 ids missing: 0" in out, "run %d: no accepted order missing" % n)
        check(re.search(r"minted 2000 tokens with \S*/data/identity\.key", out) is not None,
              "run %d: the crowd buys with tokens of the data dir's key (identity.mode=jwt)" % n)
        m = re.search(r"as (rehearsal-smoke-\S+)", out)
        check(m is not None, "run %d: names its sale" % n)
        sales.append(m.group(1) if m else None)
        settle_log_clean("run %d" % n)
        no_servers_left("run %d" % n)
        if n == 1:
            time.sleep(1.1)  # the sale id has a one-second resolution
    check(sales[0] != sales[1], "each run rehearses its own sale: %r" % sales)

    # Third run, left serving, then Ctrl-C as a terminal sends it.
    p = subprocess.Popen(["sh", os.path.join(SRC, "deploy", "quickstart.sh")], env=env_for(False),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    lines = []
    deadline = time.time() + 180
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            break
    check(any("audit: PASS" in l for l in lines), "run 3: audit PASS")
    os.killpg(p.pid, signal.SIGINT)
    try:
        rest, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        rest, _ = p.communicate()
    eq(p.returncode, 0, "Ctrl-C: the quickstart exits 0: %s" % rest[-800:])
    check("stopping flashgate-settle, then flashgate" in rest, "Ctrl-C: says what it stops")
    settle_log_clean("Ctrl-C")
    no_servers_left("Ctrl-C")
finally:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for l in ps.splitlines():
        if data in l and "flashgate" in l:
            try:
                os.kill(int(l.split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
    shutil.rmtree(tmp, ignore_errors=True)
finish()
