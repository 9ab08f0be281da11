"""The command line: --help, --version, --check-config, every error at once
with exit code 2, and the source order defaults < file < env < flags."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
FG = os.path.join(BIN, "flashgate")


def run(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    e.update(env or {})
    return subprocess.run([FG] + list(args), capture_output=True, text=True, env=e, timeout=30)


r = run("--help")
eq(r.returncode, 0, "--help exit")
for flag in ("--listen", "--admin-listen", "--admin-token", "--inventory", "--data-dir",
             "--threads", "--check-config", "--durability", "--kafka-brokers", "--version"):
    check(flag in r.stdout, "--help lists " + flag)
r = run("--version")
check(r.returncode == 0 and r.stdout.startswith("flashgate "), "--version")
# ... with the commit it was built from (git describe --always --dirty at build time)
m = re.match(r"^flashgate \S+ \(commit ([0-9A-Za-z._-]+)\)$", r.stdout.strip())
check(m is not None, "--version names the commit: %r" % r.stdout)
if m and m.group(1) != "unknown":
    try:
        known = subprocess.run(["git", "-C", SRC, "cat-file", "-e",
                                m.group(1).replace("-dirty", "").split("-g")[-1] + "^{commit}"],
                               capture_output=True, timeout=30).returncode == 0
    except OSError:
        known = True  # no git here: nothing to compare with
    check(known, "--version's commit %s is one of the tree's" % m.group(1))
# every --help line fits 100 columns (they ran to 461 characters)
long_lines = [l for l in run("--help").stdout.splitlines() if len(l) >= 100]
check(not long_lines, "--help lines under 100 characters: %r" % long_lines[:3])

r = run("--check-config")
eq(r.returncode, 0, "--check-config defaults")
check("server.listen = 0.0.0.0:8080" in r.stdout, "default listen shown")
check("127.0.0.1:9090" in r.stdout, "default admin listen shown")

tmp = tempfile.mkdtemp()
cfg = os.path.join(tmp, "fg.json")
with open(cfg, "w") as f:
    f.write("// comment line\n# another\n" + json.dumps(
        {"server": {"listen": "127.0.0.1:1111", "threads": 3}, "limits.user_rps": 7}))
r = run("--config", cfg, "--check-config", env={"FLASHGATE_LISTEN": "127.0.0.1:2222"})
eq(r.returncode, 0, "file + env")
lines = {l.split(" = ")[0]: l for l in r.stdout.splitlines() if " = " in l}
check("127.0.0.1:2222" in lines.get("server.listen", "") and "env" in lines["server.listen"],
      "env beats file: %r" % lines.get("server.listen"))
check(" 3" in lines.get("server.threads", "") and "file" in lines["server.threads"],
      "file beats default: %r" % lines.get("server.threads"))
check("7" in lines.get("limits.user_rps", ""), "flat key in file")
r = run("--config", cfg, "--listen", "127.0.0.1:3333", "--check-config",
        env={"FLASHGATE_LISTEN": "127.0.0.1:2222"})
check("127.0.0.1:3333" in r.stdout and "flag" in [l for l in r.stdout.splitlines() if l.startswith("server.listen")][0],
      "flag beats env")

# every invalid value at once, each with key, value, source and rule; exit 2
r = run("--threads", "x", "--durability", "sometimes", "--listen", "nope",
        env={"FLASHGATE_LIMITS_USER_RPS": "-1"})
eq(r.returncode, 2, "invalid config exits 2")
for key, src in (("server.threads", "flag"), ("spool.durability", "flag"),
                 ("server.listen", "flag"), ("limits.user_rps", "env")):
    check(any(key in l and src in l for l in r.stderr.splitlines()),
          "error names %s from %s: %s" % (key, src, r.stderr))
r = run("--no-such-flag")
eq(r.returncode, 2, "unknown flag exits 2")
check("no-such-flag" in r.stderr, "unknown flag named")
# a stray word is never ignored: "--overload-adaptive false" is the flag's value,
# any other leftover argument is a usage error naming it (it once started anyway)
r = run("--overload-adaptive", "false", "--check-config")
check(r.returncode == 0 and "overload.adaptive = false  # flag" in r.stdout,
      "BOOL flag takes a separate false: %r" % r.stdout[-300:])
check("--FLAG false" in run("--help").stdout, "--help says how a BOOL flag takes a value")
for stray, args in (("maybe", ["--overload-adaptive", "maybe"]), ("serve", ["serve"]),
                    ("extra", ["--threads", "2", "extra", "--check-config"])):
    r = run(*args)
    eq(r.returncode, 2, "flashgate %r exits 2" % args)
    check('"%s" (argument): unexpected argument' % stray in r.stderr,
          "stray argument named: %r" % r.stderr[-300:])
r = run("--inventory", "mysql://x")
eq(r.returncode, 2, "bad inventory URL")
with open(cfg, "w") as f:
    f.write('{"server": {"listne": "x"}}')
r = run("--config", cfg)
check(r.returncode == 2 and "listne" in r.stderr, "unknown file key named")

# the sample config loads as it is
r = run("--config", os.path.join(SRC, "deploy", "flashgate.conf.example"), "--check-config")
eq(r.returncode, 0, "sample config is valid: " + r.stderr)

# the README documents every key and flag that --help prints
readme = open(os.path.join(SRC, "README.md")).read()
r = run("--check-config")
for line in r.stdout.splitlines():
    if " = " in line:
        key = line.split(" = ")[0].strip()
        check("`%s`" % key in readme, "README documents " + key)

# --check-config runs the start's own checks (short of binding): what it passes
# starts, what the start refuses it refuses too (exit 2, the same reason), and it
# changes nothing on disk
def check_and_start(what, args, reason):
    r = run(*(args + ["--check-config"]))
    check(r.returncode == 2 and reason in r.stderr,
          "--check-config refuses %s: %d %r" % (what, r.returncode, r.stderr[-300:]))
    try:
        r = run(*(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"] + args))
    except subprocess.TimeoutExpired:
        check(False, "the start refuses %s too: it started" % what)
        return
    check(r.returncode == 1 and reason in r.stderr + r.stdout,
          "the start refuses %s too: %d %r" % (what, r.returncode, (r.stderr + r.stdout)[-300:]))


tokf = os.path.join(tmp, "admin.tok")
with open(tokf, "w") as f:
    f.write("t" * 40 + "\n")
os.chmod(tokf, 0o644)
dd = os.path.join(tmp, "cc-data")
check_and_start("a token file readable by others",
                ["--admin-token-file", tokf, "--data-dir", dd], "server.admin_token_file")
check(not os.path.exists(dd), "--check-config created no data dir")
os.chmod(tokf, 0o600)
r = run("--admin-token-file", tokf, "--data-dir", dd, "--check-config")
check(r.returncode == 0, "a 0600 token file passes: %r" % r.stderr[-300:])
afile = os.path.join(tmp, "a-file")
with open(afile, "w") as f:
    f.write("x")
check_and_start("a data dir that cannot be created (under a file)",
                ["--data-dir", os.path.join(afile, "data")], "cannot create data dir")
named = os.path.join(tmp, "admin.tokens")
with open(named, "w") as f:
    f.write("ops:write:" + "n" * 40 + "\n")
os.chmod(named, 0o640)
check_and_start("a named tokens file readable by the group",
                ["--admin-tokens-file", named, "--data-dir", dd], "admin tokens file")
os.makedirs(dd)
with open(os.path.join(dd, "status.key"), "w") as f:
    f.write("0" * 64 + "\n")
os.chmod(os.path.join(dd, "status.key"), 0o644)
check_and_start("a status.key readable by others", ["--data-dir", dd], "status.key")
os.chmod(os.path.join(dd, "status.key"), 0o600)
pk = os.path.join(tmp, "uprio.key")
with open(pk, "w") as f:
    f.write("1" * 64 + "\n")
os.chmod(pk, 0o644)
check_and_start("a user-priority key file readable by others",
                ["--data-dir", dd, "--overload-priority-key-file", pk], "overload.priority_key_file")
os.chmod(pk, 0o600)
check_and_start("a user-priority key file that is not 64 hex digits",
                ["--data-dir", dd, "--overload-priority-key-file", tokf],
                "overload.priority_key_file")
check_and_start("a missing user-priority key file",
                ["--data-dir", dd, "--overload-priority-key-file", pk + ".none"],
                "does not exist")
check_and_start("a public admin address without TLS",
                ["--data-dir", dd, "--admin-token-file", tokf, "--admin-listen", "8.8.8.8:9"],
                "plain HTTP")
check_and_start("a TLS certificate without a key file",
                ["--data-dir", dd, "--admin-tls-cert", afile, "--admin-tls-key",
                 os.path.join(tmp, "no-such.key")], "server.admin_tls_cert")

# an admin port in use is a clean start-up error (exit 1, a reason), not a crash
g = Gateway().start()
try:
    r = subprocess.run([FG, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:%d" % g.admin_port,
                        "--data-dir", os.path.join(tmp, "d2"), "--admin-token", "x" * 40],
                       capture_output=True, text=True, timeout=30)
    eq(r.returncode, 1, "admin port in use exits 1")
    check("cannot listen" in r.stderr + r.stdout, "reason given: %r" % (r.stderr[-300:],))
finally:
    g.cleanup()

# flashgate-spool reads its options through the same engine: --help lists them with
# their env names, unknown flags and bad values are usage errors (2), env works
SP = os.path.join(BIN, "flashgate-spool")
clean = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
r = subprocess.run([SP, "--help"], capture_output=True, text=True, env=clean, timeout=30)
eq(r.returncode, 0, "flashgate-spool --help")
for text in ("--data-dir", "--from-start", "FLASHGATE_DATA_DIR", "--config", "dump", "stats"):
    check(text in r.stdout, "flashgate-spool --help shows " + text)
for args in (["dump", "--nope"], ["dump", "--from-start=maybe"], ["frob"], [],
             ["stats", "--from-start"], ["dump", "extra"]):
    r = subprocess.run([SP] + args, capture_output=True, text=True, env=clean, timeout=30)
    eq(r.returncode, 2, "flashgate-spool %r is a usage error: %r" % (args, r.stderr[-200:]))
d = os.path.join(tmp, "no-such-dir")
r = subprocess.run([SP, "stats"], capture_output=True, text=True,
                   env=dict(clean, FLASHGATE_DATA_DIR=d), timeout=30)
check(r.returncode == 1 and d in r.stderr, "FLASHGATE_DATA_DIR reaches flashgate-spool: %r"
      % r.stderr[-200:])

# flashgate-load too: one option table on the engine (it parsed argv with getopt)
LD = os.path.join(BIN, "flashgate-load")
r = subprocess.run([LD, "--help"], capture_output=True, text=True, env=clean, timeout=30)
eq(r.returncode, 0, "flashgate-load --help")
for text in ("--scenario", "--target", "--duration", "--connection-mode", "FLASHGATE_LOAD_SEED"):
    check(text in r.stdout, "flashgate-load --help shows " + text)
for args in ([], ["--scenario", "x", "--nope"], ["--scenario", "x", "--connection-mode", "bad"],
             ["--scenario", "x", "--seed", "-1"], ["--scenario", "x", "extra"]):
    r = subprocess.run([LD] + args, capture_output=True, text=True, env=clean, timeout=30)
    eq(r.returncode, 2, "flashgate-load %r is a usage error: %r" % (args, r.stderr[-200:]))
finish()
