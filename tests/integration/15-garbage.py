"""Bad input never crashes the gateway and never changes state: malformed
HTTP, random bytes, truncated and oversized requests, odd JSON, on both
listeners. Bounded: a few thousand requests, loopback only."""
import json
import os
import random
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
rnd = random.Random(1234)


def raw(port, data, read=True, timeout=3.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if read:
            out = b""
            while len(out) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
            return out
    except OSError:
        return b""
    finally:
        s.close()


g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0").start()
try:
    g.put_sale("g", stock=50, per_user_limit=1)
    before = g.admin("GET", "/admin/v1/sales/g").json
    body_cases = [
        b'{"user_id":"a"', b'{"user_id":"a","qty":99999999999999999999}', b'\xff\xfe\x00',
        b'{"user_id":["a"]}', b'{"user_id":{"$gt":""}}', b'null', b'""', b'{"user_id":"a\\ud800"}',
        b'{' * 3000, b'[' * 3000, b'{"user_id":"' + b'\xc3\x28' + b'"}', b'{"qty":1}',
        b'{"user_id":"a","qty":null}', b'{"user_id":"a","qty":true}', b'{"user_id":"a","qty":1e3}',
    ]
    for b in body_cases:
        req = (b"POST /v1/sales/g/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(b)) + b
        out = raw(g.port, req)
        check(out.startswith(b"HTTP/1.1 4"), "4xx for body %r: %r" % (b[:30], out[:40]))
    proto_cases = [
        b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/sales/g/orders HTTP/1.1\r\n\r\n",
        b"POST /v1/sales/g/orders HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/sales/g/orders HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /v1/sales/g/orders HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n",
        b"POST /v1/sales/g/orders HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" + b"1000\r\n" + b"a" * 4096 + b"\r\n" + b"1000\r\n" + b"a" * 4096 + b"\r\n0\r\n\r\n",
        b"GET /v1/sales/" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
        b"GET /v1/orders/%00%01 HTTP/1.1\r\n\r\n", b"GET /v1/sales/%zz HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * 20000 + b"\r\n\r\n",
        b"GET /v1/sales/../../etc/passwd HTTP/1.1\r\n\r\n",
        b"\x00" * 100, b"\r\n" * 50,
    ]
    for p in proto_cases:
        raw(g.port, p, timeout=0.5)
        raw(g.admin_port, p, timeout=0.5)
    for _ in range(300):
        raw(g.port, bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 600))),
            read=rnd.random() < 0.1, timeout=0.3)
    # half-open and abandoned connections
    socks = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(50)]
    for i, s in enumerate(socks):
        s.sendall(b"POST /v1/sales/g/orders HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"[: 10 + i])
    for s in socks:
        s.close()
    # admin: bad bodies with a valid token change nothing
    for b in (b"{", b"[]", b'{"stock":"x"}', b'{"stock":1e400}', b"\xff"):
        r = g.admin("PUT", "/admin/v1/sales/g", body=b)
        eq(r.status, 400, "admin 400 for %r" % b)
    check(g.proc.poll() is None, "still running")
    eq(g.get("/healthz").status, 200, "still healthy")
    after = g.admin("GET", "/admin/v1/sales/g").json
    eq(after, before, "no state changed")
    eq(g.buy("g", "fine").status, 202, "still sells")
finally:
    g.cleanup()
finish()
