"""The systemd units in deploy/systemd/, checked as far as this machine can:
there is no systemd as PID 1 here (a container), so the sandbox itself is not
started. What is checked:

- `systemd-analyze verify` accepts both units with no warning (ExecStart
  rewritten to the built binaries, which verify requires to exist), and
  flashgate.service with its admin-cgroup drop-in
  (flashgate.service.d/admin-cgroup.conf: /sys/fs/cgroup writable, the cpu
  controller delegated, server.admin_cgroup below the service's cgroup);
- `systemd-analyze security --offline=yes` rates each unit's exposure at 2.0
  or better (0 = locked down, 10 = unprotected);
- the promised directives are there: Type=notify, NoNewPrivileges,
  ProtectSystem=strict with the data dir in ReadWritePaths and on the command
  line, PrivateTmp, an empty CapabilityBoundingSet, Restart=on-failure,
  EnvironmentFile, ExecReload sending SIGHUP (flashgate), LimitNOFILE sized for
  server.max_connections, TimeoutStopSec above the drain bound (flashgate),
  WatchdogSec above server.drain_timeout and server.liveness_timeout (flashgate) and
  above settle.stop_grace + the exit's own waits (flashgate-settle);
- each ExecStart's flags, with its binary's sample config (deploy/*.example,
  which the comments install where --config reads it), and each example
  environment file's variables are accepted by the binary (--check-config),
  every variable reaching a key;
- flashgate-settle sends READY=1 to NOTIFY_SOCKET, and STOPPING=1 when a
  SIGTERM starts its drain (flashgate's sd_notify is
  covered by integration.72-signals).
"""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, Gateway, check, eq, finish, need_binary  # noqa: E402
from fgq import Settle  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
ANALYZE = shutil.which("systemd-analyze")
if not ANALYZE:
    print("FAIL: systemd-analyze not installed (package systemd)", file=sys.stderr)
    sys.exit(1)

UNITS = os.path.join(SRC, "deploy", "systemd")
# Each unit's sample config (generated from its binary's option table).
SAMPLES = {"flashgate.service": "flashgate.conf.example",
           "flashgate-settle.service": "flashgate-settle.conf.example"}
tmp = tempfile.mkdtemp(prefix="fg-systemd-")


def parse(text):
    d = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        d.setdefault(k, []).append(v)
    return d


def one(d, k):
    return d.get(k, [None])[-1]


def seconds(v):
    """A systemd time span or a --check-config duration, in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|min|h)?", v or "")
    if not m:
        return None
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": n * 60, "min": n * 60, "h": n * 3600, None: n}[m.group(2)]


# What flashgate-settle may spend on a stop besides settle.stop_grace: the outcomes
# producer's last flush (2 s), leaving the consumer group, the database write
# under way when SIGTERM came (settle/st_settle.h, ST_DEFAULT_STOP_GRACE_MS).
SETTLE_EXIT_S = 10


def check_config(binary, args, env_file=None, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    names = []
    if env_file:
        for line in open(env_file):
            line = line.strip()
            if line.startswith("#FLASHGATE_"):
                line = line[1:]   # commented-out examples must be valid too
            if line.startswith("FLASHGATE_"):
                k, _, v = line.partition("=")
                env[k] = v
                names.append(k)
    env.update(extra_env or {})
    out = subprocess.run([binary] + args + ["--check-config"], capture_output=True, text=True,
                         env=env, timeout=30)
    return out, names


try:
    paths = []
    for name in ("flashgate.service", "flashgate-settle.service"):
        text = open(os.path.join(UNITS, name)).read()
        p = os.path.join(tmp, name)
        open(p, "w").write(text.replace("/usr/local/bin/", BIN + "/"))
        paths.append(p)
        u = parse(text)
        what = name + ": "
        eq(one(u, "Type"), "notify", what + "Type=notify")
        eq(one(u, "NotifyAccess"), "main", what + "NotifyAccess=main")
        eq(one(u, "NoNewPrivileges"), "yes", what + "NoNewPrivileges")
        eq(one(u, "ProtectSystem"), "strict", what + "ProtectSystem=strict")
        eq(one(u, "PrivateTmp"), "yes", what + "PrivateTmp")
        eq(one(u, "CapabilityBoundingSet"), "", what + "CapabilityBoundingSet empty")
        eq(one(u, "Restart"), "on-failure", what + "Restart=on-failure")
        check(one(u, "EnvironmentFile") and not one(u, "EnvironmentFile").startswith("-"),
              what + "an EnvironmentFile that must exist (secrets)")
        check(not any("TOKEN" in e or "PASSWORD" in e for e in u.get("Environment", [])),
              what + "no secret in Environment=")
        argv = shlex.split(one(u, "ExecStart"))
        data_dir = argv[argv.index("--data-dir") + 1]
        check(data_dir in one(u, "ReadWritePaths").split(),
              what + "the data dir %s is in ReadWritePaths" % data_dir)
        eq("/var/lib/" + one(u, "StateDirectory"), data_dir, what + "StateDirectory is the data dir")
        check(seconds(one(u, "TimeoutStopSec")) is not None and seconds(one(u, "TimeoutStopSec")) >= 20,
              what + "TimeoutStopSec leaves room for the drain (grace + server.drain_timeout)")
        # The command line is accepted by the binary (paths made local).
        binary = os.path.join(BIN, os.path.basename(argv[0]))
        args = argv[1:]
        # --config reads the unit's own sample, installed where the comments say.
        sample = SAMPLES[name]
        check("--config" in args, what + "ExecStart reads a config file")
        check(("deploy/%s %s" % (sample, args[args.index("--config") + 1])) in text,
              what + "the comments install deploy/%s where --config reads it" % sample)
        # The binary reads it as User=, not as root (as systemd reads EnvironmentFile=):
        # root's /etc/flashgate and the file must be readable by the service's group.
        grp = one(u, "Group")
        check(re.search(r"install -m 0640 -g %s deploy/%s " % (re.escape(grp), re.escape(sample)),
                        text) is not None and ("install -d -m 0750 -g %s /etc/flashgate" % grp)
              in open(os.path.join(UNITS, "flashgate.service")).read(),
              what + "the config file and /etc/flashgate are installed readable by group " + grp)
        args[args.index("--config") + 1] = os.path.join(SRC, "deploy", sample)
        args[args.index("--data-dir") + 1] = os.path.join(tmp, "data-" + name)
        # %d is systemd's credentials directory (LoadCredential=): one here, as systemd
        # makes it (the files 0400), since --check-config reads the token file as the
        # start does
        creds = os.path.join(tmp, "credentials-" + name)
        if any("%d/" in a for a in args):
            os.makedirs(creds, exist_ok=True)
            for a in args:
                if a.startswith("%d/"):
                    cred = os.path.join(creds, a[3:])
                    with open(cred, "w") as f:
                        f.write("c" * 48 + "\n")
                    os.chmod(cred, 0o400)
            args = [a.replace("%d/", creds + "/") for a in args]
        env_example = os.path.join(UNITS, os.path.basename(one(u, "EnvironmentFile")) + ".example")
        check(os.path.exists(env_example), what + "an example of its EnvironmentFile: " + env_example)
        out, names = check_config(binary, args, env_example)
        eq(out.returncode, 0, what + "ExecStart + example env pass --check-config: " + out.stderr[-500:])
        check(len(names) >= 2, what + "the env example sets variables (%r)" % names)
        srcs = [l for l in out.stdout.splitlines() if "# env " in l]
        for n in names:
            check(any(("# env " + n) in l for l in srcs),
                  what + "%s reaches a configuration key" % n)
        if name == "flashgate.service":
            eq(one(u, "ExecReload"), "/bin/kill -HUP $MAINPID", what + "reload is SIGHUP")
            eff = dict(l.split(" = ", 1)[0:2] for l in out.stdout.splitlines() if " = " in l)
            max_conn = int(eff["server.max_connections"].split()[0])
            check(int(one(u, "LimitNOFILE")) >= max_conn * 8 + 1024,
                  what + "LimitNOFILE %s covers server.max_connections %d x 8 workers + 1024"
                  % (one(u, "LimitNOFILE"), max_conn))
            drain = seconds(eff["server.drain_timeout"].split()[0].strip('"'))
            check(drain is not None and seconds(one(u, "TimeoutStopSec")) >= drain + 5,
                  what + "TimeoutStopSec above server.drain_timeout + a 5 s grace")
            # the watchdog (integration.114-liveness): no ping while the workers drain
            wd = seconds(one(u, "WatchdogSec") or "")
            live = seconds(eff["server.liveness_timeout"].split()[0].strip('"'))
            check(wd is not None and drain is not None and wd > drain and live is not None
                  and 0 < live < wd, what + "WatchdogSec %s above server.drain_timeout and "
                  "server.liveness_timeout" % one(u, "WatchdogSec"))
        else:
            eff = dict(l.split(" = ", 1)[0:2] for l in out.stdout.splitlines() if " = " in l)
            grace = seconds(eff["settle.stop_grace"].split()[0].strip('"'))
            check(grace is not None and seconds(one(u, "TimeoutStopSec")) >= grace + SETTLE_EXIT_S,
                  what + "TimeoutStopSec %s above settle.stop_grace %s + %d s"
                  % (one(u, "TimeoutStopSec"), grace, SETTLE_EXIT_S))

    # The admin-cgroup drop-in (docs/runbook.md, CPU quotas): the unit with it
    # (a drop-in's sections appended to the unit, as systemd reads them) must
    # verify too, and lift what made server.admin_cgroup unusable.
    dropin_path = os.path.join(UNITS, "flashgate.service.d", "admin-cgroup.conf")
    dropin = open(dropin_path).read()
    check("/etc/systemd/system/flashgate.service.d/admin-cgroup.conf" in dropin,
          "the drop-in says where it is installed")
    d = parse(dropin)
    eq(one(d, "ProtectControlGroups"), "no", "drop-in: /sys/fs/cgroup writable")
    check((one(d, "Delegate") or "").startswith("cpu") or one(d, "Delegate") == "yes",
          "drop-in: the cpu controller delegated")
    env = dict(e.split("=", 1) for e in d.get("Environment", []))
    cg = env.get("FLASHGATE_SERVER_ADMIN_CGROUP", "")
    check(cg.startswith("/sys/fs/cgroup/system.slice/flashgate.service/"),
          "drop-in: the admin cgroup is below the service's own cgroup (%r)" % cg)
    check(cg in one(d, "ExecStartPre").replace("$$cg", "/sys/fs/cgroup/system.slice/flashgate.service"),
          "drop-in: ExecStartPre creates the directory it names")
    out, _ = check_config(os.path.join(BIN, "flashgate"), ["--data-dir", os.path.join(tmp, "d")],
                          extra_env={"FLASHGATE_SERVER_ADMIN_CGROUP": cg})
    check(("server.admin_cgroup = %s  # env FLASHGATE_SERVER_ADMIN_CGROUP" % cg) in out.stdout,
          "drop-in: its variable reaches server.admin_cgroup")
    merged = os.path.join(tmp, "cg", "flashgate.service")
    os.makedirs(os.path.dirname(merged))
    open(merged, "w").write(open(paths[0]).read() + "\n" + dropin[dropin.index("[Service]"):])
    paths.append(merged)

    out = subprocess.run([ANALYZE, "verify"] + paths, capture_output=True, text=True, timeout=60,
                         cwd=tmp)
    eq(out.returncode, 0, "systemd-analyze verify exit status")
    eq((out.stdout + out.stderr).strip(), "", "systemd-analyze verify has no warning")
    for p in paths:
        out = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=20", p],
                             capture_output=True, text=True, timeout=60, cwd=tmp)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout + out.stderr)
        print("%s: exposure %s" % (os.path.basename(p), m and m.group(1)))
        eq(out.returncode, 0, "%s: security exposure <= 2.0 (%s)" % (p, m and m.group(1)))

    # flashgate-settle's readiness notification (Type=notify).
    g = Gateway().start()
    s = None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        path = os.path.join(tmp, "notify.sock")
        sock.bind(path)
        sock.settimeout(30)
        s = Settle(g.data_dir)
        s.spawn(s.cmd(), env=dict(os.environ, NOTIFY_SOCKET=path))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            msg = ""
        check("READY=1" in msg.split("\n"), "flashgate-settle sends READY=1 (%r)" % msg)
        # SIGTERM: STOPPING=1 as the drain begins (as the gateway does), then a clean exit.
        s.proc.send_signal(signal.SIGTERM)
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            msg = ""
        check("STOPPING=1" in msg.split("\n"), "flashgate-settle sends STOPPING=1 on SIGTERM (%r)" % msg)
        eq(s.proc.wait(30), 0, "flashgate-settle exits 0 after SIGTERM")
    finally:
        sock.close()
        if s:
            s.cleanup()
        g.cleanup()
finally:
    shutil.rmtree(tmp, ignore_errors=True)
finish()
