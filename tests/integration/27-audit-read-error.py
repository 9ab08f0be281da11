"""The audit log's disk fails under a running gateway (loopback only, bounded).

<data-dir>/audit.log is a symlink to a file on a small ext4 disk of its own (a loop
mount; root is required, and its absence is a failure, as in 17-disk-full), the audit
log on a volume apart from the spool. Some audited changes, then that disk goes down
(EXT4_IOC_SHUTDOWN: every read and write of it fails with EIO, as after a disk error;
a running process keeps its descriptor, so replacing or chmod'ing the path would not
reach it, and root reads past any mode):
- GET /admin/v1/audit answers 500 `internal` "cannot read the audit log", with or
  without since/limit;
- POST /admin/v1/config/rollback answers 500 too, not 404 "no version" (the version is
  in the log; the log cannot be read), and restores nothing;
- nothing changed: limits, rules, sales, the config version (stats, /metrics) as they
  were; the process is up, ready, and takes buys (the public path has no use for the
  audit log);
- a change made meanwhile is answered as done and in force, not audited (docs/api.md,
  "Versions and audit"): the version stays, the log says "cannot append".
"""
import fcntl
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def ext4_disk(tmp):
    """A 16 MiB ext4 file system on a loop device (needs root); the test ends if it
    cannot mount one. Returns its mount point."""
    img = os.path.join(tmp, "audit-disk.img")
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    mnt = tempfile.mkdtemp(prefix="fg-auditdisk-")
    r = subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
    check(r.returncode == 0, "mounted a 16 MiB ext4 loop disk for the audit log (needs root): %s"
          % r.stderr)
    if r.returncode != 0:
        os.rmdir(mnt)
        finish()
    return mnt


def unmount(mnt):
    r = subprocess.run(["umount", mnt], capture_output=True, text=True)
    check(r.returncode == 0, "the audit disk unmounts: %s" % r.stderr)
    if r.returncode == 0:
        os.rmdir(mnt)


def state(g):
    """What a refused request must leave as it was."""
    out = {u: g.admin("GET", u).json for u in ("/admin/v1/limits", "/admin/v1/rules",
                                               "/admin/v1/sales")}
    out["config_version"] = g.admin("GET", "/admin/v1/stats").json["config_version"]
    metrics = g.admin("GET", "/metrics").raw.decode()
    out["metric"] = [ln for ln in metrics.splitlines()
                     if ln.startswith("flashgate_config_version ")]
    return out


def is_error(r, code, what):
    j = r.json if isinstance(r.json, dict) else {}
    check(isinstance(j.get("error"), str) and isinstance(j.get("message"), str),
          "%s: the error schema ({error, message}): %r" % (what, r.raw[:200]))
    eq(j.get("error"), code, what + ": code")
    return j.get("message", "")


g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none")
mnt = ext4_disk(g.tmp)
try:
    os.makedirs(g.data_dir, exist_ok=True)
    os.symlink(os.path.join(mnt, "audit.log"), os.path.join(g.data_dir, "audit.log"))
    g.start()
    g.put_sale("s1", stock=100)
    eq(g.admin("PATCH", "/admin/v1/limits", body={"sale_rps": 500, "sale_burst": 50}).status, 200,
       "a limits change")
    eq(g.admin("PUT", "/admin/v1/rules/s1", body={"user_rps": 5}).status, 201, "a rule")
    r = g.admin("GET", "/admin/v1/audit")
    eq(r.status, 200, "the audit log reads before the fault")
    versions = [e["version"] for e in r.json["entries"]]
    eq(versions, [1, 2, 3, 4], "start, sale, limits, rule")
    check(os.path.getsize(os.path.join(mnt, "audit.log")) > 0, "the log is on the audit disk")
    before = state(g)
    eq(before["config_version"], 4, "config version 4")

    # the audit disk goes down
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)

    for q in ("", "?since=2", "?since=0&limit=1"):
        r = g.admin("GET", "/admin/v1/audit" + q)
        eq(r.status, 500, "GET /admin/v1/audit%s on a failed disk" % q)
        check("cannot read the audit log" in is_error(r, "internal", "audit 500"),
              "the 500 says the audit log cannot be read: %r" % r.json)
    r = g.admin("POST", "/admin/v1/config/rollback", body={"version": 2})
    eq(r.status, 500, "a rollback on a failed disk: 500, not 404 (version 2 is in the log)")
    check("cannot read the audit log" in is_error(r, "internal", "rollback 500"),
          "the rollback's 500 says the audit log cannot be read: %r" % r.json)
    eq(state(g), before, "the refused reads and rollback changed nothing")
    check(g.alive(), "the gateway is up")
    eq(g.get("/readyz").status, 200, "and ready")
    r = g.buy("s1", "u1")
    eq(r.status, 202, "a buy goes through (the public path does not read the audit log)")

    # a change now is in force, answered as done, not audited
    r = g.admin("PATCH", "/admin/v1/limits", body={"sale_rps": 400})
    eq(r.status, 200, "a change on a failed audit disk is answered as done")
    eq(g.admin("GET", "/admin/v1/limits").json["sale_rps"], 400, "and in force")
    eq(g.admin("GET", "/admin/v1/stats").json["config_version"], 4, "but not audited: version 4")
    check("cannot append to the audit log" in g.logs(20000), "the log says the append failed")
    check(g.alive(), "the gateway is still up")
    g.stop()
finally:
    g.cleanup()
    unmount(mnt)
finish()
