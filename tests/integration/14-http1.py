"""The public listener's HTTP/1.1 contract, black box, over raw sockets (no
HTTP client library: framing is what is tested). Whatever implements the
listener (flashgate's own HTTP/1.1 layer, gateway/edge/gw_h1.c; libmicrohttpd
until it replaced it) is held to it:

  - keep-alive, HTTP/1.0, Connection: close;
  - pipelining: N requests in one send get N complete answers in order, with
    buys (suspended on the spool's fsync here: answered asynchronously)
    between synchronous answers;
  - a request split at every byte boundary over two sends, and byte by byte;
  - bodies: Content-Length, chunked, Expect: 100-continue, over the limit,
    bad, negative, duplicate or conflicting framing headers, a short body
    then a close;
  - heads: too long, malformed, bare CR/LF, NUL, no colon, unsupported
    versions, unknown methods, HEAD;
  - every 4xx/5xx is JSON `{"error": <code>, "message": ...}` with the
    right code (docs/api.md, "HTTP/1.1");
  - after all of it: no crash, the sale the garbage aimed at is unchanged,
    every accepted order is accounted for, and the gateway still sells.

Each check is named. Where the listener is known not to meet the contract,
the check's name is listed with why (KNOWN_MHD_DEVIATIONS: libmicrohttpd's,
emptied by gw_h1.c; KNOWN_H1_GAPS: gw_h1.c's own): the check is then
reported, not failed, and a listed check that passes FAILS (so the lists
stay true: empty them as the listener meets the contract).
The hard invariants (no crash, no hang past a guard, no state change, the
answers that do come are framed) are never waived.

Bounded: loopback only, one gateway, ~600 short connections, ~10 s. No
timed assertion: timeouts are hang guards only.
"""
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, free_port, need_binary  # noqa: E402

need_binary("flashgate")

# Checks that libmicrohttpd 0.9.75 failed, by name, with what it did: emptied
# by flashgate's own HTTP/1.1 layer (gateway/edge/gw_h1.c). Never add to it to pass a test.
KNOWN_MHD_DEVIATIONS = {}

# Checks gw_h1.c fails, found after it replaced libmicrohttpd: the same rule
# (reported, not failed; a listed check that passes fails). Fix, then remove.
KNOWN_H1_GAPS = {
}

GUARD_S = float(os.environ.get("FG_IT_GUARD_S", "10"))  # hang guard per read, not a timing check
CLOSE_GUARD_S = 1.5  # how long a connection that should stay open is watched

NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0"]

DEVIATIONS_SEEN = []


def named(name, problems):
    """One named check: problems is a list of what is wrong (empty = pass)."""
    ok = not problems
    for listname, known in (("KNOWN_MHD_DEVIATIONS", KNOWN_MHD_DEVIATIONS),
                            ("KNOWN_H1_GAPS", KNOWN_H1_GAPS)):
        if name not in known:
            continue
        if ok:
            check(False, "%s: passes now, but is listed in %s (%s): "
                  "remove it from the list" % (name, listname, known[name]))
        else:
            DEVIATIONS_SEEN.append(name)
            print("known deviation %s (%s): %s" % (name, known[name],
                                                   "; ".join(problems)), flush=True)
        return
    check(ok, "%s: %s" % (name, "; ".join(problems)))
    if ok:
        print("ok", name, flush=True)


class Problem(Exception):
    pass


class Answer:
    def __init__(self, status, reason, headers, body, raw):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.raw = raw

    def header(self, name):
        vals = [v for k, v in self.headers if k == name]
        return vals[0] if vals else None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return "Answer(%d, %r)" % (self.status, self.raw[:160])


class Conn:
    """A raw client connection with its own read buffer and a strict reader
    of HTTP/1.1 answers (status line, headers, Content-Length body)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.s.sendall(data)

    def _fill(self, timeout):
        if self.eof:
            return False
        self.s.settimeout(timeout)
        try:
            chunk = self.s.recv(65536)
        except socket.timeout:
            raise Problem("no answer within %.1fs (%d bytes so far: %r)" %
                          (timeout, len(self.buf), self.buf[:120]))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_answer(self, head_only=False, timeout=GUARD_S):
        """The next complete answer; a 1xx interim answer is returned too."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(timeout):
                raise Problem("connection closed before a complete answer head (got %r)" %
                              self.buf[:120])
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit() or len(parts[1]) != 3:
            raise Problem("bad status line %r" % lines[0][:80])
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            if b":" not in ln or ln[:1] in (b" ", b"\t"):
                raise Problem("bad header line %r" % ln[:80])
            k, v = ln.split(b":", 1)
            headers.append((k.decode("latin-1").lower(), v.strip().decode("latin-1")))
        names = [k for k, _ in headers]
        if "transfer-encoding" in names:
            raise Problem("answer is chunked; the contract is Content-Length framing")
        if 100 <= status < 200:
            self.buf = rest
            return Answer(status, reason, headers, b"", head)
        cls = [v for k, v in headers if k == "content-length"]
        if status == 204 and not cls:
            self.buf = rest  # no content, no length (RFC 9110 8.6)
            return Answer(status, reason, headers, b"", head + b"\r\n\r\n")
        if len(cls) != 1 or not cls[0].isdigit():
            raise Problem("answer %d without exactly one numeric Content-Length: %r" %
                          (status, head[:200]))
        n = 0 if head_only else int(cls[0])
        while len(rest) < n:
            if not self._fill(timeout):
                raise Problem("connection closed %d bytes into a %d-byte body" % (len(rest), n))
            rest = self.buf.split(b"\r\n\r\n", 1)[1]
        body, self.buf = rest[:n], rest[n:]
        return Answer(status, reason, headers, body,
                      head + b"\r\n\r\n" + body)

    def closed_after(self, timeout=GUARD_S):
        """Problems unless the server closes with nothing more to read."""
        try:
            while self._fill(timeout):
                pass
        except Problem:
            return ["connection not closed after the answer (%.1fs)" % timeout]
        if self.buf:
            return ["%d bytes after the answer before the close: %r" % (len(self.buf), self.buf[:120])]
        return []

    def open_after(self, timeout=CLOSE_GUARD_S):
        """Problems unless the connection stays open with nothing more to read."""
        self.s.settimeout(timeout)
        try:
            chunk = self.s.recv(65536)
        except socket.timeout:
            return [] if not self.buf else ["unexpected bytes: %r" % self.buf[:120]]
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return ["connection closed, should stay open (keep-alive)"]
        return ["unexpected bytes after the answers: %r" % (self.buf + chunk)[:120]]

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def json_error(a, code, status=None):
    """Problems unless a is a JSON error answer with this code (and status)."""
    p = []
    if status is not None and a.status != status:
        p.append("status %d, want %d" % (a.status, status))
    ct = (a.header("content-type") or "").split(";")[0].strip().lower()
    if ct != "application/json":
        p.append("%d answer has Content-Type %r, want application/json" % (a.status, ct or None))
    j = a.json()
    if not isinstance(j, dict):
        p.append("%d answer body is not a JSON object: %r" % (a.status, a.body[:100]))
    else:
        if j.get("error") != code:
            p.append("error %r, want %r" % (j.get("error"), code))
        if not isinstance(j.get("message"), str) or not j.get("message"):
            p.append("no message in %r" % a.body[:100])
    return p


def exchange(port, data, n=1, head_only=False, then=None):
    """Sends data on a new connection, reads n answers; (answers, problems, conn)."""
    c = Conn(port)
    out = []
    try:
        c.send(data)
        for i in range(n):
            out.append(c.read_answer(head_only=head_only and i == 0))
    except (Problem, OSError) as e:
        return out, [str(e)], c
    return out, [], c


def buy_req(sale, user, extra=b"", body=None, version=b"HTTP/1.1", close=False):
    b = body if body is not None else json.dumps({"user_id": user}).encode()
    return (b"POST /v1/sales/" + sale.encode() + b"/orders " + version + b"\r\nHost: t\r\n"
            b"Content-Type: application/json\r\n" + extra +
            (b"Connection: close\r\n" if close else b"") +
            b"Content-Length: %d\r\n\r\n" % len(b) + b)


def get_req(path, extra=b"", version=b"HTTP/1.1", method=b"GET", close=False):
    host = b"Host: t\r\n" if version == b"HTTP/1.1" else b""
    return (method + b" " + path.encode() + b" " + version + b"\r\n" + host + extra +
            (b"Connection: close\r\n" if close else b"") + b"\r\n")


def chunked_buy(sale, body, extra=b""):
    return (b"POST /v1/sales/" + sale.encode() + b"/orders HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" + extra +
            b"Connection: close\r\n\r\n" + body)


class Upstream(http.server.BaseHTTPRequestHandler):
    """The proxied route's upstream (a real HTTP server on loopback): answers
    every request with what it received, and counts them. /v1/recs/big: a
    900 KiB answer; /v1/recs/slow: after half a second."""
    protocol_version = "HTTP/1.1"
    seen = []

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        Upstream.seen.append((self.command, self.path, body, self.headers.items()))
        if self.path.startswith("/v1/recs/slow-2500"):
            time.sleep(2.5)
        elif self.path.startswith("/v1/recs/slow"):
            time.sleep(0.5)
        if self.path == "/v1/recs/no-content":
            self.send_response(204)
            self.end_headers()
            return
        out = json.dumps({"method": self.command, "path": self.path,
                          "body": body.decode("latin-1"),
                          "pad": "p" * (900 * 1024 if self.path == "/v1/recs/big" else 0)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/v1/recs/many-headers":
            for i in range(300):
                self.send_header("X-Many-%d" % i, "v" * 40)
        if self.path == "/v1/recs/long-cookie":  # a JWT-sized cookie: kept whole
            self.send_header("Set-Cookie", "s=" + "c" * 2000 + "; Path=/")
            self.send_header("Proxy-Status", "up; error=none")  # hop-by-hop (Proxy-*)
        if self.path == "/v1/recs/bare-cr":  # a bare CR: a second header to some clients
            self.send_header("X-A", "a\rSet-Cookie: evil=1")
        if self.path == "/v1/recs/folded":  # obs-fold (RFC 9112 5.2)
            self.send_header("X-A", "a\r\n  folded")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_HEAD = answer

    def log_message(self, *a):
        pass


up = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Upstream)
up.daemon_threads = True
threading.Thread(target=up.serve_forever, daemon=True).start()
ROUTES = json.dumps([{"prefix": "/v1/recs/", "upstream": "http://127.0.0.1:%d" % up.server_port,
                      "timeout_ms": 5000, "criticality": "critical"}])

# A gateway whose buys wait for the spool's group-committed fdatasync: every
# 202 is answered asynchronously (the connection is suspended), as is every
# proxied request (libcurl on the worker's loop); every sale info, order
# status and error synchronously.
g = Gateway(*NOLIMITS, "--set", "spool.durability=fsync", "--proxy-routes", ROUTES).start()
OK, BAD = "ok", "g"
accepted = [0]  # 202s on sale OK that this test saw


def accepted_buy(a, sale=OK, what="buy"):
    """Problems unless a is the 202 of a buy of sale; counts it."""
    if a.status == 202 and sale == OK:
        accepted[0] += 1
    j = a.json() or {}
    if a.status != 202 or j.get("status") != "queued" or j.get("sale_id") != sale:
        return ["%s: want 202 queued for sale %s, got %r" % (what, sale, a)]
    return []


def sale_state(sale):
    r = g.admin("GET", "/admin/v1/sales/" + sale)
    return r.json


try:
    g.put_sale(OK, stock=100000, per_user_limit=1000)
    # The garbage below aims at sale BAD with bodies that would be valid buys
    # (user ids never used) if the framing were read leniently: one accepted
    # would show in its state.
    g.put_sale(BAD, stock=1000, per_user_limit=1)
    before_bad = sale_state(BAD)
    # an order to read back in the pipelines
    a, p, c = exchange(g.port, buy_req(OK, "reader", close=True))
    c.close()
    check(not p and a and accepted_buy(a[0]) == [], "setup buy: %r %r" % (a, p))
    order = a[0].json() if a else {}
    order_path = "/v1/orders/%s?token=%s" % (order.get("order_id"), order.get("status_token"))

    # ---------------- keep-alive ----------------
    c = Conn(g.port)
    p = []
    try:
        for i in range(3):
            c.send(get_req("/v1/sales/" + OK))
            a = c.read_answer()
            if a.status != 200 or (a.json() or {}).get("sale_id") != OK:
                p.append("request %d: %r" % (i, a))
            if (a.header("connection") or "").lower() == "close":
                p.append("request %d answered with Connection: close" % i)
        c.send(buy_req(OK, "ka-buyer"))
        p += accepted_buy(c.read_answer(), what="buy on the kept-alive connection")
        c.send(get_req(order_path))
        a = c.read_answer()
        if a.status != 200:
            p.append("order status on the kept-alive connection: %r" % a)
        p += c.open_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("keepalive.several-requests-one-connection", p)

    a, p, c = exchange(g.port, get_req("/v1/sales/" + OK, version=b"HTTP/1.0"))
    if a:
        if a[0].status != 200:
            p.append("HTTP/1.0 GET: %r" % a[0])
        p += c.closed_after()
    c.close()
    named("keepalive.http10-closes", p)

    a, p, c = exchange(g.port, get_req("/healthz", version=b"HTTP/1.0", extra=b"Connection: keep-alive\r\n") +
                       get_req("/healthz", version=b"HTTP/1.0"), n=2)
    if len(a) == 2:
        if (a[0].status, a[1].status) != (200, 200):
            p.append("HTTP/1.0 keep-alive then plain: %r" % a)
        p += c.closed_after()
    c.close()
    named("keepalive.http10-keep-alive-honoured", p)

    # After Connection: close nothing more is read: the buy behind it must not happen.
    a, p, c = exchange(g.port, get_req("/healthz", close=True) + buy_req(BAD, "after-close"))
    if a:
        if a[0].status != 200 or (a[0].header("connection") or "").lower() != "close":
            p.append("want 200 with Connection: close, got %r" % a[0])
        p += c.closed_after()
    c.close()
    named("keepalive.connection-close-honoured", p)
    # ... with a tab after the token (OWS, RFC 9110 5.6.1): llhttp 8.1 does
    # not see "close" there; gw_h1.c reads the field itself.
    for i, conn in enumerate((b"close\t", b"close \t", b"keep-alive, close\t", b"\tClose")):
        a, p, c = exchange(g.port, get_req("/healthz", extra=b"Connection: " + conn + b"\r\n") +
                           buy_req(BAD, "after-close-tab-%d" % i))
        if a:
            if a[0].status != 200 or (a[0].header("connection") or "").lower() != "close":
                p.append("Connection %r: want 200 with Connection: close, got %r" % (conn, a[0]))
            p += c.closed_after()
        c.close()
        named("keepalive.connection-close-tab-honoured-%d" % i, p)

    # ---------------- pipelining ----------------
    # Answers identify their request: sale ids, order id, the 404's path.
    g.put_sale("ok2", stock=100, per_user_limit=10)
    reqs = [
        (buy_req(OK, "pipe-1"), lambda a: accepted_buy(a, what="pipelined buy 1")),
        (get_req("/v1/sales/ok2"), lambda a: [] if a.status == 200 and a.json()["sale_id"] == "ok2"
         else ["sale info ok2: %r" % a]),
        (buy_req("ok2", "pipe-2"), lambda a: accepted_buy(a, sale="ok2", what="pipelined buy 2")),
        (get_req(order_path), lambda a: [] if a.status == 200 and a.json()["order_id"] == order["order_id"]
         else ["order status: %r" % a]),
        (get_req("/no/such/route"), lambda a: json_error(a, "not_found", 404) +
         ([] if b"/no/such/route" in a.body else ["404 answer of another request: %r" % a])),
        (buy_req(OK, "", body=b'{"user_id":'), lambda a: json_error(a, "bad_request", 400)),
        (get_req("/v1/sales/nosuchsale"), lambda a: json_error(a, "unknown_sale", 404)),
        (buy_req(OK, "pipe-3"), lambda a: accepted_buy(a, what="pipelined buy 3")),
        (get_req("/v1/sales/" + OK, method=b"HEAD"), None),  # headers only
        (get_req("/healthz"), lambda a: [] if a.status == 200 and a.json() == {"status": "alive"}
         else ["healthz after HEAD: %r" % a]),
    ]
    a, p, c = exchange(g.port, b"".join(r for r, _ in reqs), n=0)
    i = 0
    try:
        for i, (_, chk) in enumerate(reqs):
            ans = c.read_answer(head_only=chk is None)
            if chk is None:
                if ans.status != 200:
                    p.append("HEAD in the pipeline: %r" % ans)
            else:
                p += ["answer %d: %s" % (i, x) for x in chk(ans)]
        p += c.open_after()
    except (Problem, OSError) as e:
        p.append("after %d answers: %s" % (i, e))
    c.close()
    named("pipeline.mixed-in-one-send", p)

    # 60 asynchronous buys interleaved with 60 synchronous sale infos, one send
    # of ~10 KiB: more than one read buffer (8 KiB today) of pipelined requests.
    n = 60
    data = b"".join(buy_req(OK, "pipe-many-%d" % i) + get_req("/v1/sales/" + OK) for i in range(n))
    c = Conn(g.port)
    p = []
    try:
        c.send(data + get_req("/healthz", close=True))
        last_left = None
        for i in range(n):
            p += accepted_buy(c.read_answer(), what="buy %d of %d" % (i, n))
            a = c.read_answer()
            j = a.json() or {}
            if a.status != 200 or j.get("sale_id") != OK:
                p.append("sale info %d: %r" % (i, a))
            elif last_left is not None and j["stock_left"] != last_left - 1:
                # Each sale info follows one more buy: answers are in request order.
                p.append("sale info %d: stock_left %d after %d" % (i, j["stock_left"], last_left))
            last_left = j.get("stock_left")
        a = c.read_answer()
        if a.status != 200:
            p.append("closing healthz: %r" % a)
        p += c.closed_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("pipeline.async-buys-between-sync-answers", p)

    # Proxied requests (answered when the upstream has answered) between the others.
    def proxied(path, body=b""):
        def chk(a):
            j = a.json() or {}
            if a.status != 200 or j.get("path") != path or j.get("body") != body.decode("latin-1"):
                return ["proxied %s: %r" % (path, a)]
            return []
        return chk

    recs_body = b'{"n":1}'
    reqs = [
        (get_req("/v1/recs/a"), proxied("/v1/recs/a")),
        (buy_req(OK, "pipe-px-1"), lambda a: accepted_buy(a, what="buy between proxied")),
        (b"POST /v1/recs/b HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\n\r\n" % len(recs_body) + recs_body, proxied("/v1/recs/b", recs_body)),
        (get_req("/v1/sales/" + OK), lambda a: [] if a.status == 200 and a.json()["sale_id"] == OK
         else ["sale info: %r" % a]),
        (b"POST /v1/recs/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\n{\"n\r\n4\r\n\":2}\r\n0\r\n\r\n", proxied("/v1/recs/c", b'{"n":2}')),
        (get_req("/v1/recs/d", close=True), proxied("/v1/recs/d")),
    ]
    a, p, c = exchange(g.port, b"".join(r for r, _ in reqs), n=0)
    i = 0
    try:
        for i, (_, chk) in enumerate(reqs):
            p += ["answer %d: %s" % (i, x) for x in chk(c.read_answer())]
        p += c.closed_after()
    except (Problem, OSError) as e:
        p.append("after %d answers: %s" % (i, e))
    c.close()
    named("pipeline.proxied-between-buys", p)

    # A half-close after the requests (printf ... | nc): every one is answered, in
    # order (the buy in the middle waits for the spool's fsync), then the close.
    c = Conn(g.port)
    p = []
    try:
        c.send(get_req("/healthz") + buy_req(OK, "half-close") + get_req("/v1/sales/" + OK))
        c.s.shutdown(socket.SHUT_WR)
        a = c.read_answer()
        if a.status != 200:
            p.append("healthz: %r" % a)
        p += accepted_buy(c.read_answer(), what="buy before the half-close")
        a = c.read_answer()
        if a.status != 200 or (a.json() or {}).get("sale_id") != OK:
            p.append("sale info: %r" % a)
        p += c.closed_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("pipeline.half-close", p)

    # ---------------- split sends ----------------
    def split_all(name, req, chk):
        p = []
        size = len(req(0)) if callable(req) else len(req)  # a buy's user ids are all as long
        for i in range(1, size):
            c = Conn(g.port)
            try:
                c.send(req(i)[:i] if callable(req) else req[:i])
                time.sleep(0.002)  # two segments (TCP_NODELAY), most of the time two reads
                c.send(req(i)[i:] if callable(req) else req[i:])
                p += ["split at %d: %s" % (i, x) for x in chk(c.read_answer())]
            except (Problem, OSError) as e:
                p.append("split at %d: %s" % (i, e))
            c.close()
            if len(p) > 5:
                p.append("(stopped after 5)")
                break
        named(name, p)

    def split_buy(i):
        return buy_req(OK, "split-%03d" % i)

    split_all("split.buy-at-every-byte", split_buy, lambda a: accepted_buy(a, what="split buy"))
    split_all("split.get-at-every-byte", get_req("/v1/sales/" + OK, extra=b"Accept: */*\r\n"),
              lambda a: [] if a.status == 200 and (a.json() or {}).get("sale_id") == OK
              else ["%r" % a])

    # byte by byte, slowly, well inside server.head_timeout (10 s)
    c = Conn(g.port)
    p = []
    try:
        for b in buy_req(OK, "byte-by-byte"):
            c.send(bytes([b]))
            time.sleep(0.003)
        p += accepted_buy(c.read_answer(), what="byte-by-byte buy")
        for b in get_req("/v1/sales/" + OK, close=True):
            c.send(bytes([b]))
            time.sleep(0.003)
        a = c.read_answer()
        if a.status != 200:
            p.append("byte-by-byte GET: %r" % a)
        p += c.closed_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("split.byte-by-byte", p)

    # ---------------- bodies ----------------
    body = json.dumps({"user_id": "chunked-1"}).encode()
    a, p, c = exchange(g.port, chunked_buy(OK, b"5\r\n" + body[:5] + b"\r\n%x\r\n" % (len(body) - 5) +
                                           body[5:] + b"\r\n0\r\n\r\n"))
    if a:
        p += accepted_buy(a[0], what="chunked buy")
    c.close()
    named("body.chunked-buy-accepted", p)

    body = json.dumps({"user_id": "chunked-ext"}).encode()
    a, p, c = exchange(g.port, chunked_buy(OK, b"%x;ext=1\r\n" % len(body) + body +
                                           b"\r\n0\r\nX-Trailer: t\r\n\r\n"))
    if a:
        p += accepted_buy(a[0], what="chunked buy with an extension and a trailer")
    c.close()
    named("body.chunked-extension-and-trailer", p)

    big = b"a" * 4096
    a, p, c = exchange(g.port, chunked_buy(BAD, b"1000\r\n" + big + b"\r\n1000\r\n" + big +
                                           b"\r\n0\r\n\r\n"))
    if a:
        p += json_error(a[0], "payload_too_large", 413)
    c.close()
    named("body.chunked-over-limit-413", p)

    a, p, c = exchange(g.port, chunked_buy(BAD, b"zz\r\n{\"user_id\":\"cb\"}\r\n0\r\n\r\n"))
    if a:
        p += json_error(a[0], "bad_request", 400)
        p += c.closed_after()
    c.close()
    named("body.chunked-bad-size", p)

    def bad_chunked_buy(name, user, frame):
        """A chunked buy at sale OK whose framing is wrong: 400 and the close, the buy
        never made (counted if accepted, so a listener that takes it fails this check,
        not the final state's). frame(body) gives the chunked bytes."""
        body = json.dumps({"user_id": user}).encode()
        a, p, c = exchange(g.port, chunked_buy(OK, frame(body)))
        if a:
            if a[0].status == 202:
                accepted_buy(a[0])
            p += json_error(a[0], "bad_request", 400)
            if not p:
                p += c.closed_after()
        c.close()
        named(name, p)

    # A chunk size followed by a space ("2 \r\n"): not a chunk-size line
    # (RFC 9112 7.1 allows no whitespace there; a proxy in front may read the
    # size differently).
    bad_chunked_buy("body.chunk-size-then-space-400", "chunk-size-space",
                    lambda b: b"%x \r\n" % len(b) + b + b"\r\n0\r\n\r\n")
    # A chunk's data must end in CRLF: anything else is a bad frame, not a buy.
    bad_chunked_buy("body.chunk-data-without-crlf", "chunk-no-crlf",
                    lambda b: b"%x\r\n" % len(b) + b + b"XX0\r\n\r\n")

    # A chunk's data must end in CRLF (http-parser 2.9, built non-strict, and
    # llhttp's loose variant take any two bytes): else "2\r\n{}XX0\r\n\r\n" ends the body at XX for
    # us while a proxy in front reads on (request smuggling). 400 and the
    # close, the buy behind it never made, in one read or with the
    # terminator in a read of its own.
    body = json.dumps({"user_id": "chunk-no-crlf"}).encode()
    for name, first, rest in (
            ("body.chunk-data-not-crlf-400", b"XX0\r\n\r\n", b""),
            ("body.chunk-data-not-crlf-400-next-read", b"", b"\rX0\r\n\r\n"),
            ("body.chunk-data-lf-not-crlf-400", b"\n0\r\n\r\n", b"")):
        c = Conn(g.port)
        p = []
        try:
            c.send(b"POST /v1/sales/" + BAD.encode() + b"/orders HTTP/1.1\r\nHost: t\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"%x\r\n" % len(body) + body + first)
            if rest:
                time.sleep(0.2)  # the terminator in a read of its own, most of the time
                c.send(rest)
            c.send(buy_req(BAD, "after-bad-chunk"))
            p += json_error(c.read_answer(), "bad_request", 400)
            p += c.closed_after()
        except (Problem, OSError) as e:
            p.append(str(e))
        c.close()
        named(name, p)

    # Trailers are ignored (docs/api.md), also on a proxied route and when
    # they come in a read after the body: none reaches the upstream as a
    # header (gw_h1.c once appended them to the head's fields, unterminated:
    # a heap over-read forwarded upstream), and more than 64 of them are not
    # a late 431.
    for name, trailers in (("body.proxied-trailer-not-forwarded", b"X-Trailer-Field: v\r\n"),
                           ("body.proxied-many-trailers-ignored",
                            b"".join(b"X-Trailer-Field-%d: v\r\n" % i for i in range(70)))):
        c = Conn(g.port)
        p = []
        seen = len(Upstream.seen)
        try:
            c.send(b"POST /v1/recs/trailer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\n\r\n7\r\n{\"n\":3}\r\n")
            time.sleep(0.3)  # the trailer in a read of its own, most of the time
            c.send(b"0\r\n" + trailers + b"\r\n")
            p += proxied("/v1/recs/trailer", b'{"n":3}')(c.read_answer())
            p += c.closed_after()
        except (Problem, OSError) as e:
            p.append(str(e))
        c.close()
        for s_ in Upstream.seen[seen:]:
            p += ["the upstream got the trailer as a header: %r" % ((k, v),)
                  for k, v in s_[3] if "trailer-field" in (k + v).lower()]
        named(name, p)

    # Expect: 100-continue: the interim answer, then the body, then the answer.
    req = buy_req(OK, "expect-1", extra=b"Expect: 100-continue\r\n")
    head, body = req.split(b"\r\n\r\n", 1)
    c = Conn(g.port)
    p = []
    try:
        c.send(head + b"\r\n\r\n")
        a = c.read_answer()
        if a.status != 100:
            p.append("want 100 Continue before the body, got %r" % a)
        c.send(body)
        p += accepted_buy(c.read_answer(), what="buy after 100 Continue")
        p += c.open_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("body.expect-100-continue", p)

    # Expect with a body over the limit: 413 at once, no 100, the body never sent.
    req = buy_req(BAD, "x", extra=b"Expect: 100-continue\r\n", body=b"a" * 5000)
    a, p, c = exchange(g.port, req.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    if a:
        p += json_error(a[0], "payload_too_large", 413)
        p += c.closed_after()
    c.close()
    named("body.expect-over-limit-413-without-100", p)

    a, p, c = exchange(g.port, buy_req(BAD, "x", body=b"a" * 5000))
    if a:
        p += json_error(a[0], "payload_too_large", 413)
        p += c.closed_after()
    c.close()
    named("body.content-length-over-limit-413", p)

    # A chunked body that passes the limit: 413 as soon as it does, and the
    # close, the rest unread (nginx's client_max_body_size); not parsed to its
    # last byte first (review s11 finding 4). The last chunk never comes.
    a, p, c = exchange(g.port, chunked_buy(BAD, b"1000\r\n" + big + b"\r\n1000\r\n" + big +
                                           b"\r\n"))
    if a:
        p += json_error(a[0], "payload_too_large", 413)
        p += c.closed_after()
    c.close()
    named("body.chunked-over-limit-413-before-the-end", p)

    # A routed GET announcing a body over the limit: 413 and the close, the body
    # never read (it was read and dropped to its end, then 200).
    for path in ("/healthz", "/v1/sales/%s" % OK):
        a, p, c = exchange(g.port, get_req(path, extra=b"Content-Length: 67108864\r\n"))
        if a:
            p += json_error(a[0], "payload_too_large", 413)
            p += c.closed_after()
        c.close()
        named("body.get-%s-content-length-over-limit-413" % path.split("/")[-1], p)
    # A chunked one passing the limit alike; a small body is still read and dropped.
    a, p, c = exchange(g.port, get_req("/healthz", extra=b"Transfer-Encoding: chunked\r\n") +
                       b"1000\r\n" + big + b"\r\n1000\r\n" + big + b"\r\n")
    if a:
        p += json_error(a[0], "payload_too_large", 413)
        p += c.closed_after()
    c.close()
    named("body.get-chunked-over-limit-413", p)
    a, p, c = exchange(g.port, get_req("/healthz", extra=b"Content-Length: 10\r\n") +
                       b"0123456789" + get_req("/healthz"), n=2)
    if a and [x.status for x in a] != [200, 200]:
        p.append("a small body on a GET: want 200, 200 on one connection, got %r" % a)
    c.close()
    named("body.get-small-body-read-and-dropped", p)

    def framing_case(name, headers, code, status, body=None):
        b = body if body is not None else json.dumps({"user_id": name}).encode()
        req = (b"POST /v1/sales/" + BAD.encode() + b"/orders HTTP/1.1\r\nHost: t\r\n"
               b"Content-Type: application/json\r\n" + headers + b"\r\n" + b)
        a, p, c = exchange(g.port, req)
        if a:
            p += json_error(a[0], code, status)
            p += c.closed_after()
        c.close()
        named(name, p)

    framing_case("body.cl-not-a-number", b"Content-Length: abc\r\n", "bad_request", 400)
    framing_case("body.cl-negative", b"Content-Length: -5\r\n", "bad_request", 400)
    framing_case("body.cl-plus-sign", b"Content-Length: +30\r\n", "bad_request", 400)
    framing_case("body.cl-too-large-number", b"Content-Length: 99999999999999999999999\r\n",
                 "payload_too_large", 413)
    # 20 digits past 2^64: llhttp stops one past the digit that overflowed
    framing_case("body.cl-2^64", b"Content-Length: 18446744073709551616\r\n", "payload_too_large", 413)
    framing_case("body.cl-20-nines", b"Content-Length: 99999999999999999999\r\n", "payload_too_large", 413)
    framing_case("body.cl-20-digits-then-junk", b"Content-Length: 99999999999999999999x\r\n",
                 "bad_request", 400)
    # Two Content-Lengths that differ, Content-Length beside Transfer-Encoding:
    # the classic request-smuggling frames (RFC 9112 6.3): refused, and the
    # connection closed (the body's end is unknown).
    body = json.dumps({"user_id": "two-cl"}).encode()
    framing_case("body.cl-two-different", b"Content-Length: %d\r\nContent-Length: %d\r\n" %
                 (len(body), len(body) + 40), "bad_request", 400, body=body)
    body = json.dumps({"user_id": "cl-te"}).encode()
    framing_case("body.cl-and-transfer-encoding", b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                 "bad_request", 400, body=b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    body = json.dumps({"user_id": "te-gzip"}).encode()
    framing_case("body.transfer-encoding-not-chunked", b"Transfer-Encoding: gzip, chunked\r\n",
                 "not_implemented", 501, body=b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    framing_case("body.transfer-encoding-twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                 "not_implemented", 501, body=b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    # The same frames on a proxied route: refused before the upstream hears of them.
    seen = len(Upstream.seen)
    for name, hdrs, code, status in (
            ("body.proxied-cl-two-different", b"Content-Length: 3\r\nContent-Length: 30\r\n", "bad_request", 400),
            ("body.proxied-cl-and-transfer-encoding", b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
             "bad_request", 400),
            ("body.proxied-transfer-encoding-not-chunked", b"Transfer-Encoding: gzip\r\n", "not_implemented", 501)):
        a, p, c = exchange(g.port, b"POST /v1/recs/smuggle HTTP/1.1\r\nHost: t\r\n" + hdrs +
                           b"\r\n3\r\nabc\r\n0\r\n\r\n")
        if a:
            p += json_error(a[0], code, status)
            p += c.closed_after()
        c.close()
        named(name, p)
    eq(len(Upstream.seen), seen, "the refused proxied frames never reached the upstream")
    # Paths that mean something else once decoded or normalised (a proxied
    # prefix escaped with dot segments, an encoded slash or NUL): 400 before
    # routing, and the upstream never hears of them.
    seen = len(Upstream.seen)
    for name, path in (("path.dot-dot", b"/v1/recs/../../internal/secret"),
                       ("path.dot-dot-encoded", b"/v1/recs/%2E%2E/%2e%2e/internal/secret"),
                       ("path.dot", b"/v1/recs/./x"),
                       ("path.trailing-dot-dot", b"/v1/recs/x/.."),
                       # Tomcat, Jetty and Spring cut ";..." from a segment
                       # first: /v1/recs/..;/x is /x to them
                       ("path.dot-dot-params", b"/v1/recs/..;/internal/secret"),
                       ("path.dot-dot-params-encoded", b"/v1/recs/%2e%2e%3Bjsessionid=1/x"),
                       ("path.dot-params", b"/v1/recs/.;x/y"),
                       ("path.encoded-slash", b"/v1/recs/a%2Fb"),
                       ("path.encoded-backslash", b"/v1/recs/..%5Cx"),
                       ("path.encoded-nul", b"/v1/recs/a%00b"),
                       ("path.encoded-nul-healthz", b"/healthz%00/../x"),
                       ("path.encoded-slash-buy", b"/v1/sales/" + OK.encode() + b"%2Forders")):
        a, p, c = exchange(g.port, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        if a:
            p += json_error(a[0], "bad_request", 400)
            p += c.closed_after()
        c.close()
        named(name, p)
    eq(len(Upstream.seen), seen, "the refused paths never reached the upstream")
    # dots inside a segment are plain characters
    a, p, c = exchange(g.port, b"GET /v1/recs/a.b/..c/.d/a;..;v=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    if a:
        if (a[0].status != 200 or
                json.loads(a[0].body).get("path") != "/v1/recs/a.b/..c/.d/a;..;v=1"):
            p.append("want 200 with the path as sent, got %r" % a[0])
    c.close()
    named("path.dots-inside-segments", p)
    # An upstream answering with more header fields than the gateway keeps
    # (128): a 502 naming it, not an answer with some of its fields dropped
    # unseen; the gateway lives.
    a, p, c = exchange(g.port, b"GET /v1/recs/many-headers HTTP/1.1\r\nHost: t\r\n\r\n")
    if a:
        p += json_error(a[0], "bad_gateway", 502)
        if b"too big a header block" not in a[0].body:
            p.append("want the reason in the 502, got %r" % a[0])
    c.close()
    a, p2, c = exchange(g.port, get_req("/healthz"))
    if a and a[0].status != 200:
        p2.append("want /healthz 200 after it, got %r" % a[0])
    c.close()
    named("proxy.upstream-many-headers", p + p2)
    # Header fields a client cannot be given as they are: a bare CR inside a
    # value, an obs-fold continuation. 502, nothing of them passed on.
    for name, path in (("proxy.upstream-bare-cr", b"/v1/recs/bare-cr"),
                       ("proxy.upstream-obs-fold", b"/v1/recs/folded")):
        a, p, c = exchange(g.port, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        if a:
            p += json_error(a[0], "bad_gateway", 502)
            if b"evil" in a[0].raw or b"folded" in a[0].raw:
                p.append("the upstream's field reached the client: %r" % a[0].raw[:200])
        c.close()
        named(name, p)
    # A long field (a JWT-sized Set-Cookie) passes whole; Proxy-* fields are
    # hop-by-hop and stay behind.
    a, p, c = exchange(g.port, b"GET /v1/recs/long-cookie HTTP/1.1\r\nHost: t\r\n\r\n")
    if a:
        if a[0].status != 200 or a[0].header("set-cookie") != "s=" + "c" * 2000 + "; Path=/":
            p.append("want 200 with the 2,000-byte Set-Cookie whole, got %r" % a[0])
        if a[0].header("proxy-status") is not None:
            p.append("Proxy-Status (hop-by-hop) reached the client: %r" % a[0])
    c.close()
    named("proxy.upstream-long-field", p)
    # Content-Length as RFC 9110 8.6 has it: a HEAD says the GET's (the
    # upstream's own: curl fetched no body), a 204 none; before, both said 0.
    head_len = len(json.dumps({"method": "HEAD", "path": "/v1/recs/h", "body": "", "pad": ""}))
    a, p, c = exchange(g.port, get_req("/v1/recs/h", method=b"HEAD"), head_only=True)
    if a and (a[0].status != 200 or a[0].header("content-length") != str(head_len)):
        p.append("HEAD: want 200 with Content-Length %d, got %r" % (head_len, a[0]))
    p += c.open_after()
    c.close()
    named("proxy.head-content-length", p)
    c = Conn(g.port)
    p = []
    try:
        c.send(get_req("/v1/recs/no-content") + get_req("/healthz"))
        a = c.read_answer(head_only=True)
        if a.status != 204 or a.header("content-length") is not None:
            p.append("want 204 without Content-Length, got %r" % a)
        b = c.read_answer()
        if b.status != 200:
            p.append("the next answer on the connection: %r" % b)
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("proxy.no-content-length-on-204", p)
    # A chunked body past proxy.max_body (1 MiB here): 413 and the connection
    # closes with the rest unread, as on the core routes; before, the proxied
    # route read on for as long as the client kept sending.
    c = Conn(g.port)
    p = []
    try:
        c.send(b"POST /v1/recs/flood HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"z" * 65536 + b"\r\n"
        sent = 0
        try:
            while sent < (4 << 20):  # 4 MiB at most: the gateway must stop us before
                c.send(chunk)
                sent += 65536
        except OSError:
            pass  # it stopped reading and closed: what we want
        a = c.read_answer()
        p += json_error(a, "payload_too_large", 413)
        p += c.closed_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("proxy.chunked-body-past-max", p)
    # The same frames on a GET route (a body is read and dropped there): the
    # bytes after them cannot be trusted either.
    for name, hdrs in (("body.get-route-cl-two-different", b"Content-Length: 3\r\nContent-Length: 30\r\n"),
                       ("body.get-route-cl-and-transfer-encoding",
                        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")):
        a, p, c = exchange(g.port, b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\n" + hdrs +
                           b"\r\n3\r\nabc\r\n0\r\n\r\n" + buy_req(BAD, "after-get-frame"))
        if a:
            p += json_error(a[0], "bad_request", 400)
            p += c.closed_after()
        c.close()
        named(name, p)
    # Equal duplicates too (RFC 9112 6.3 allows either answer; docs/api.md
    # says 400, as llhttp refuses any second Content-Length): refused
    # and closed, the buy never made.
    body = json.dumps({"user_id": "two-same-cl"}).encode()
    framing_case("body.cl-two-equal", b"Content-Length: %d\r\nContent-Length: %d\r\n" %
                 (len(body), len(body)), "bad_request", 400, body=body)

    # A body shorter than its Content-Length, then the client closes: nothing
    # happens (checked in the final state), and slow halves are not buys.
    for i in range(20):
        c = Conn(g.port)
        req = buy_req(BAD, "short-%d" % i)
        c.send(req[:len(req) - 1 - i % 10])
        if i % 2:
            c.s.shutdown(socket.SHUT_WR)
        c.close()

    # ---------------- heads ----------------
    def head_case(name, req, code, status, extra_chk=None):
        a, p, c = exchange(g.port, req)
        if a:
            p += json_error(a[0], code, status)
            if extra_chk:
                p += extra_chk(a[0])
            if not p:
                p += c.closed_after()
        c.close()
        named(name, p)

    head_case("head.uri-too-long", b"GET /v1/sales/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
              "uri_too_long", 414)
    head_case("head.header-too-long", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A: " + b"b" * 9000 +
              b"\r\n\r\n", "headers_too_large", 431)
    # A head that fills the 8 KiB read buffer exactly, its final CRLF not in
    # (the buffer is full, nothing parsed is a complete head): 431, not a close.
    line = b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A: "
    head_case("head.fills-read-buffer-431", line + b"b" * (8192 - len(line) - 2) + b"\r\n",
              "headers_too_large", 431)
    line = b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A: "
    head_case("head.fills-read-buffer-431-cr", line + b"b" * (8192 - len(line) - 3) + b"\r\n\r",
              "headers_too_large", 431)
    head_case("head.many-headers-too-long", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\n" +
              b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 60) for i in range(200)) + b"\r\n",
              "headers_too_large", 431)
    head_case("head.malformed-request-line", b"GARBAGE\r\n\r\n", "bad_request", 400)
    head_case("head.no-colon", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
              "bad_request", 400)
    head_case("head.empty-header-name", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\n: x\r\n"
              b"Connection: close\r\n\r\n", "bad_request", 400)
    head_case("head.space-before-colon", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n",
              "bad_request", 400)
    # obs-fold (RFC 9112 5.2: refuse or replace with SP): refused, and the
    # upstream of a proxied route never gets the value cut with its CRLF.
    seen = len(Upstream.seen)
    head_case("head.obs-fold-400", b"GET /v1/recs/fold HTTP/1.1\r\nHost: t\r\nX-A: first\r\n"
              b"  second-part-of-value\r\n\r\n", "bad_request", 400)
    eq(len(Upstream.seen), seen, "the folded header never reached the upstream")
    head_case("head.bare-cr", b"GET /v1/sales/ok HTTP/1.1\rHost: t\r\n\r\n", "bad_request", 400)
    # A bare CR inside a header line: 400, and never passed on to an upstream
    # (one that reads it as a line end would see a header the client made up).
    seen = len(Upstream.seen)
    head_case("head.bare-cr-in-header-line", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A: a\rX-B: b\r\n\r\n",
              "bad_request", 400)
    head_case("head.bare-cr-in-proxied-header-line",
              b"GET /v1/recs/cr HTTP/1.1\r\nHost: t\r\nX-A: a\rX-Injected: 1\r\n\r\n", "bad_request", 400)
    eq(len(Upstream.seen), seen, "a header line with a bare CR never reached the upstream")
    # obs-fold (a header line continued on the next one): 400, on a GET route
    # and on a proxied one, whose upstream never hears of it.
    head_case("head.obs-fold", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
              "bad_request", 400)
    seen = len(Upstream.seen)
    a, p, c = exchange(g.port, b"GET /v1/recs/fold HTTP/1.1\r\nHost: t\r\nX-A: a\r\n X-Injected: 1\r\n\r\n")
    if a:
        p += json_error(a[0], "bad_request", 400)
    c.close()
    if len(Upstream.seen) != seen:
        p.append("the upstream got %r" % (Upstream.seen[seen:],))
    named("head.obs-fold-proxied", p)
    # obs-fold after an EMPTY first line: llhttp 8.1 skips the CRLF and the
    # fold's whitespace as leading OWS and reads "chunked" / "30" as the value;
    # a front end that does not unfold frames the body otherwise. 400, closed,
    # no order (the sale is checked unchanged at the end).
    body = json.dumps({"user_id": "fold-te"}).encode()
    head_case("head.obs-fold-empty-first-line-te",
              b"POST /v1/sales/" + BAD.encode() + b"/orders HTTP/1.1\r\nHost: t\r\n"
              b"Content-Type: application/json\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" +
              b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", "bad_request", 400)
    body = json.dumps({"user_id": "fold-cl"}).encode()
    head_case("head.obs-fold-empty-first-line-cl",
              b"POST /v1/sales/" + BAD.encode() + b"/orders HTTP/1.1\r\nHost: t\r\n"
              b"Content-Type: application/json\r\nContent-Length:\r\n %d\r\n\r\n" % len(body) +
              body, "bad_request", 400)
    # ... while an empty value (no fold after it) is a value like any other
    a, p, c = exchange(g.port, b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-Empty:\r\n"
                       b"X-Blank: \r\nX-Last:\r\n\r\n")
    if a and a[0].status != 200:
        p.append("want 200, got %r" % a[0])
    c.close()
    named("head.empty-values-served", p)
    head_case("head.obs-fold-empty-first-line-tab",
              b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A:\r\n\tb\r\n\r\n", "bad_request", 400)
    head_case("head.two-host-headers", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
              "bad_request", 400)
    head_case("head.nul-in-header", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
              "bad_request", 400)
    head_case("head.nul-in-uri", b"GET /v1/sales/ok\x00x HTTP/1.1\r\nHost: t\r\n\r\n",
              "bad_request", 400)
    head_case("head.http2", b"GET /v1/sales/ok HTTP/2.0\r\nHost: t\r\n\r\n",
              "http_version_not_supported", 505)
    head_case("head.h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "http_version_not_supported", 505)
    head_case("head.http09", b"GET /v1/sales/ok\r\n\r\n", "bad_request", 400)

    # A later HTTP/1.x minor version: llhttp (the public listener's parser)
    # parses 1.0 and 1.1 only, as RFC 9110 2.5 allows ("SHOULD" serve it as 1.1).
    head_case("head.http1x-505", b"GET /v1/sales/ok HTTP/1.9\r\nHost: t\r\n\r\n",
              "http_version_not_supported", 505)
    # Host (RFC 9112 3.2: 400 for an invalid value; RFC 3986 3.2.2 host [":" port])
    for i, bad in enumerate((b"exa mple.com", b"a/b", b"t:8o", b"[::1", b"[zz::1]:80", b"t@u",
                             b"t:80:80", b"\"t\"", b"t\tu")):
        head_case("head.host-invalid-400-%d" % i,
                  b"GET /v1/sales/ok HTTP/1.1\r\nHost: " + bad + b"\r\n\r\n", "bad_request", 400)
    for i, good in enumerate((b"example.com", b"example.com:8080", b"127.0.0.1:1", b"[::1]:80",
                              b"[::1]", b"t:", b"xn--bcher-kva.example", b"a_b~c!$&'()*+,;=%41",
                              b"[v1.fe80::a+en1]")):
        a, p, c = exchange(g.port, b"GET /v1/sales/ok HTTP/1.1\r\nHost: " + good +
                           b"\r\nConnection: close\r\n\r\n")
        if a and a[0].status != 200:
            p.append("Host %r: want 200, got %r" % (good, a[0]))
        c.close()
        named("head.host-valid-served-%d" % i, p)
    # Served as documented: no Host.
    for name, req in (("head.no-host-served", b"GET /v1/sales/ok HTTP/1.1\r\nConnection: close\r\n\r\n"),):
        a, p, c = exchange(g.port, req)
        if a:
            if a[0].status != 200 or (a[0].json() or {}).get("sale_id") != OK:
                p.append("want the sale info, got %r" % a[0])
            p += c.closed_after()
        c.close()
        named(name, p)

    # Bare LF line ends in the header lines: 400 (RFC 9112 2.2: a recipient MAY
    # read a bare LF as a line end; llhttp, strict, does not, as a bare CR).
    head_case("head.bare-lf-line-ends-400", b"GET /v1/sales/ok HTTP/1.1\nHost: t\nConnection: close\n\n",
              "bad_request", 400)
    # ... and ending the request line, the head's final empty line, a chunked
    # body's trailer section (llhttp 8.1 takes a bare LF there: a proxy in
    # front that splits on CRLF would frame the bytes after it otherwise).
    head_case("head.bare-lf-request-line-400", b"GET /v1/sales/ok HTTP/1.1\nHost: t\r\n\r\n",
              "bad_request", 400)
    head_case("head.bare-lf-head-end-400", b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\n\n" +
              get_req("/healthz"), "bad_request", 400)
    head_case("head.bare-lf-head-end-no-header-400", b"GET /v1/sales/ok HTTP/1.1\r\n\n",
              "bad_request", 400)
    # found a few bytes past the spans (the last field's name when its value
    # is empty, the URL's when there is no field)
    head_case("head.bare-lf-head-end-empty-value-400",
              b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nX-Empty:\r\n\n" + get_req("/healthz"),
              "bad_request", 400)
    head_case("head.bare-lf-request-line-no-header-400", b"GET /v1/sales/ok HTTP/1.1\n\r\n",
              "bad_request", 400)
    body = json.dumps({"user_id": "trailer-lf"}).encode()
    head_case("body.trailer-bare-lf-end-400",
              chunked_buy(BAD, b"%x\r\n" % len(body) + body + b"\r\n0\r\n\n").replace(
                  b"Connection: close\r\n", b"") + get_req("/healthz"), "bad_request", 400)
    # Versions of other protocols llhttp parses (RTSP, ICE): not HTTP, 400.
    head_case("head.rtsp-version-400", b"GET /v1/sales/ok RTSP/1.1\r\nHost: t\r\n\r\n" +
              get_req("/healthz"), "bad_request", 400)
    head_case("head.ice-version-400", b"SOURCE /v1/sales/ok ICE/1.0\r\n\r\n", "bad_request", 400)
    # CONNECT: 400, and the close (a client may send the tunnel's bytes at once).
    head_case("head.connect-400-closes", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n" +
              get_req("/healthz"), "bad_request", 400)

    # A head that leaves less than 1 KiB of the 8 KiB buffer for a longer body
    # (read a few bytes at a time behind it, ~280x the CPU per byte): 431.
    pad = b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\nX-Pad: "
    head_case("head.big-head-long-body-431", pad + b"p" * (8100 - len(pad) - 4) + b"\r\n\r\n" +
              b"x" * 20000, "headers_too_large", 431)
    # (the body under server.body_limit, 4 KiB: a longer one is 413 and the close)
    pad = b"GET /v1/sales/ok HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\nX-Pad: "
    a, p, c = exchange(g.port, pad + b"p" * (7000 - len(pad) - 4) + b"\r\n\r\n" + b"x" * 4000 +
                       get_req("/healthz"), n=2)
    if len(a) == 2 and (a[0].status != 200 or a[1].status != 200):
        p.append("want 200, 200, got %r" % a)
    c.close()
    named("head.7k-head-long-body-served", p)

    # Connection options and versions.
    # HTTP/1.0 with a Transfer-Encoding (RFC 9112 6.1: faulty framing, close
    # after the answer), HTTP/1.0 with keep-alive and close (close wins).
    body = b"{}"  # read and refused (no user_id): the garbage's sale stays unchanged
    for name, req in (
            ("conn.http10-chunked-closes",
             b"POST /v1/sales/" + BAD.encode() + b"/orders HTTP/1.0\r\nConnection: keep-alive\r\n"
             b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
             b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"),
            ("conn.http10-keepalive-and-close-closes",
             get_req("/v1/sales/ok", version=b"HTTP/1.0",
                     extra=b"Connection: keep-alive\r\nConnection: close\r\n"))):
        a, p, c = exchange(g.port, req + get_req("/healthz"))
        if a:
            if a[0].header("connection") != "close":
                p.append("Connection %r, want close" % a[0].header("connection"))
            p += c.closed_after()
        c.close()
        named(name, p)
    # An Upgrade offer (h2c, as curl --http2 sends on http://) is ignored:
    # answered over HTTP/1.1, the connection goes on (RFC 9110 7.8).
    h2c = (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n")
    a, p, c = exchange(g.port, get_req("/v1/sales/ok", extra=h2c) + buy_req(OK, "h2c-offer", extra=h2c) +
                       get_req("/healthz"), n=3)
    if len(a) == 3:
        if a[0].status != 200 or (a[0].json() or {}).get("sale_id") != OK:
            p.append("want the sale info, got %r" % a[0])
        p += accepted_buy(a[1], what="buy with an h2c offer")
        if a[2].status != 200:
            p.append("the next request: %r" % a[2])
        p += c.open_after()
    c.close()
    named("head.upgrade-offer-ignored", p)
    # An absolute-form target (RFC 9112 3.2.2: a server MUST accept it): its path.
    a, p, c = exchange(g.port, b"GET http://t/v1/sales/ok HTTP/1.1\r\nHost: t\r\n\r\n" +
                       b"GET HTTPS://T:8080/v1/sales/ok?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", n=2)
    for x in a:
        if x.status != 200 or (x.json() or {}).get("sale_id") != OK:
            p.append("want the sale info, got %r" % x)
    c.close()
    named("head.absolute-form-target", p)

    # Unknown and wrong methods on known routes: 405 with Allow, connection kept.
    for name, req, allow in (
            ("head.unknown-method-405", get_req("/v1/sales/" + OK, method=b"BREW"), "GET, HEAD"),
            ("head.delete-sale-405", get_req("/v1/sales/" + OK, method=b"DELETE"), "GET, HEAD"),
            ("head.get-buy-405", get_req("/v1/sales/%s/orders" % BAD), "POST"),
            ("head.put-buy-405", buy_req(BAD, "put-buy").replace(b"POST", b"PUT", 1), "POST")):
        a, p, c = exchange(g.port, req + get_req("/healthz"), n=2)
        if a:
            p += json_error(a[0], "method_not_allowed", 405)
            if a[0].header("allow") != allow:
                p.append("Allow %r, want %r" % (a[0].header("allow"), allow))
        if len(a) == 2 and a[1].status != 200:
            p.append("the next request on the connection: %r" % a[1])
        c.close()
        named(name, p)

    # The asterisk form: OPTIONS * asks about the server (200 with Allow); any
    # other method with it is a bad request. The connection stays open.
    a, p, c = exchange(g.port, get_req("*", method=b"OPTIONS") + get_req("/healthz"), n=2)
    if a:
        if a[0].status != 200 or a[0].header("allow") != "GET, HEAD, POST":
            p.append("OPTIONS *: want 200 with Allow: GET, HEAD, POST, got %r" % a[0])
    if len(a) == 2 and a[1].status != 200:
        p.append("the next request on the connection: %r" % a[1])
    c.close()
    named("head.options-asterisk", p)
    a, p, c = exchange(g.port, get_req("*") + get_req("/healthz"), n=2)
    if a:
        p += json_error(a[0], "bad_request", 400)
    if len(a) == 2 and a[1].status != 200:
        p.append("the next request on the connection: %r" % a[1])
    c.close()
    named("head.get-asterisk-400", p)

    # A body on a route answered from its head (404), arriving in two reads
    # (the pause only makes two reads likely, it is not a timing check): the
    # body is read and dropped and the next request on the connection is
    # answered (gw_h1.c once answered before the body's end, then the parser
    # paused with no request: the worker spun at 100% and answered nothing).
    for name, first, rest in (
            ("body.404-body-in-two-reads-then-next",
             b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345", b"67890"),
            ("body.404-large-body-in-two-reads-then-next",
             b"POST /v1/sale/s1/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             b"Content-Length: 2000\r\n\r\n" + b"x" * 1400, b"y" * 600)):
        c = Conn(g.port)
        p = []
        try:
            c.send(first)
            time.sleep(0.3)
            c.send(rest + get_req("/readyz"))
            p += json_error(c.read_answer(), "not_found", 404)
            a = c.read_answer()
            if a.status != 200:
                p.append("/readyz after the dropped body: %r" % a)
            p += c.open_after()
        except (Problem, OSError) as e:
            p.append(str(e))
        c.close()
        named(name, p)
    # Expect: 100-continue on a route answered from its head: no 100, the
    # answer, then the close (the client may never send the body; if it did,
    # it must not be read as the next request).
    c = Conn(g.port)
    p = []
    try:
        c.send(b"POST /nope HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 40\r\n\r\n")
        p += json_error(c.read_answer(), "not_found", 404)
        p += c.closed_after()
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("body.404-expect-continue-closes", p)

    # HEAD of a GET route: the GET's headers (its Content-Length), no body,
    # and the next answer starts right after the head.
    full = exchange(g.port, get_req("/v1/sales/" + OK, close=True))[0]
    a, p, c = exchange(g.port, get_req("/v1/sales/" + OK, method=b"HEAD") + get_req("/healthz", close=True),
                       n=2, head_only=True)
    if len(a) == 2 and full:
        if a[0].status != 200:
            p.append("HEAD: %r" % a[0])
        if a[0].header("content-length") != full[0].header("content-length"):
            p.append("HEAD Content-Length %r, GET's %r" % (a[0].header("content-length"),
                                                           full[0].header("content-length")))
        if a[1].status != 200 or a[1].json() != {"status": "alive"}:
            p.append("answer after the HEAD: %r (a body after the HEAD's head?)" % a[1])
        p += c.closed_after()
    c.close()
    named("head.head-of-get-route-no-body", p)

    # ---------------- half-close ----------------
    # The client sends its requests and shuts its side down (shutdown(SHUT_WR),
    # `printf ... | nc`): what it sent complete is still answered, then the
    # connection closes (gw_h1.c once closed at the EOF, dropping a request
    # held on the upstream, and a buy accepted on the fsync lost its 202).
    def half_close(name, data, checks):
        c = Conn(g.port)
        p = []
        i = 0
        try:
            c.send(data)
            c.s.shutdown(socket.SHUT_WR)
            for i, chk in enumerate(checks):
                p += ["answer %d: %s" % (i, x) for x in chk(c.read_answer())]
            p += c.closed_after()
        except (Problem, OSError) as e:
            p.append("after %d answers: %s" % (i, e))
        c.close()
        named(name, p)

    half_close("halfclose.held-proxied-request-answered",
               get_req("/v1/recs/slow/1", close=True), [proxied("/v1/recs/slow/1")])
    half_close("halfclose.pipelined-behind-held-answered",
               get_req("/v1/recs/slow/2") + buy_req(OK, "half-close-1") + get_req("/healthz"),
               [proxied("/v1/recs/slow/2"), lambda a: accepted_buy(a, what="buy after a held request"),
                lambda a: [] if a.status == 200 else ["healthz: %r" % a]])
    half_close("halfclose.cut-request-dropped",
               get_req("/v1/recs/slow/3") + buy_req(BAD, "half-cut")[:-3],
               [proxied("/v1/recs/slow/3")])

    # An unknown method cut before its end, then the client's FIN: the method's
    # end never comes, so the connection closes at once (it once waited for
    # the head deadline, 10 s, holding its slot and its per-IP count).
    c = Conn(g.port)
    p = []
    try:
        c.send(b"FOOBAR")
        time.sleep(0.2)
        c.s.shutdown(socket.SHUT_WR)
        p += c.closed_after(timeout=3)
    except (Problem, OSError) as e:
        p.append(str(e))
    c.close()
    named("halfclose.cut-unknown-method-closes", p)

    # ---------------- memory per idle connection ----------------
    # 64 keep-alive connections, each after a 900 KiB proxied answer, idle:
    # the output buffer that answer needed goes back once it is written
    # (it once stayed for the connection's life: +1 MiB each). A memory
    # bound, not a timing check: at most 16 MiB more for the 64 of them.
    def rss_kb():
        with open("/proc/%d/status" % g.proc.pid) as f:
            return int([ln for ln in f if ln.startswith("VmRSS:")][0].split()[1])

    rss0 = rss_kb()
    held = []
    p = []
    try:
        for i in range(64):
            c = Conn(g.port)
            held.append(c)
            c.send(get_req("/v1/recs/big"))
            a = c.read_answer()
            if a.status != 200 or len(a.body) < 900 * 1024:
                p.append("big answer %d: %r (%d bytes)" % (i, a, len(a.body)))
                break
        grown = rss_kb() - rss0
        print("RSS +%d KiB for 64 idle connections after a 900 KiB answer each" % grown, flush=True)
        with open("/proc/%d/maps" % g.proc.pid) as f:
            # ASan's quarantine keeps freed memory (256 MiB): the bound holds
            # in the dev stage's run, the answers are checked in every stage
            sanitized = "libasan" in f.read()
        if sanitized:
            print("memory bound not applied under ASan (freed memory is quarantined)", flush=True)
        elif grown > 16 * 1024:
            p.append("RSS grew by %d KiB with 64 idle connections after a 900 KiB answer each" % grown)
    except (Problem, OSError) as e:
        p.append(str(e))
    for c in held:
        c.close()
    named("memory.large-answer-buffer-released", p)

    # ---------------- out of file descriptors ----------------
    # The gateway's descriptor limit lowered to what it holds + 10, then
    # connections held until accept fails with EMFILE (they wait in the
    # queue). The worker must not spin on the readable socket (it did: a
    # warning per accept, 1.8M lines in 6 s): the warning comes at most once
    # a second per worker (a count bound, not a timing check: the hold is
    # ~1 s, two workers), and once the connections go and the limit is back
    # it serves new connections.
    import resource
    pid = g.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    log_before = open(g.log_path, "rb").read().count(b"out of file descriptors")
    held = []
    p = []
    def warnings():
        with open(g.log_path, "rb") as f:
            return f.read().count(b"out of file descriptors") - log_before

    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir("/proc/%d/fd" % pid)) + 10, hard))
        # connections until accept fails (descriptors the earlier checks'
        # connections still held may be freed meanwhile: bounded at 300)
        while len(held) < 300 and warnings() == 0:
            for i in range(10):
                held.append(Conn(g.port))
            time.sleep(0.05)
        time.sleep(1.0)  # accepts fail meanwhile (not a timing check)
    except OSError as e:
        p.append(str(e))
    finally:
        for c in held:
            c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    warned = warnings()
    if warned == 0:
        p.append("no 'out of file descriptors' warning: the limit did not bite (test broken)")
    if warned > 10:
        p.append("%d 'out of file descriptors' warnings in ~1 s: the accept loop spins" % warned)
    for i in range(6):  # new connections, whichever worker takes them
        a, q, c = exchange(g.port, get_req("/readyz", close=True))
        c.close()
        if q or not a or a[0].status != 200:
            p.append("readyz %d after the descriptors came back: %r %r" % (i, a, q))
            break
    named("accept.out-of-descriptors-no-spin", p)

    # ---------------- after all the garbage ----------------
    time.sleep(0.3)  # the short bodies' closes reach the gateway (not a timing check)
    check(g.alive(), "the gateway is still running")
    after_bad = sale_state(BAD)
    eq(after_bad, before_bad, "sale %s (the garbage's target) is unchanged" % BAD)
    ok_state = sale_state(OK)
    eq(ok_state["accepted_orders"], accepted[0],
       "sale %s holds exactly the orders the test saw accepted" % OK)
    a, p, c = exchange(g.port, buy_req(OK, "last-buyer", close=True))
    c.close()
    check(not p and a and accepted_buy(a[0]) == [], "still sells after everything: %r %r" % (a, p))
    print("known deviations of this listener (%d): %s" % (len(DEVIATIONS_SEEN), ", ".join(DEVIATIONS_SEEN)))
    # a sanitizer's report (ASan build) makes the exit code non-zero
    eq(g.stop(), 0, "flashgate exits 0 on SIGTERM")

    # An answer given after a wait (an upstream, 2.5 s here) starts its
    # connection's idle deadline (2 s) from the answer, not from the last
    # read: the deadline once came from the loop's clock of that read, already
    # past, and the guard closed the connection right after the answer (the
    # client's next request on it got no answer).
    g2 = Gateway(*NOLIMITS, "--server-connection-timeout", "2s", "--server-head-timeout", "1s",
                 "--proxy-routes", ROUTES).start()
    try:
        c = Conn(g2.port)
        p = []
        try:
            c.send(get_req("/v1/recs/slow-2500"))
            p += ["slow answer: %s" % x for x in proxied("/v1/recs/slow-2500")(c.read_answer())]
            p += c.open_after(timeout=1.0)
            c.send(get_req("/healthz"))
            a = c.read_answer()
            if a.status != 200:
                p.append("next request on the connection: %r" % a)
        except (Problem, OSError) as e:
            p.append(str(e))
        c.close()
        named("keepalive.idle-deadline-from-a-waited-answer", p)
        eq(g2.stop(), 0, "the second flashgate exits 0 on SIGTERM")
    finally:
        g2.cleanup()
finally:
    g.cleanup()
    up.shutdown()
finish()
