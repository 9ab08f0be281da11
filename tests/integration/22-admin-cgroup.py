"""server.admin_cgroup (--admin-cgroup): the admin listener's threads, and only
they, run in the given CPU cgroup, so that a gateway using all of its CPU quota
does not delay its own health checks (docs/runbook.md, "CPU quotas"). Checked
on the cgroup v1 cpu controller (CI runs as root; its absence is a failure):
the listener's thread is in the group's `tasks` and no other gateway thread is;
the thread it starts for an admin connection joins it too; the admin API and
the public listener answer; the process's own cgroup keeps every other thread.
A directory that is not a cgroup refuses to start, naming the option.

How fast a probe is answered under a saturated quota is the overload bench's
(bench/overload.py --cases cpu --admin-cpu), not a timed assertion here."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")

ROOT = "/sys/fs/cgroup/cpu"
check(os.access(ROOT, os.W_OK), "cgroup v1 cpu controller writable at %s (needs root)" % ROOT)
CG = os.path.join(ROOT, "flashgate-it-%d-admin" % os.getpid())


def tasks():
    with open(os.path.join(CG, "tasks")) as f:
        return set(f.read().split())


def comm(pid, tid):
    try:
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            return f.read().strip()
    except OSError:
        return None


os.makedirs(CG, exist_ok=True)
g = Gateway("--admin-cgroup", CG)
bad = Gateway("--admin-cgroup", "/proc")
try:
    g.start()
    pid = g.proc.pid

    def admin_threads():
        mine = {t for t in os.listdir("/proc/%d/task" % pid)}
        return mine, sorted(comm(pid, t) or "" for t in tasks() & mine)

    # Under load the listener's thread may not have run yet at /readyz (the
    # workers answer it): it still bears its creator's name until it names
    # itself. Wait for the name, never for the set to change otherwise.
    deadline = time.time() + 10
    while admin_threads()[1] != ["MHD-listen"] and time.time() < deadline:
        time.sleep(0.05)
    mine, names = admin_threads()
    inside = tasks() & mine
    eq(names, ["MHD-listen"], "the admin listener's thread, and only it, is in the cgroup")
    check(len(mine - inside) >= 3, "the workers and the main thread stay where they were (%d)"
          % len(mine - inside))
    eq(request(g.admin_port, "GET", "/healthz").status, 200, "admin /healthz")
    eq(g.admin("GET", "/admin/v1/stats").status, 200, "admin API")
    eq(request(g.port, "GET", "/healthz").status, 200, "public /healthz")

    # libmicrohttpd's thread per admin connection is started by the listener's
    # thread and inherits its cgroup: hold one connection open and look.
    s = socket.create_connection(("127.0.0.1", g.admin_port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    check(s.recv(4096).startswith(b"HTTP/1.1 200"), "kept-alive admin connection answered")
    # wait for 2: this connection's thread may not have started yet, and the
    # threads of the admin connections above may not have ended yet (a fresh
    # clone's CI once counted 3)
    deadline = time.time() + 5
    while time.time() < deadline and len(tasks() & set(os.listdir("/proc/%d/task" % pid))) != 2:
        time.sleep(0.05)
    inside = tasks() & set(os.listdir("/proc/%d/task" % pid))
    eq(len(inside), 2, "the connection's thread joined the listener's cgroup")
    s.close()

    bad.start(wait=False)
    try:
        rc = bad.proc.wait(20)
    except Exception:
        rc = None
    check(rc not in (None, 0), "a directory that is not a cgroup refuses to start (rc %s)" % rc)
    check("server.admin_cgroup" in bad.logs(), "the refusal names server.admin_cgroup")
finally:
    g.cleanup()
    bad.cleanup()
    for t in (tasks() if os.path.isdir(CG) else ()):
        try:
            with open(os.path.join(ROOT, "tasks"), "w") as f:
                f.write(t + "\n")
        except OSError:
            pass
    try:
        os.rmdir(CG)
    except OSError as e:
        print("warning: %s not removed: %s" % (CG, e))
finish()
