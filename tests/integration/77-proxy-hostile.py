"""Proxied routes behind an upstream that misbehaves on purpose: a raw-socket
server in this test, one behaviour per path (the part after the route's prefix).

- a status outside 200..599 (a 101 whose "body" is a forged next response,
  600, 999) is a failed exchange (502), never passed on, and the keep-alive
  connection's next answer is the gateway's own;
- the trailer fields of a chunked answer never reach the client's header
  section (an upstream could set cookies there), not even after a trailer
  line that starts like a status line ("HTTP/1.1: x", which curl passes on
  as a field), while the head of a final answer after a 103 still passes,
  without the 103's fields; such a line inside a head is an invalid field;
- hop-by-hop removal reads every Connection field, not the first (request)
  or the last (answer);
- an answer past proxy.max_body (the gateway's own policy) is a 502 but
  neither a breaker failure nor a drop for the route's adaptive limit: a
  client asking for large objects cannot open the breaker for everyone;
- an answer that announces a body past proxy.max_body is refused at its
  head, not read while it trickles until the route's timeout;
- libcurl takes no proxy from the gateway's environment (http_proxy,
  ALL_PROXY): a route to a port where nothing listens is a 502, not an
  answer from the proxy the environment names;
- a GET or HEAD that announces a body (Content-Length or chunked) is a 400
  and the close, the body unread: dropped, it was lost under a 2xx, and
  forwarded, an upstream reading no GET body takes it for the next request;
  a DELETE's body reaches the upstream with its length;
- X-Forwarded-For is the peer alone from a client (its own list is made
  up), a trusted proxy's fields joined whole with the peer appended;
- X-Real-IP is the client address the gateway decided on (the peer, or
  behind a trusted proxy the right-most untrusted X-Forwarded-For entry),
  never the client's, and the client's Forwarded never reaches the upstream;
- the other fields an upstream takes for the client's address, scheme, port
  or path (X-Client-IP, True-Client-IP, CF-Connecting-IP,
  X-Cluster-Client-IP, X-Forwarded-Server/-Prefix, X-Original-URL,
  X-Rewrite-URL, also spelt with underscores) never reach it from a
  client; X-Forwarded-Proto is http and the client's X-Forwarded-Port and
  X-Forwarded-Ssl are dropped, unless the peer is a trusted proxy (it ended
  TLS): then its right-most valid value of each is kept; X-Forwarded-Host
  is the Host asked for (an absolute-form target's host, which must read as
  a host, rather than the Host field), or a trusted proxy's right-most one
  if it reads as a host;
- on a dual-stack listener an IPv4 client's X-Forwarded-For entry is the
  address X-Real-IP names (1.2.3.4, not ::ffff:1.2.3.4);
- a route's prefix matches whole path segments: /seg takes /seg and
  /seg/..., never /segadmin;
- a Host that does not read as a host (a path, markup, blanks, empty) and
  an HTTP/1.1 request without one are a 400: the upstream builds links and
  reset mails from X-Forwarded-Host;
- OPTIONS (a CORS preflight) is proxied like the other methods: without a
  body unless one is sent, then with it and its length;
- a request field with an empty value reaches the upstream, empty (curl
  read "Name: " as "remove this field": X-Empty was lost, and an empty
  Accept only removed curl's own);
- bytes an upstream sends past its answer's end (a body to a HEAD, more
  than its Content-Length), after curl kept the connection, are never read
  as another client's answer: the kept connection is refused before the
  next request goes on it, and that request goes on a fresh one;
- a POST or PATCH whose kept upstream connection dies after the upstream
  read it, before any byte of the answer, is a 502, never sent again
  (libcurl re-sends any request then: one the upstream acted on was done
  twice); a PUT is sent again on a new connection;
- an upstream that closes mid-body, sends no status line or two different
  Content-Lengths is a 502 that says so (not "unreachable"); its
  X-Flashgate-Degraded is not passed on; libcurl adds no Accept or
  Content-Type the client did not send;
- a half-open breaker sends one probe: a straggler from before it opened
  whose client goes away does not free the probe's place for a second one."""
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, free_port, need_binary, serve_raw  # noqa: E402
from fleet import wait_for  # noqa: E402

need_binary("flashgate")


def read_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return None, b""
        buf += d
    return buf.split(b"\r\n\r\n", 1)


FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Forged: yes\r\n\r\nforged"
STRAY_SENT = threading.Event()
# "once": the requests the upstream read, by method; it answers none the first time
ONCE_SEEN = {}


def serve(c):
    """One upstream connection: answers by the path's second segment."""
    try:
        c.settimeout(10)
        while True:
            head, rest = read_head(c)
            if head is None:
                return
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    while len(rest) < int(v):
                        rest += c.recv(65536)
            parts = target.split("/")
            what = (parts[2] if len(parts) > 2 else "") if target.startswith("/") else "absolute"
            if what == "ok":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Upstream: yes\r\n\r\nok")
            elif what == "s101f":
                # curl ends with a 101 it did not ask for; its "body" (read until
                # the close) is a forged response for the client's next request
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
                          b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Injected: yes\r\n\r\nforged")
                return
            elif what == "trailer":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Evil\r\n"
                          b"X-Head: yes\r\n\r\n5\r\nhello\r\n0\r\n"
                          b"X-Evil: from-trailer\r\nSet-Cookie: sid=attacker\r\n\r\n")
            elif what == "trailerhttp":
                # a trailer field whose line starts "HTTP/" (curl 7.88 takes
                # it as a field, name "HTTP/1.1"): taken for the status line
                # of a new answer, it made the trailer's fields the head's
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: yes\r\n\r\n"
                          b"5\r\nhello\r\n0\r\nHTTP/1.1: 200 OK\r\n"
                          b"Set-Cookie: sid=attacker\r\n\r\n")
            elif what == "headhttp":  # the same line inside the head: no token name
                c.sendall(b"HTTP/1.1 200 OK\r\nSet-Cookie: real=1\r\nHTTP/1.1: 200 OK\r\n"
                          b"Content-Length: 2\r\n\r\nok")
            elif what == "once":
                # reads the request (and would act on it), then its
                # connection dies before the answer: the first time for each
                # method, then it answers
                method = head.split(b" ", 1)[0].decode()
                ONCE_SEEN[method] = ONCE_SEEN.get(method, 0) + 1
                if ONCE_SEEN[method] == 1:
                    return
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            elif what == "s103":
                c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                          b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Final: yes\r\n\r\n"
                          b"2\r\nok\r\n0\r\nX-Evil: from-trailer\r\n\r\n")
            elif what == "echo":  # the head as received, as the body
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(head) + head)
            elif what == "echob":  # the head and the body as received
                got = head + b"\r\n\r\n" + rest
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(got) + got)
            elif what == "conn2":
                c.sendall(b"HTTP/1.1 200 OK\r\nConnection: X-Secret-A\r\nConnection: keep-alive\r\n"
                          b"X-Secret-A: hop-by-hop\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
            elif what == "huge":  # 1 MiB, past the gateway's proxy.max_body
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 20))
                for _ in range(16):
                    c.sendall(b"x" * 65536)
            elif what == "trickle":  # announces 10 GB, sends 5 bytes, then nothing
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\nhello")
                time.sleep(5)
                return
            elif what == "bighead":  # a HEAD's length is the GET's: nothing comes
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
            elif what == "status":
                c.sendall(b"HTTP/1.1 %s Whatever\r\nContent-Length: 2\r\n\r\nok" %
                          target.split("/")[3].encode())
            elif what == "hang":  # answers within the route's timeout, but late
                time.sleep(4)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            elif what == "fail":
                c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
            elif what in ("headbody", "late"):
                # an answer, then (once curl has taken it and kept the
                # connection) a whole forged response: a body to a HEAD, or
                # bytes past a Content-Length
                if what == "headbody" and head.startswith(b"HEAD"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(FORGED))
                else:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                time.sleep(0.2)  # the misbehaviour: late, after the answer's end
                c.sendall(FORGED)
                STRAY_SENT.set()
            elif what == "midbody":  # closes 7 bytes into a 100-byte body
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                return
            elif what == "nostatus":
                c.sendall(b"garbage\r\n\r\n")
                return
            elif what == "dupcl":  # which one frames the body?
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello")
                return
            elif what == "samecl":  # the same length twice: unambiguous
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
            elif what == "degraded":  # the gateway's own mark, from the upstream
                c.sendall(b"HTTP/1.1 200 OK\r\nX-Flashgate-Degraded: 1\r\nContent-Length: 2\r\n\r\nok")
            elif what == "absolute":  # asked as a proxy (absolute-form target)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nvia-proxy")
            else:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass
    finally:
        c.close()


up_port = serve_raw(serve, 128)
up = "http://127.0.0.1:%d" % up_port
# its own host, so that curl keeps one connection to it: the one the test poisons
up_kept = "http://127.0.0.1:%d" % serve_raw(serve, 128)
routes = [{"prefix": "/bad/", "upstream": up, "timeout_ms": 2000},
          {"prefix": "/p/", "upstream": up, "timeout_ms": 2000},
          {"prefix": "/h/", "upstream": up, "timeout_ms": 2000},
          {"prefix": "/b/", "upstream": up, "timeout_ms": 8000},
          {"prefix": "/k/", "upstream": up_kept, "timeout_ms": 2000},
          {"prefix": "/seg", "upstream": up, "timeout_ms": 2000},
          {"prefix": "/f/", "upstream": up, "timeout_ms": 2000},
          # its own host: the kept connection a request goes on is this test's
          {"prefix": "/o/", "upstream": "http://127.0.0.1:%d" % serve_raw(serve, 128),
           "timeout_ms": 2000}]
g = Gateway("--kafka-brokers", "none", "--proxy-routes", json.dumps(routes),
            "--proxy-breaker-failures", "3", "--proxy-breaker-cooldown", "300ms",
            "--set", "proxy.max_body=64k",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()


class Client:
    """A raw keep-alive connection to the gateway that frames answers as an
    HTTP/1.1 client does: a 1xx, 204 or 304 ends at its head, else
    Content-Length, else chunked, else the close. Bytes past an answer stay
    for the next one (an answer that lies about its end shows up there)."""

    def __init__(self):
        self.sk = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        self.buf = b""

    def _fill(self):
        d = self.sk.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def ask(self, path, extra=b""):
        """(status, [(name, value)], body) of a GET of path; extra: more head lines."""
        self.sk.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), extra))
        return self.answer()

    def answer(self, head_only=False):
        """(status, [(name, value)], body) of the next answer; head_only: to a HEAD."""
        status = int(self._line().split(b" ")[1])
        hdrs = []
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.partition(b":")
            hdrs.append((k.decode().lower(), v.strip().decode()))
        h = dict(hdrs)
        if head_only or status < 200 or status in (204, 304):
            body = b""
        elif "content-length" in h:
            body = self._take(int(h["content-length"]))
        elif h.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                n = int(self._line().split(b";")[0], 16)
                if n == 0:
                    while self._line():
                        pass
                    break
                body += self._take(n)
                self._take(2)
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return status, hdrs, body

    def closed(self):
        """True if the gateway closes the connection with nothing more to read."""
        self.sk.settimeout(2)
        try:
            self._fill()
        except (EOFError, ConnectionResetError):
            return self.buf == b""
        except socket.timeout:  # still open, waiting for more
            pass
        return False

    def close(self):
        self.sk.close()


def field(body, key):
    """body's JSON field key, or None if body is not a JSON object."""
    try:
        return json.loads(body).get(key)
    except (ValueError, AttributeError):
        return None


def upstream_fields(head):
    """[(name, value)] of the request head an echo upstream answered with."""
    return [(k.strip().lower(), v.strip()) for k, _, v in
            (line.decode().partition(":") for line in head.split(b"\r\n")[1:])]


def up_stats(route):
    return g.admin("GET", "/admin/v1/stats").json["overload"]["limits"]["upstream:" + route]


def hold(path):
    """A connection whose request waits on the upstream."""
    sk = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    sk.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    return sk


def reset(sk):
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sk.close()


def ask(path, extra=b""):
    c = Client()
    try:
        return c.ask(path, extra)
    finally:
        c.close()


try:
    # ---- statuses outside 200..599 ----
    c = Client()
    st, _, body = c.ask("/bad/s101f")
    eq(st, 502, "an upstream's 101 is a failed exchange")
    check(b"sent an invalid status" in body, "and says why: %r" % body[:200])
    try:
        st, hdrs, body = c.ask("/healthz")
    except (EOFError, OSError):  # the gateway may close after a 502: fine
        c.close()
        c = Client()
        st, hdrs, body = c.ask("/healthz")
    c.close()
    eq((st, "x-injected" in dict(hdrs), field(body, "status")),
       (200, False, "alive"),
       "the connection's next answer is the gateway's, not the upstream's forged one")
    for code in (600, 999):
        st, _, body = ask("/bad/status/%d" % code)
        eq(st, 502, "an upstream's status %d is a failed exchange: %r" % (code, body[:80]))

    # ---- answers that break off or cannot be framed ----
    # (on a route of their own: three failures open its breaker)
    for path, want in (("/f/midbody", b"sent no complete answer"),
                       ("/f/nostatus", b"sent no valid HTTP status line"),
                       ("/f/dupcl", b"sent two different Content-Lengths")):
        st, _, body = ask(path)
        check(st == 502 and field(body, "error") == "bad_gateway" and want in body,
              "%s: a 502 that says what the upstream did: %d %r" % (path, st, body[:160]))
    eq(ask("/p/samecl")[::2], (200, b"ok"), "the same Content-Length twice passes")
    st, hdrs, body = ask("/p/degraded")
    check(st == 200 and "x-flashgate-degraded" not in dict(hdrs),
          "an upstream's X-Flashgate-Degraded is not passed on: %d %r" % (st, hdrs))

    # ---- a request the upstream read but did not answer ----
    # On a kept connection that dies before any byte of the answer, libcurl
    # sends the request again on a new one (nginx's proxy_next_upstream does
    # so for idempotent methods only): a POST or PATCH the upstream acted on
    # would be done twice, under a 200.
    for method, again in (("POST", False), ("PATCH", False), ("PUT", True)):
        c = Client()
        eq(c.ask("/o/ok")[0], 200, "%s: the connection to the upstream is kept" % method)
        c.sk.sendall(b"%s /o/once HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                     % method.encode())
        st, _, body = c.answer()
        c.close()
        if again:
            eq((st, body, ONCE_SEEN.get(method)), (200, b"ok", 2),
               "an idempotent %s is sent again on a new connection" % method)
        else:
            check(st == 502 and b"not sent twice" in body and ONCE_SEEN.get(method) == 1,
                  "a %s is never sent twice: %d %r, upstream read it %s time(s)"
                  % (method, st, body[:200], ONCE_SEEN.get(method)))

    # ---- chunked trailers ----
    st, hdrs, body = ask("/p/trailer")
    names = [k for k, _ in hdrs]
    eq((st, body, dict(hdrs).get("x-head")), (200, b"hello", "yes"), "a chunked answer passes")
    check("x-evil" not in names and "set-cookie" not in names,
          "its trailer fields are not made headers: %r" % hdrs)
    st, hdrs, body = ask("/p/trailerhttp")
    check(st == 200 and body == b"hello" and dict(hdrs).get("x-head") == "yes" and
          "set-cookie" not in dict(hdrs),
          "a trailer line that starts like a status line starts no new head: %d %r %r"
          % (st, hdrs, body[:200]))
    st, _, body = ask("/p/headhttp")
    check(st == 502 and b"sent an invalid header" in body,
          "inside a head, a line that starts like a status line is an invalid field: %d %r"
          % (st, body[:200]))
    st, hdrs, body = ask("/p/s103")
    names = [k for k, _ in hdrs]
    eq((st, body, dict(hdrs).get("x-final")), (200, b"ok", "yes"),
       "the final answer after a 103 passes with its head")
    check("link" not in names and "x-evil" not in names,
          "without the 103's fields or the trailer's: %r" % hdrs)

    # ---- every Connection field ----
    st, _, body = ask("/p/echo", b"Connection: keep-alive\r\nConnection: X-Hop\r\n"
                      b"X-Hop: must-not-reach-upstream\r\nX-Kept: yes\r\n")
    seen = body.lower()
    check(st == 200 and b"\r\nx-kept: yes" in seen and b"x-hop" not in seen,
          "a field named by the request's second Connection field is dropped: %r" % body)
    st, hdrs, _ = ask("/p/conn2")
    names = [k for k, _ in hdrs]
    check(st == 200 and "x-kept" in names and "x-secret-a" not in names,
          "a field named by the answer's first Connection field is dropped: %r" % hdrs)

    # ---- fields libcurl would add of its own accord ----
    st, _, body = ask("/p/echo")
    eq((st, [v for k, v in upstream_fields(body) if k == "accept"]), (200, []),
       "no Accept reaches the upstream when the client sent none (libcurl's */*)")
    c = Client()
    c.sk.sendall(b"POST /p/echob HTTP/1.1\r\nHost: x\r\nConnection: Content-Type\r\n"
                 b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
    st, _, body = c.answer()
    c.close()
    got = upstream_fields(body.partition(b"\r\n\r\n")[0])
    eq((st, [v for k, v in got if k == "content-type"]), (200, []),
       "a Content-Type the client's Connection named is dropped, not replaced by libcurl's "
       "application/x-www-form-urlencoded")

    # ---- request fields with an empty value ----
    st, _, body = ask("/p/echo", b"X-Empty:\r\nUser-Agent:\r\nAccept:\r\nX-Blank: \t \r\n")
    got = upstream_fields(body)
    for name in ("x-empty", "user-agent", "accept", "x-blank"):
        eq([v for k, v in got if k == name], [""], "an empty %s reaches the upstream, empty" % name)

    # ---- the client address: X-Real-IP and Forwarded ----
    # No trusted proxy here: the client is the peer, whatever it claims.
    st, _, body = ask("/p/echo", b"X-Real-IP: 198.51.100.66\r\nx-real-ip: 198.51.100.67\r\n"
                      b"Forwarded: for=198.51.100.66;host=evil.example;proto=https\r\n"
                      b"X-Forwarded-For: 203.0.113.9\r\n")
    got = upstream_fields(body)
    eq(st, 200, "a request naming its own address is proxied")
    eq([v for k, v in got if k == "x-real-ip"], ["127.0.0.1"],
       "X-Real-IP is the client address the gateway decided on, not the client's own")
    eq([v for k, v in got if k == "forwarded"], [],
       "the client's Forwarded never reaches the upstream")
    eq([v for k, v in got if k == "x-forwarded-for"], ["127.0.0.1"],
       "X-Forwarded-For from a peer that is no trusted proxy is the peer alone: the "
       "client's own list is addresses it made up")

    # ---- the other fields that name the client, its scheme or the path ----
    # Spring, Rack, Django, IIS and Symfony believe these; from a client they
    # are a claim nobody checked. The underscore spellings are the same CGI
    # variable (HTTP_X_FORWARDED_PROTO) to Rack, PHP and Django.
    spoofed = (b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Ssl: on\r\n"
               b"X-Forwarded-Prefix: /evil\r\nX-Forwarded-Server: evil.example\r\n"
               b"X-Client-IP: 198.51.100.66\r\nTrue-Client-IP: 198.51.100.66\r\n"
               b"CF-Connecting-IP: 198.51.100.66\r\nX-Cluster-Client-IP: 198.51.100.66\r\n"
               b"X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n"
               b"X_Forwarded_Proto: https\r\nx_real_ip: 198.51.100.66\r\n"
               b"X-Kept: yes\r\n")
    st, _, body = ask("/p/echo", spoofed)
    got = upstream_fields(body)
    eq(st, 200, "a request with spoofed forwarding fields is proxied")
    for name in ("x-forwarded-port", "x-forwarded-ssl", "x-forwarded-prefix",
                 "x-forwarded-server", "x-client-ip", "true-client-ip", "cf-connecting-ip",
                 "x-cluster-client-ip", "x-original-url", "x-rewrite-url", "x_forwarded_proto",
                 "x_real_ip"):
        eq([v for k, v in got if k == name], [], "a client's %s never reaches the upstream" % name)
    eq([v for k, v in got if k == "x-forwarded-proto"], ["http"],
       "X-Forwarded-Proto is the gateway's own scheme, not the client's https")
    eq([v for k, v in got if k == "x-kept"], ["yes"], "other fields still pass")
    # A client's X-Forwarded-Host (password-reset links built from it) is
    # replaced by the Host it asked for.
    st, _, body = ask("/p/echo", b"X-Forwarded-Host: evil.example\r\n")
    eq((st, [v for k, v in upstream_fields(body) if k == "x-forwarded-host"]), (200, ["x"]),
       "X-Forwarded-Host is the Host asked for, not the client's own")
    # An absolute-form target names the host asked for, and the Host field is
    # ignored (RFC 9112 3.2.2): a cache in front keyed by the target must not
    # get a page the upstream built for another name.
    c = Client()
    c.sk.sendall(b"GET http://shop.example:8080/p/echo HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    st, _, body = c.answer()
    c.close()
    eq((st, [v for k, v in upstream_fields(body) if k == "x-forwarded-host"]),
       (200, ["shop.example:8080"]),
       "an absolute-form target's host is X-Forwarded-Host, not the Host field's")
    for target in (b"http://user@shop.example/p/echo", b"http://shop.example!/p/echo"):
        c = Client()
        c.sk.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
        st, _, body = c.answer()
        c.close()
        check(st == 400 and b"host" in body,
              "%r: a target's host that does not read as one is a 400: %d %r"
              % (target, st, body[:160]))

    # ---- a prefix matches whole segments ----
    eq(ask("/seg/ok")[:3:2], (200, b"ok"), "a path under a prefix without a trailing / is proxied")
    st, _, body = ask("/seg")
    eq((st, body), (404, b""), "the prefix itself is proxied (the upstream's own 404)")
    for path in ("/segadmin", "/seg-internal/ok", "/seg.json"):
        st, _, body = ask(path)
        eq((st, field(body, "error")), (404, "not_found"),
           "%s is not under the prefix /seg: the gateway's 404" % path)

    # ---- the Host, which the upstream gets as X-Forwarded-Host ----
    # Links, redirects and reset mails are built from it: one that does not
    # read as a host is a 400 from the head, as is an HTTP/1.1 request without
    # one (RFC 9112 3.2); the upstream never sees either.
    for line, ok, what in ((b"GET /p/echo HTTP/1.1\r\nHost: shop.example:8080\r\n", True,
                            "a host and port"),
                           (b"GET /p/echo HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n", True,
                            "an IPv6 literal"),
                           (b"GET /p/echo HTTP/1.0\r\n", True, "none in HTTP/1.0"),
                           (b"GET /p/echo HTTP/1.1\r\n", False, "none in HTTP/1.1"),
                           (b"GET /p/echo HTTP/1.1\r\nHost:\r\n", False, "an empty one"),
                           (b"GET /p/echo HTTP/1.1\r\nHost: evil.example/reset?x=<b>\r\n", False,
                            "a path and markup"),
                           (b"GET /p/echo HTTP/1.1\r\nHost: a b\r\n", False, "a blank")):
        c = Client()
        c.sk.sendall(line + b"\r\n")
        st, _, body = c.answer()
        c.close()
        if ok:
            host = line.split(b"Host: ")[1].split(b"\r\n")[0].decode() if b"Host" in line else None
            eq((st, [v for k, v in upstream_fields(body) if k == "x-forwarded-host"]),
               (200, [host] if host else []), "a Host with %s is proxied" % what)
        else:
            check(st == 400 and field(body, "error") == "bad_request" and b"Host" in body,
                  "a Host with %s is refused: %d %r" % (what, st, body))

    # ---- OPTIONS (a CORS preflight) ----
    preflight = (b"Origin: https://shop.example\r\nAccess-Control-Request-Method: POST\r\n"
                 b"Access-Control-Request-Headers: content-type\r\n")
    c = Client()
    c.sk.sendall(b"OPTIONS /p/echob HTTP/1.1\r\nHost: x\r\n" + preflight + b"\r\n")
    st, hdrs, body = c.answer()
    head, _, sent = body.partition(b"\r\n\r\n")
    got = upstream_fields(head)
    check(st == 200 and head.startswith(b"OPTIONS /p/echob ") and sent == b"" and
          ("access-control-request-method", "POST") in got and
          ("origin", "https://shop.example") in got and
          not any(k in ("content-length", "transfer-encoding", "content-type") for k, _ in got),
          "an OPTIONS reaches the upstream as it was sent, without a body: %d %r" % (st, body))
    c.sk.sendall(b"OPTIONS /p/echob HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Content-Type: text/plain\r\n\r\nhello")
    st, _, body = c.answer()
    head, _, sent = body.partition(b"\r\n\r\n")
    check(st == 200 and head.startswith(b"OPTIONS /p/echob ") and sent == b"hello" and
          ("content-length", "5") in upstream_fields(head),
          "an OPTIONS with a body has it forwarded whole, its length with it: %d %r" % (st, body))
    c.close()
    c = Client()
    c.sk.sendall(b"BREW /p/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    st, hdrs, _ = c.answer()
    c.close()
    eq((st, dict(hdrs).get("allow")), (405, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
       "another method is still a 405, its Allow naming OPTIONS")

    # ---- a body on a GET or HEAD ----
    # Refused from the head, the connection closed with the body unread: an
    # upstream that reads no GET body would take it for the next request on a
    # kept connection; dropped, the client got a 2xx for a body nobody saw.
    bodies = ((b"Content-Length: 5\r\n\r\nhello", "Content-Length"),
              (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "chunked"),
              (b"Content-Length: 37\r\n\r\nGET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
               "a request as its body"))
    for method in (b"GET", b"HEAD"):
        for framing, what in bodies:
            c = Client()
            c.sk.sendall(method + b" /p/echob HTTP/1.1\r\nHost: x\r\n" + framing)
            st, _, body = c.answer(head_only=method == b"HEAD")
            check(st == 400 and (method == b"HEAD" or (field(body, "error") == "bad_request" and
                                                       b"body" in body)),
                  "a %s with a body (%s) is refused: %d %r" % (method.decode(), what, st, body))
            check(c.closed(), "and its connection closes, the body unread (%s %s)" %
                  (method.decode(), what))
            c.close()
    st, _, body = ask("/p/echob", b"Content-Length: 0\r\n")
    eq(st, 200, "a GET with Content-Length: 0 carries no body: proxied")
    c = Client()
    c.sk.sendall(b"DELETE /p/echob HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    st, _, body = c.answer()
    c.close()
    check(st == 200 and body.endswith(b"\r\n\r\nhello") and
          ("content-length", "5") in upstream_fields(body.rsplit(b"\r\n\r\n", 1)[0]),
          "a DELETE body reaches the upstream whole, its length with it: %d %r" % (st, body))

    # ---- an answer past proxy.max_body ----
    for i in range(4):  # one more than --proxy-breaker-failures
        st, _, body = ask("/h/huge/%d" % i)
        check(st == 502 and b"more than proxy.max_body" in body,
              "an answer past proxy.max_body is a 502: %d %r" % (st, body[:120]))
    # One that announces more than proxy.max_body is refused at its head, not
    # read until the cap or the route's timeout (2 s) while it trickles.
    t0 = time.monotonic()
    st, _, body = ask("/h/trickle")
    took = time.monotonic() - t0
    check(st == 502 and b"more than proxy.max_body" in body and took < 1.5,
          "an answer announced past proxy.max_body is a 502 at its head: %d in %.2fs %r" %
          (st, took, body[:120]))
    c = Client()
    c.sk.sendall(b"HEAD /h/bighead HTTP/1.1\r\nHost: x\r\n\r\n")
    st, hdrs, _ = c.answer(head_only=True)
    c.close()
    eq((st, dict(hdrs).get("content-length")), (200, "10000000000"),
       "a HEAD's announced length (the GET's) passes")
    hs = up_stats("/h/")
    eq((hs["drops"], hs["breaker"], hs["breaker_opens"]), (0, "closed", 0),
       "and neither a drop nor a breaker failure")
    eq(ask("/h/ok")[0], 200, "the route still serves")

    # ---- one probe at a time in half-open ----
    def inflight(n):
        ok, _ = wait_for(lambda: up_stats("/b/")["inflight"] == n, 3)
        return ok
    straggler = hold("/b/hang/straggler")  # in flight from before the breaker opens
    check(inflight(1), "the straggler's transfer runs")
    for _ in range(3):
        eq(ask("/b/fail")[0], 500, "a failing upstream's 500 passes")
    eq(up_stats("/b/")["breaker"], "open", "three failures in a row open the breaker")
    time.sleep(0.4)  # past the cool-down: the next request is the probe
    probe = hold("/b/hang/probe")
    check(inflight(2), "the probe's transfer runs: %r" % up_stats("/b/"))
    eq(up_stats("/b/")["breaker"], "half_open", "the breaker is half-open")
    reset(straggler)  # its client goes away: released without an outcome
    check(inflight(1), "the straggler's transfer ends with its client")
    st, hdrs, body = ask("/b/ok")
    check(st == 503 and field(body, "reason") == "upstream_breaker",
          "a second request while the probe is out is refused: %d %r" % (st, body[:120]))
    reset(probe)
    check(inflight(0), "the probe ends with its client")

    # ---- bytes an upstream sends past its answer's end ----
    # A body to a HEAD, or more than its Content-Length, arriving after curl
    # has taken the answer and kept the connection: the next request on that
    # connection (another client's) read them as its answer.
    def stale(first_method, first_path, n):
        STRAY_SENT.clear()
        c = Client()
        c.sk.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (first_method, first_path))
        st, _, _ = c.answer(head_only=first_method == b"HEAD")
        c.close()
        eq(st, 200, "%s %s is answered" % (first_method.decode(), first_path.decode()))
        check(STRAY_SENT.wait(5), "the upstream sent its stray bytes")
        st, hdrs, body = ask("/k/ok")
        check(st == 200 and body == b"ok" and "x-forged" not in dict(hdrs),
              "after %s %s, another client's request gets its own answer, not the stray "
              "bytes: %d %r %r" % (first_method.decode(), first_path.decode(), st, hdrs, body))
        eq(g.admin("GET", "/admin/v1/stats").json.get("proxy_stale_conns"), n,
           "the kept connection was refused and the request sent on a fresh one")
    stale(b"HEAD", b"/k/headbody", 1)
    stale(b"GET", b"/k/late", 2)
finally:
    g.cleanup()

# ---- X-Real-IP behind a trusted proxy ----
# The peer (127.0.0.1) is trusted: the client is the right-most address of
# X-Forwarded-For that is not a trusted proxy, as for the per-IP limiter.
g = Gateway("--kafka-brokers", "none", "--proxy-routes",
            json.dumps([{"prefix": "/p/", "upstream": up, "timeout_ms": 2000}]),
            "--set", "server.trusted_proxies=127.0.0.1",
            "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()
try:
    for xff, real in (("203.0.113.9", "203.0.113.9"),
                      ("198.51.100.7, 203.0.113.9, 127.0.0.1", "203.0.113.9"),
                      ("2001:db8::1", "2001:db8::1"),  # whole, not the limiter's /64
                      ("not-an-address", "127.0.0.1"),
                      (None, "127.0.0.1")):
        extra = b"X-Real-IP: 198.51.100.66\r\nForwarded: for=198.51.100.66\r\n"
        if xff is not None:
            extra += b"X-Forwarded-For: %s\r\n" % xff.encode()
        st, _, body = ask("/p/echo", extra)
        got = upstream_fields(body)
        eq((st, [v for k, v in got if k == "x-real-ip"], [v for k, v in got if k == "forwarded"]),
           (200, [real], []), "behind a trusted proxy, X-Forwarded-For %r: X-Real-IP %s" %
           (xff, real))
        eq([v for k, v in got if k == "x-forwarded-for"],
           [(xff + ", " if xff else "") + "127.0.0.1"],
           "a trusted proxy's X-Forwarded-For %r goes on with the peer appended" % xff)
    # Every field of a trusted proxy's, in order, as one list, then the peer;
    # nothing cut, so the right-most hops (those an upstream trusts) reach it.
    # Before, only the first field was passed on, cut to its first 1,000 bytes.
    st, _, body = ask("/p/echo", b"X-Forwarded-For: 203.0.113.9\r\n"
                      b"X-Forwarded-For: 198.51.100.7, 198.51.100.8\r\n")
    eq((st, [v for k, v in upstream_fields(body) if k == "x-forwarded-for"]),
       (200, ["203.0.113.9, 198.51.100.7, 198.51.100.8, 127.0.0.1"]),
       "a trusted proxy's X-Forwarded-For fields are joined in order and the peer appended")
    long_xff = ", ".join("198.51.100.%d" % (i % 250 + 1) for i in range(300))
    st, _, body = ask("/p/echo", b"X-Forwarded-For: " + long_xff.encode() + b"\r\n")
    got = [v for k, v in upstream_fields(body) if k == "x-forwarded-for"]
    check(st == 200 and got == [long_xff + ", 127.0.0.1"],
          "a %d-byte X-Forwarded-For reaches the upstream whole: %d %r" %
          (len(long_xff), st, [g_[-40:] for g_ in got]))
    # The trusted proxy ended TLS: the scheme, port and "ssl" it says are kept,
    # its right-most value of each (the one it appended or set), when valid.
    for sent, want in (
            (b"", {"x-forwarded-proto": ["http"]}),
            (b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Ssl: on\r\n",
             {"x-forwarded-proto": ["https"], "x-forwarded-port": ["443"],
              "x-forwarded-ssl": ["on"]}),
            (b"X-Forwarded-Proto: http\r\nX-Forwarded-Proto: HTTPS\r\nX-Forwarded-Port: 1, 8443\r\n",
             {"x-forwarded-proto": ["https"], "x-forwarded-port": ["8443"]}),
            (b"X-Forwarded-Proto: https, javascript\r\nX-Forwarded-Port: 99999\r\n"
             b"X-Forwarded-Ssl: yes\r\n", {"x-forwarded-proto": ["http"]}),
            (b"X_Forwarded_Proto: https\r\n", {"x-forwarded-proto": ["http"]})):
        st, _, body = ask("/p/echo", sent + b"X-Forwarded-Prefix: /evil\r\n"
                          b"X-Original-URL: /admin\r\nTrue-Client-IP: 198.51.100.66\r\n")
        got = upstream_fields(body)
        names = ("x-forwarded-proto", "x-forwarded-port", "x-forwarded-ssl", "x-forwarded-prefix",
                 "x-original-url", "true-client-ip")
        eq((st, {n: [v for k, v in got if k == n] for n in names if any(k == n for k, _ in got)}),
           (200, want), "behind a trusted proxy, %r reaches the upstream as" % sent)
    # A CDN that rewrote Host to the origin's name says in X-Forwarded-Host
    # which name the person used: its right-most one is kept when it reads as
    # a host, else the Host (here "x").
    for sent, want in ((b"", "x"),
                       (b"X-Forwarded-Host: shop.example\r\n", "shop.example"),
                       (b"X-Forwarded-Host: evil.example, shop.example:8443\r\n",
                        "shop.example:8443"),
                       (b"X-Forwarded-Host: [2001:db8::1]:443\r\n", "[2001:db8::1]:443"),
                       (b"X-Forwarded-Host: shop.example/evil?x=<script>\r\n", "x"),
                       (b"X-Forwarded-Host: \r\n", "x")):
        st, _, body = ask("/p/echo", sent)
        eq((st, [v for k, v in upstream_fields(body) if k == "x-forwarded-host"]), (200, [want]),
           "behind a trusted proxy, %r: X-Forwarded-Host %s" % (sent, want))
finally:
    g.cleanup()

# ---- an IPv4 client on a dual-stack listener ----
# The socket's peer is ::ffff:127.0.0.1; X-Forwarded-For gets the address
# X-Real-IP names, as nginx's $remote_addr gives it.
def dual_stack():
    """True if an IPv6 socket here takes IPv4 clients (no IPv6, or bindv6only: skip)."""
    try:
        with socket.socket(socket.AF_INET6) as s6:
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s6.bind(("::", 0))
            s6.listen(1)
            socket.create_connection(("127.0.0.1", s6.getsockname()[1]), timeout=2).close()
        return True
    except OSError:
        return False


if dual_stack():
    g = Gateway("--kafka-brokers", "none", "--proxy-routes",
                json.dumps([{"prefix": "/p/", "upstream": up, "timeout_ms": 2000}]),
                "--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1)
    g.args += ["--listen", "[::]:%d" % g.port]
    try:
        g.start()
        st, _, body = ask("/p/echo", b"X-Forwarded-For: 203.0.113.9\r\n")
        got = upstream_fields(body)
        eq((st, [v for k, v in got if k == "x-forwarded-for"],
            [v for k, v in got if k == "x-real-ip"]),
           (200, ["127.0.0.1"], ["127.0.0.1"]),
           "an IPv4 peer on a dual-stack socket: X-Forwarded-For and X-Real-IP agree")
    finally:
        g.cleanup()
else:
    print("skip: no dual-stack IPv6 socket here, the mapped-peer check does not run")

# ---- no proxy from the environment ----
dead = free_port()  # nothing listens there
proxy = "http://127.0.0.1:%d" % up_port
g = Gateway("--kafka-brokers", "none", "--proxy-routes",
            json.dumps([{"prefix": "/d/", "upstream": "http://127.0.0.1:%d" % dead,
                         "timeout_ms": 2000}]), threads=1,
            extra_env={"http_proxy": proxy, "HTTP_PROXY": proxy, "ALL_PROXY": proxy,
                       "all_proxy": proxy, "no_proxy": "", "NO_PROXY": ""}).start()
try:
    st, _, body = ask("/d/ok")
    check(st == 502 and b"via-proxy" not in body,
          "an upstream where nothing listens is a 502, not the environment's proxy: %d %r" %
          (st, body[:120]))
finally:
    g.cleanup()
finish()
