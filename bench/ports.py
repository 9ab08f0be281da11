"""Free loopback ports for the processes a benchmark or a test starts; shared by
bench/bench.py (and the benches built on it) and tests/integration/fg.py."""
import atexit
import os
import random
import socket
import tempfile

_GIVEN = set()
# Ports handed out by any live process on this machine: one file per port, holding
# the PID that took it. Between a gateway's stop and its restart on the same ports
# its port is bindable, and another test running beside it drew it ("Address
# already in use" at the restart, seen in a parallel suite).
_HELD = os.path.join(tempfile.gettempdir(), "flashgate-ports-%d" % os.getuid())


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@atexit.register
def _release():
    for port in _GIVEN:
        try:
            os.unlink(os.path.join(_HELD, str(port)))
        except OSError:
            pass


def _reserve(port):
    """Takes port for this process unless a live process holds it."""
    os.makedirs(_HELD, exist_ok=True)
    path = os.path.join(_HELD, str(port))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid() or (pid and _alive(pid)):
                return False
            try:  # its holder is gone (or the file is half-written): take it over
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A free loopback port not handed out before in this process, taken below the
    kernel's ephemeral range. A port from bind(0) comes from that range, where any
    outgoing connection on the machine may take it as its source port while the
    process it was meant for is down: a gateway restarted on its own ports then
    fails "Address already in use" (seen in a parallel suite). A port is free again
    once its probe socket closes, so two picks in a row could return the same one
    (a gateway refused admin_listen == listen): the set remembers what was given, and
    a file per port (_HELD) what every live process was given."""
    lo, _ = _ephemeral_range()
    if lo > 12000:
        rng = random.Random()
        for _ in range(200):
            p = rng.randrange(10000, lo)
            if p not in _GIVEN and _bindable(p) and _reserve(p):
                _GIVEN.add(p)
                return p
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _GIVEN:
            _GIVEN.add(p)
            return p
    raise RuntimeError("no fresh free port in 100 tries")
