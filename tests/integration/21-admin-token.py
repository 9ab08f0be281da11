"""The admin token stays out of sight: given by --admin-token-file, by the
--admin-token flag or by FLASHGATE_ADMIN_TOKEN, it appears in none of
/proc/PID/cmdline, /proc/PID/environ, the log, the config dump (admin API and
--check-config), nor in any memory a core dump would hold (every readable
mapping without MADV_DONTDUMP, read through /proc/PID/mem after admin requests
carried the token), while the admin API still requires it. A control string
(a sale id) is found by the same scan, so the scan can fail. A SIGHUP reload
keeps the token and needs no restart for it. A token file readable by others,
or both a token and a token file, refuse to start. So does a token shorter
than 16 characters, however it is given, and a SIGHUP reload that finds one in
the config file is refused and keeps the token in use."""
import os
import re
import secrets
import signal
import subprocess
import time
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, check, die_with_parent, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")


def proc_bytes(pid, what):
    with open("/proc/%d/%s" % (pid, what), "rb") as f:
        return f.read()


def sanitizer_environ_copy(data, i, needle, sanitized):
    """True for the one copy of the environment that is not the gateway's: a
    sanitizer runtime (ASan, TSan) reads /proc/self/environ into an anonymous
    buffer of its own before main, to look up its options. Recognised as an
    environment entry "FLASHGATE_..._TOKEN=<needle>" in a block that also holds
    this test's FLASHGATE_BIN=, in a process that maps the sanitizer runtime."""
    if not sanitized:
        return False
    head = data[max(0, i - 64):i]
    return (re.search(rb"\x00FLASHGATE_(SERVER_)?ADMIN_TOKEN=$", head) is not None
            and b"\x00FLASHGATE_BIN=" in data[max(0, i - 65536):i + 65536])


def dumpable_memory_has(pid, needles):
    """Which needles occur in the process's readable mappings that a core dump
    would include (VmFlags without dd), and how many secret (dd) mappings exist."""
    maps, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4), ""]
                maps.append(cur)
            elif line.startswith("VmFlags:") and cur:
                cur[4] = line.split(":", 1)[1].split()
    found, dd = set(), 0
    sanitized = any(re.search(r"lib[at]san", m[3]) for m in maps)
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for lo, hi, perms, name, flags in maps:
            if "dd" in flags:
                dd += 1
                continue
            if "r" not in perms or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue
            for n in needles:
                i = data.find(n)
                while i >= 0 and sanitizer_environ_copy(data, i, n, sanitized and not name):
                    i = data.find(n, i + 1)
                if i >= 0:
                    found.add(n)
    return found, dd, sanitized


def no_token_visible(g, tok, what, freed_wiped=False):
    pid = g.proc.pid
    t = tok.encode()
    check(t not in proc_bytes(pid, "cmdline"), "%s: not in /proc/PID/cmdline" % what)
    check(t not in proc_bytes(pid, "environ"), "%s: not in /proc/PID/environ" % what)
    eq(g.admin("GET", "/admin/v1/stats", token=None).status, 401, "%s: no token, 401" % what)
    eq(g.admin("GET", "/admin/v1/stats", token=tok[:-1] + "x").status, 401,
       "%s: a wrong token, 401" % what)
    # the whole token, not a prefix of it, nor a token that starts with it
    eq(g.admin("GET", "/admin/v1/stats", token=tok + "x").status, 401,
       "%s: the token with a character more, 401" % what)
    eq(g.admin("GET", "/admin/v1/stats", token=tok[:-1]).status, 401,
       "%s: the token less its last character, 401" % what)
    # the token's requests last: nothing after them overwrites the memory they used
    for path in ("/admin/v1/stats", "/admin/v1/sales"):
        check(t not in g.admin("GET", path, token=tok).raw, "%s: not in %s" % (what, path))
    r = g.admin("GET", "/admin/v1/config", token=tok)
    eq(r.status, 200, "%s: config with the token" % what)
    check(t not in r.raw, "%s: not in the config dump" % what)
    canary = b"canary-sale-" + t[:6]
    # The tail too: malloc writes its free-list pointers over the first 16
    # bytes of a freed block, so an unwiped copy keeps only its end.
    tail = t[-24:]
    found, dd, sanitized = dumpable_memory_has(pid, [t, tail, canary])
    check(canary in found, "%s: the memory scan finds a control string (the sale id)" % what)
    check(t not in found, "%s: not in any memory a core dump would hold" % what)
    # Where the token came from a file (the token file, the config file) every
    # buffer that held it is wiped before it is freed, so not even a freed
    # copy's tail may remain. A flag or an environment value passes through
    # argv/env parsing too, and is the documented second choice. Under ASan
    # every free()d block waits in its quarantine untouched (that is how it
    # finds use-after-free), so only a build without a sanitizer can judge.
    if freed_wiped and not sanitized:
        check(tail not in found, "%s: not even its tail (a freed, unwiped copy)" % what)
    check(dd >= 1, "%s: the token's page is marked MADV_DONTDUMP (%d such mappings)" % (what, dd))
    with open(g.log_path, "rb") as f:
        check(t not in f.read(), "%s: not in the log" % what)


def refused(cmd, env):
    """Runs a flashgate that should refuse to start: (exit code, output). One
    that starts instead is stopped after 20 s, with exit code None."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         preexec_fn=die_with_parent)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out.decode(errors="replace")
    return p.returncode, out.decode(errors="replace")


def run(g, tok, what, freed_wiped=False, first=None):
    """Starts g, calls first(g) if given, then checks the token's handling."""
    try:
        g.start()
        if first:
            first(g)
        r = g.admin("PUT", "/admin/v1/sales/canary-sale-" + tok[:6], token=tok,
                    body={"stock": 10, "per_user_limit": 1})
        eq(r.status, 201, "%s: the admin API works with the token" % what)
        no_token_visible(g, tok, what, freed_wiped)
        # SIGHUP: argv and the environment were wiped; the reload must not see a change.
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and "configuration reloaded" not in g.logs():
            time.sleep(0.05)
        log = g.logs()
        check("restart_needed=0" in log, "%s: a reload needs no restart for the token: %s"
              % (what, log[-400:]))
        eq(g.admin("GET", "/admin/v1/stats", token=tok).status, 200,
           "%s: after the reload the token still works" % what)
        with open(g.log_path, "rb") as f:
            check(tok.encode() not in f.read(), "%s: not in the log after the reload" % what)
    finally:
        g.cleanup()


# 1. --admin-token-file (mode 0400)
tok = secrets.token_hex(24)
g = Gateway(token=None)
os.makedirs(g.tmp, exist_ok=True)
path = os.path.join(g.tmp, "admin.token")
with open(path, "w") as f:
    f.write(tok + "\n")
os.chmod(path, 0o400)
g.args += ["--admin-token-file", path]
run(g, tok, "token file", freed_wiped=True)

# 2. --admin-token on the command line; the environment's token (lower
# precedence, unused) is wiped too
tok = secrets.token_hex(24)
other = secrets.token_hex(24)


def env_wiped(g):
    env = proc_bytes(g.proc.pid, "environ")
    check(other.encode() not in env, "flag: the unused environment token is wiped too")


run(Gateway(token=tok, extra_env={"FLASHGATE_SERVER_ADMIN_TOKEN": other}), tok, "flag",
    first=env_wiped)

# 3. FLASHGATE_ADMIN_TOKEN
tok = secrets.token_hex(24)
run(Gateway(token=None, extra_env={"FLASHGATE_ADMIN_TOKEN": tok}), tok, "environment")

# 4. server.admin_token in the JSON config file: the file's text and jansson's
# tree held it (the loader wipes both before freeing them)
tok = secrets.token_hex(24)
g = Gateway(token=None)
os.makedirs(g.tmp, exist_ok=True)
path = os.path.join(g.tmp, "flashgate.conf")
with open(path, "w") as f:
    f.write('{"server": {"admin_token": "%s"}}\n' % tok)
os.chmod(path, 0o600)
g.args += ["--config", path]
run(g, tok, "config file", freed_wiped=True)

# 5. refusals and --check-config
tok = secrets.token_hex(24)
g = Gateway(token=None)
try:
    os.makedirs(g.tmp, exist_ok=True)
    path = os.path.join(g.tmp, "admin.token")
    with open(path, "w") as f:
        f.write(tok + "\n")
    os.chmod(path, 0o644)
    g.args += ["--admin-token-file", path]
    g.start(wait=False)
    rc = g.proc.wait(20)
    eq(rc, 1, "a token file readable by others: no start")
    check("without access for others" in g.logs(), "... and the log says why: %s" % g.logs()[-300:])
    check(tok not in g.logs(), "... without the token")
    base = [os.path.join(BIN, "flashgate"), "--data-dir", os.path.join(g.tmp, "d")]
    p = subprocess.run(base + ["--admin-token", tok, "--admin-token-file", path],
                       capture_output=True, text=True, timeout=20)
    eq(p.returncode, 2, "token and token file: invalid configuration")
    check("not both" in p.stderr and tok not in p.stderr + p.stdout,
          "... said without the token: %s" % p.stderr)
    p = subprocess.run(base + ["--admin-token", tok, "--check-config"], capture_output=True,
                       text=True, timeout=20)
    eq(p.returncode, 0, "--check-config")
    check(tok not in p.stdout + p.stderr and "<set>" in p.stdout,
          "--check-config shows <set>, not the token")
finally:
    g.cleanup()
# 6. a short token: no start, whichever way it comes; the error names the key and
# the rule, not the token. A reload that finds one in the config file is refused.
short = "Sh0rtTok" + secrets.token_hex(3)  # 14 characters
g = Gateway(token=None)
try:
    os.makedirs(g.tmp, exist_ok=True)
    base = [os.path.join(BIN, "flashgate"), "--data-dir", os.path.join(g.tmp, "d"),
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    conf = os.path.join(g.tmp, "short.conf")
    with open(conf, "w") as f:
        f.write('{"server": {"admin_token": "%s"}}\n' % short)
    tfile = os.path.join(g.tmp, "short.token")
    with open(tfile, "w") as f:
        f.write(short + "\n")
    os.chmod(tfile, 0o400)
    env = dict(os.environ)
    env.pop("FLASHGATE_ADMIN_TOKEN", None)
    env.pop("FLASHGATE_SERVER_ADMIN_TOKEN", None)
    cases = [("flag", ["--admin-token", short], {}, "(flag --admin-token)"),
             ("flag =", ["--admin-token=" + short], {}, "(flag --admin-token)"),
             ("--set", ["--set", "server.admin_token=" + short], {}, "(flag --set)"),
             ("environment", [], {"FLASHGATE_ADMIN_TOKEN": short}, "(env FLASHGATE_ADMIN_TOKEN)"),
             ("environment, long name", [], {"FLASHGATE_SERVER_ADMIN_TOKEN": short},
              "(env FLASHGATE_SERVER_ADMIN_TOKEN)"),
             ("config file", ["--config", conf], {}, "(file %s)" % conf)]
    for what, args, extra, where in cases:
        e = dict(env)
        e.update(extra)
        rc, out = refused(base + args, e)
        eq(rc, 2, "a short token by %s: no start" % what)
        check("config: server.admin_token=<set> %s: must be at least 16 characters" % where
              in out, "... and it says which option and the rule: %s" % out[-300:])
        check(short not in out, "... without the token")
    rc, out = refused(base + ["--admin-token-file", tfile], env)
    eq(rc, 1, "a short token in server.admin_token_file: no start")
    check("server.admin_token_file %s: must hold one token of 16..255 characters" % tfile
          in out and short not in out, "... and it says why: %s" % out[-300:])
    tsfile = os.path.join(g.tmp, "admin.tokens")
    with open(tsfile, "w") as f:
        f.write("viewer:read:%s\n" % short)
    os.chmod(tsfile, 0o600)
    rc, out = refused(base + ["--admin-token", tok, "--admin-tokens-file", tsfile], env)
    eq(rc, 1, "a short token in server.admin_tokens_file: no start")
    check("line 1: token must be 16..256 characters" in out and short not in out,
          "... and it says why: %s" % out[-300:])
finally:
    g.cleanup()

tok = secrets.token_hex(24)
g = Gateway(token=None)
try:
    os.makedirs(g.tmp, exist_ok=True)
    conf = os.path.join(g.tmp, "flashgate.conf")
    with open(conf, "w") as f:
        f.write('{"server": {"admin_token": "%s"}}\n' % tok)
    os.chmod(conf, 0o600)
    g.args += ["--config", conf]
    g.start()
    eq(g.admin("GET", "/admin/v1/stats", token=tok).status, 200, "config file token works")
    with open(conf, "w") as f:
        f.write('{"server": {"admin_token": "%s"}}\n' % short)
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and not re.search(r"reload refused|configuration reloaded",
                                                   g.logs()):
        time.sleep(0.05)
    log = g.logs()
    check("reload refused, nothing changed" in log and "configuration reloaded" not in log,
          "a reload with a short token in the config file is refused: %s" % log[-600:])
    check("server.admin_token=<set> (file %s): must be at least 16 characters" % conf in log,
          "... and the log says which option and the rule: %s" % log[-600:])
    check(short not in log, "... without the token")
    eq(g.admin("GET", "/admin/v1/stats", token=tok).status, 200,
       "after the refused reload the old token still works")
    eq(g.admin("GET", "/admin/v1/stats", token=short).status, 401, "the short one does not")
    check(g.alive(), "the gateway still runs")
finally:
    g.cleanup()
finish()
