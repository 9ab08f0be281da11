"""At the total connection cap a new connection evicts an old one without a
request in progress, of the oldest, the one whose address holds the most
connections. A trusted proxy's address holds the most by design (a load
balancer's or an edge's pool of keep-alive connections, each carrying many
clients' requests): a crowd of fresh connections from many addresses, each
below the per-address cap, must evict its own kind, not the pool.

One worker, server.max_connections=40, 127.0.0.1 a trusted proxy with 10 idle
keep-alive connections (each has answered one request). Then 60 connections
from 60 other loopback addresses, sending nothing. Promises: evictions happen
(the cap holds), and every one of the proxy's 10 connections still answers on
the same socket afterwards.
"""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")

REQ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def ask(s):
    """One request on an open keep-alive socket; its status, or None if the socket is gone."""
    try:
        s.sendall(REQ)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b'{"status":"alive"}'):
            chunk = s.recv(4096)
            if not chunk:
                return None
            data += chunk
        return int(data.split(b" ", 2)[1])
    except OSError:
        return None


def connect(port, src=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


g = Gateway("--set", "server.max_connections=40", "--set", "server.trusted_proxies=127.0.0.1",
            "--set", "server.proxy_max_connections=0", "--set", "overload.level=0",
            threads=1).start()
pool, crowd = [], []
try:
    for _ in range(10):
        s = connect(g.port)
        eq(ask(s), 200, "a proxy connection answers")
        pool.append(s)
    for i in range(60):
        try:
            crowd.append(connect(g.port, "127.0.1.%d" % (i + 1)))
        except OSError as e:
            check(False, "crowd connection %d: %s" % (i, e))
    # every crowd connection has been accepted (and counted) once a request on
    # another one is answered after them: one worker, accepts in order
    probe = connect(g.port, "127.0.2.1")
    eq(ask(probe), 200, "a fresh connection is served at the cap")
    probe.close()
    st = g.admin("GET", "/admin/v1/stats").json["connections"]
    print("guard:", st)
    check(st["evicted"] >= 20, "at the cap old connections were evicted (%d)" % st["evicted"])
    alive = [ask(s) for s in pool]
    eq(alive, [200] * 10, "the trusted proxy's pooled connections were not evicted by the crowd")
finally:
    for s in pool + crowd:
        s.close()
    g.cleanup()
finish()
