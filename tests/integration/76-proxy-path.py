"""Proxied routes: the request target an upstream gets, and the route it goes to.
A raw-socket upstream here records the request target of each request as it
came on the wire and answers with it as the body.

- the path reaches the upstream byte for byte as the client sent it (nginx's
  proxy_pass without a URI part): %3B, %2C, %40, %20, a UTF-8 %C3%A9, an
  escaped unreserved byte (%41, %7E), a lower-case escape, a '+', a literal
  ';' and the other bytes llhttp lets through (" < > \\ ^ ` { | } [ ] and a
  '%' with no hex digits after it) stay as they were: decoded and encoded
  again, %3B became a ';' (a path parameter to the upstream), %2C a ',' and
  %40 an '@', and an upstream that signs or caches URLs saw another one;
- routing reads the decoded path all the same (/lp/it%65m/7 is under
  /lp/item/), so what would decode or normalise into another path is refused
  before routing: an escaped slash, NUL or backslash and a dot segment, plain
  or escaped, are a 400 with a JSON error, and the upstream never hears of
  them;
- the query reaches it as sent too (an empty one as the '?' alone);
- an absolute-form target is forwarded as its path (and query), as sent;
- a path kept as sent survives a body that comes in later reads, and two
  pipelined requests each get their own;
- the longest matching prefix picks the route, whatever the routes' order,
  by whole segments;
- a prefix listed twice is refused at start, naming both routes."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, check, eq, finish, need_binary, serve_raw  # noqa: E402

need_binary("flashgate")

SEEN = []  # request targets as the upstream received them, in order
SEEN_LOCK = threading.Lock()


def serve(c):
    """One upstream connection (kept alive): each request's target as the body."""
    buf = b""
    try:
        c.settimeout(10)
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            target = head.split(b"\r\n", 1)[0].split(b" ")[1]
            n = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v)
            while len(buf) < n:
                buf += c.recv(65536)
            body, buf = buf[:n], buf[n:]
            with SEEN_LOCK:
                SEEN.append(target)
            out = target + (b" body=" + body if body else b"")
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
    except OSError:
        pass
    finally:
        c.close()


up = "http://127.0.0.1:%d" % serve_raw(serve)
# /lp/...: the shorter prefix listed first; /lq/...: the longer one first. The
# base path of each upstream URL says which route a request took.
routes = [{"prefix": "/p/", "upstream": up, "timeout_ms": 3000},
          {"prefix": "/lp/", "upstream": up + "/A", "timeout_ms": 3000},
          {"prefix": "/lp/item/", "upstream": up + "/B", "timeout_ms": 3000},
          {"prefix": "/lp/item", "upstream": up + "/C", "timeout_ms": 3000},
          {"prefix": "/lq/item/", "upstream": up + "/B", "timeout_ms": 3000},
          {"prefix": "/lq/item", "upstream": up + "/C", "timeout_ms": 3000},
          {"prefix": "/lq/", "upstream": up + "/A", "timeout_ms": 3000}]
g = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(routes),
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()


class Client:
    """A raw keep-alive connection: answers framed by Content-Length (every
    answer here has one)."""

    def __init__(self):
        self.sk = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        self.buf = b""

    def _fill(self):
        d = self.sk.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def answer(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            hdrs[k.decode().strip().lower()] = v.strip().decode()
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body

    def close(self):
        self.sk.close()


def ask(target, method=b"GET", body=None):
    """(status, headers, body) of one request for target (bytes, sent as is)."""
    c = Client()
    try:
        req = method + b" " + target + b" HTTP/1.1\r\nHost: shop.example\r\n"
        if body is not None:
            req += b"Content-Length: %d\r\n" % len(body)
        c.sk.sendall(req + b"\r\n" + (body or b""))
        return c.answer()
    finally:
        c.close()


def error_of(body):
    try:
        return json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None


try:
    # ---- the path as sent ----
    for target in (b"/p/a%3Bb", b"/p/a%2Cb", b"/p/a%40b", b"/p/a%20b", b"/p/caf%C3%A9",
                   b"/p/a+b", b"/p/a;b=1", b"/p/%3b%2c%40%c3%a9", b"/p/%41%7E%2D",
                   b"/p/x;jsessionid=1/%3B/y%3Dz",
                   b"/p/\"<>\\^`{|}[]", b"/p/%zz%", b"/p/%25", b"/p/%252e%252e/x",
                   b"/p/" + b"%3B" * 600):
        st, _, body = ask(target)
        eq((st, body), (200, target), "%r reaches the upstream as sent" % target[:60])

    # ---- the query as sent ----
    for target in (b"/p/q?a=%3B&b=red+shoes&&c=%2F&d&e=%C3%A9;f=\"{}\"",
                   b"/p/a%3Bb?x=%3B", b"/p/q?"):
        st, _, body = ask(target)
        eq((st, body), (200, target), "%r: the query reaches the upstream as sent" % target)
    st, _, body = ask(b"/p/q?x=%3B#frag")
    eq((st, body), (200, b"/p/q?x=%3B"), "a fragment is not forwarded, the query is as sent")

    # ---- an absolute-form target: its path and query, as sent ----
    for target, want in ((b"http://shop.example/p/a%3Bb?x=%2C", b"/p/a%3Bb?x=%2C"),
                         (b"HTTPS://Shop.Example:8443/p/%40;x", b"/p/%40;x"),
                         (b"http://shop.example/lp/item/%37", b"/B/lp/item/%37")):
        st, _, body = ask(target)
        eq((st, body), (200, want), "absolute-form %r is forwarded as its path" % target)

    # ---- a body in later reads, pipelined requests ----
    c = Client()
    c.sk.sendall(b"POST /p/post%3Bx HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\nhe")
    time.sleep(0.2)  # the head is handled before the rest of the body comes
    c.sk.sendall(b"llo")
    st, _, body = c.answer()
    eq((st, body), (200, b"/p/post%3Bx body=hello"),
       "the path as sent is kept until the body is in")
    c.sk.sendall(b"GET /p/one%2C1 HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /p/two%40%32 HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /p/three HTTP/1.1\r\nHost: x\r\n\r\n")
    got = [c.answer()[::2] for _ in range(3)]
    eq(got, [(200, b"/p/one%2C1"), (200, b"/p/two%40%32"), (200, b"/p/three")],
       "pipelined requests each reach the upstream with their own path")
    c.close()

    # ---- paths that decode or normalise into another one: refused ----
    with SEEN_LOCK:
        seen = len(SEEN)
    for target in (b"/p/a%2Fb", b"/p/a%2f..%2fx", b"/p/%2e%2e/x", b"/p/%2E/x", b"/p/../x",
                   b"/p/x/..", b"/p/.%2e;x/y", b"/p/a%5Cb", b"/p/a%00b",
                   b"/p/a\\..\\x", b"/lp/item/%2e%2e/%2e%2e/admin"):
        st, hdrs, body = ask(target)
        check(st == 400 and hdrs.get("content-type", "").startswith("application/json") and
              error_of(body) == "bad_request",
              "%r is refused with a JSON 400: %d %r" % (target, st, body[:160]))
    with SEEN_LOCK:
        eq(SEEN[seen:], [], "the refused paths never reached the upstream")

    # ---- the longest matching prefix, whatever the order ----
    for lx in (b"/lp", b"/lq"):  # /lp: shorter prefix listed first; /lq: longer first
        for path, base in ((b"/item/7", b"/B"), (b"/item/", b"/B"), (b"/item", b"/C"),
                           (b"/items", b"/A"), (b"/7", b"/A"), (b"/it%65m/7", b"/B"),
                           (b"/item%3B/7", b"/A")):
            st, _, body = ask(lx + path)
            eq((st, body), (200, base + lx + path),
               "%s%s goes to the route with the longest matching prefix" %
               (lx.decode(), path.decode()))
    st, _, body = ask(b"/lpx/item/7")
    eq((st, error_of(body)), (404, "not_found"), "/lpx/ is under no prefix: the gateway's 404")
finally:
    g.cleanup()

# ---- a prefix listed twice is refused, naming both ----
dup = json.dumps([{"prefix": "/v1/page/", "upstream": up},
                  {"prefix": "/v1/page/item/", "upstream": up},
                  {"prefix": "/v1/page/", "upstream": up + "/other"}])
r = subprocess.run([os.path.join(BIN, "flashgate"), "--proxy-routes", dup, "--check-config"],
                   capture_output=True, text=True, timeout=30)
check(r.returncode != 0 and
      "proxy.routes" in r.stderr and "route 2: prefix /v1/page/ is route 0's already" in r.stderr,
      "a prefix listed twice is refused with an error naming both routes: %d %r" %
      (r.returncode, r.stderr[-400:]))
finish()
