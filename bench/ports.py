"""Free loopback ports for the processes a benchmark or a test starts; shared by
bench/bench.py (and the benches built on it) and tests/integration/fg.py."""
import socket

_GIVEN = set()


def free_port():
    """A free loopback port not handed out before in this process: a port is free
    again once its probe socket closes, so two picks in a row can return the same
    one (seen in a test and in the overload bench: a gateway refused
    admin_listen == listen)."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _GIVEN:
            _GIVEN.add(p)
            return p
    raise RuntimeError("no fresh free port in 100 tries")
