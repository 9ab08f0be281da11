"""Free loopback ports for the processes a benchmark or a test starts; shared by
bench/bench.py (and the benches built on it) and tests/integration/fg.py."""
import random
import socket

_GIVEN = set()


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
    (a gateway refused admin_listen == listen): the set remembers what was given."""
    lo, _ = _ephemeral_range()
    if lo > 12000:
        rng = random.Random()
        for _ in range(200):
            p = rng.randrange(10000, lo)
            if p not in _GIVEN and _bindable(p):
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
