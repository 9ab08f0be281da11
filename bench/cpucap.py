"""A cgroup v1 CPU quota for a process under test, shared by the overload bench
(bench/overload.py) and the overload integration tests (tests/integration/crowd.py),
so that both cap a process the same way.

share 0.05 = 5% of one core. The quota is taken per CG_PERIOD_US (10 ms); the
kernel's smallest quota is 1 ms, so a smaller share stretches the period instead
(5% is 1 ms per 20 ms). Needs root and the v1 cpu controller at CG_ROOT: its
absence is an error, never a skip.
"""
import os

CG_ROOT = "/sys/fs/cgroup/cpu"
CG_PERIOD_US = 10000
LIVE = []  # every cap made and not yet removed (remove_all() at exit)


class CpuCap:
    def __init__(self, name, share):
        if not os.access(CG_ROOT, os.W_OK):
            raise RuntimeError("cgroup v1 cpu controller not writable at %s (needs root)" % CG_ROOT)
        self.share = share
        self.path = os.path.join(CG_ROOT, name)
        os.makedirs(self.path, exist_ok=True)
        LIVE.append(self)
        quota = int(round(share * CG_PERIOD_US))
        period = CG_PERIOD_US
        if quota < 1000:
            period = int(round(1000 / share))
            quota = 1000
        try:
            self._w("cpu.cfs_period_us", period)
            self._w("cpu.cfs_quota_us", quota)
        except OSError:
            self.remove()  # nobody is in it yet
            raise
        self.desc = "%s: cpu.cfs_quota_us=%d cpu.cfs_period_us=%d (%.0f%% of one core)" % (
            os.path.basename(self.path), quota, period, share * 100)

    def _w(self, f, v):
        with open(os.path.join(self.path, f), "w") as fh:
            fh.write("%s\n" % v)

    def add(self, pid):
        self._w("cgroup.procs", pid)

    def remove(self):
        remove_group(self.path, CG_ROOT, lambda m: print("warning: " + m))
        if self in LIVE:
            LIVE.remove(self)


def remove_group(path, root, warn):
    """Moves whoever is left in the v1 cgroup at path back to root's group, then removes it.
    A process that already exited cannot be moved; that is fine. Used for the cpu
    controller's groups here and for the bench's cpuacct ones (bench/overload.py)."""
    try:
        for pid in open(os.path.join(path, "cgroup.procs")).read().split():
            try:
                with open(os.path.join(root, "cgroup.procs"), "w") as fh:
                    fh.write(pid + "\n")
            except OSError:
                pass
        os.rmdir(path)
    except OSError as e:
        if os.path.isdir(path):
            warn("cgroup %s not removed: %s" % (path, e))


def remove_all():
    for cg in list(LIVE):
        cg.remove()


def remove_stale(prefix, roots, warn):
    """Removes the empty groups named PREFIX<pid>-... under each root whose <pid> is no
    longer alive: a run killed with SIGKILL cannot remove its own (its children die with
    it: PR_SET_PDEATHSIG), and they would stay until the machine restarts. A group that
    still holds a process is left alone. Returns the paths removed."""
    gone = []
    for root in roots:
        if not os.path.isdir(root):
            continue
        for d in os.listdir(root):
            pid = d[len(prefix):].split("-", 1)[0]
            if not d.startswith(prefix) or not pid.isdigit() or \
                    os.path.exists("/proc/" + pid):
                continue
            path = os.path.join(root, d)
            try:
                if open(os.path.join(path, "cgroup.procs")).read().split():
                    continue
                os.rmdir(path)
                gone.append(path)
            except OSError as e:
                warn("stale cgroup %s not removed: %s" % (path, e))
    return gone
