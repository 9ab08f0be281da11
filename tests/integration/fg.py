"""Test harness for integration tests: starts the real flashgate binaries on
127.0.0.1 at free ports in a temp dir, drives HTTP, and stops them by PID.

Only loopback traffic; every wait is bounded. Standard library only.
"""
import http.client
import http.server
import base64
import hashlib
import hmac
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.environ.get("FLASHGATE_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.environ.get("FLASHGATE_BIN", os.path.join(SRC, "build"))
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from ports import free_port  # noqa: E402,F401  (the tests import it from here)
TOKEN = "integration-test-token-0123456789abcdef"
FAILS = []
PASSES = [0]


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test process dies (a ctest
    timeout must not leave servers running)."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def check(cond, what):
    if cond:
        PASSES[0] += 1
    else:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)


def eq(got, want, what):
    check(got == want, "%s: got %r, want %r" % (what, got, want))


def finish():
    print("%d passed, %d failed" % (PASSES[0], len(FAILS)))
    for f in FAILS:
        print("  failed:", f)
    sys.exit(1 if FAILS else 0)


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "Resp(%d, %r)" % (self.status, self.raw[:200])


def request(port, method, path, body=None, headers=None, timeout=10, source=None):
    """One request to 127.0.0.1:port on a new connection; a dict or list body is
    sent as JSON. source: the local address to connect from (e.g. "127.0.0.2",
    a peer that is not a trusted proxy); None: the kernel's choice."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    out = Resp(r.status, r.getheaders(), r.read())
    c.close()
    return out


def mint_token(data_dir, user, *opts):
    """A buyer token for user from flashgate-token with the key in data_dir (opts:
    its flags, e.g. "--ttl", "1" or "--init" to create the key)."""
    out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", data_dir]
                         + list(opts) + [user], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError("flashgate-token: %s" % out.stderr)
    return out.stdout.strip()


def bearer_headers(token, ip, extra=None):
    """A buyer's request headers: X-Forwarded-For ip (a client address of the
    trusted proxy), Authorization: Bearer token unless token is None, then extra."""
    h = {"X-Forwarded-For": ip}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    h.update(extra or {})
    return h


def order_token(data_dir, oid):
    """An order's status token from a gateway's data dir (every gateway of a fleet
    holds the same key)."""
    with open(os.path.join(data_dir, "status.key")) as f:
        key = bytes.fromhex(f.read().strip())
    mac = hmac.new(key, b"order:" + oid.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class Server:
    """A process of ours (started by a subclass's start()), its log, and its
    stop by PID. It dies with the test (die_with_parent)."""

    proc = None
    log_path = None
    tmp = None

    def spawn(self, cmd, env=None):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=die_with_parent)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def logs(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def cleanup(self):
        if self.proc and self.proc.poll() is not None:
            # it died by itself (a crash, a sanitizer's report): its log goes
            # with the temp dir, so show its end first
            sys.stderr.write("%s exited by itself (%s); its log ends:\n%s\n" % (
                os.path.basename(self.proc.args[0]), self.proc.returncode, self.logs()))
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class JsonUpstream(http.server.BaseHTTPRequestHandler):
    """A test upstream's handler: every GET is answered 200 with BODY (JSON), after
    delay() seconds. Keep-alive; the head and the body are two writes, so Nagle's
    algorithm is off (with it the body waits for the head's ACK, which the peer
    delays by up to 40 ms). Subclass to change BODY or delay()."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    BODY = b'{"from":"upstream"}'

    def delay(self):
        return 0

    def do_GET(self):
        d = self.delay()
        if d:
            time.sleep(d)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *a):
        pass


class Gateway(Server):
    """One flashgate process with its own data dir and ports."""

    def __init__(self, *args, data_dir=None, env=None, token=TOKEN, threads=2, extra_env=None,
                 identity_mode="none"):
        self.tmp = tempfile.mkdtemp(prefix="fg-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.port = free_port()
        self.admin_port = free_port()
        self.token = token
        self.args = list(args)
        self.threads = threads
        # identity.mode passed unless the test sets one itself; None: the default (jwt)
        self.identity_mode = identity_mode
        self.env = dict(os.environ if env is None else env)
        if extra_env:
            self.env.update(extra_env)
        self.proc = None
        self.log_path = os.path.join(self.tmp, "flashgate.log")

    def cmd(self):
        c = [os.path.join(BIN, "flashgate"), "--listen", "127.0.0.1:%d" % self.port,
             "--admin-listen", "127.0.0.1:%d" % self.admin_port, "--data-dir", self.data_dir,
             "--threads", str(self.threads), "--log-level", "info",
             # Degradation levels pinned to 0: a loaded CI machine must not move a
             # suite's answers (sale Cache-Control, buys shed by user priority).
             # Tests of automatic levels pass "--overload-level", "auto".
             "--overload-level", "0"]
        if self.token:
            c += ["--admin-token", self.token]
        extra = os.environ.get("FLASHGATE_IT_EXTRA", "").split()
        if self.identity_mode and not self.names_identity_mode(extra + self.args):
            # The suite's buys name their buyer in the body: identity.mode=none,
            # unless the test chose a mode (39-identity sets jwt and header;
            # 45-identity-default runs the default, jwt, with identity_mode=None).
            c += ["--set", "identity.mode=" + self.identity_mode]
        if (any(str(a).startswith(("redis://", "redis-cluster://", "rediss://")) for a in self.args)
                and not any("redis_timeout" in str(a) or str(a) == "--inventory-redis-timeout"
                            for a in extra + self.args)):
            # A Redis inventory's reserve slower than the default 40 ms answers
            # 503; with a dozen servers beside it (ctest -j, ASan, AOF fsync)
            # Redis takes that long now and then, and tests about the fleet's
            # logic failed on it (60-fleet, 103-room-fleet after a restart).
            # Only a real stall reaches 1 s. Tests of timeouts set their own
            # (53, 63, 66, 67).
            c += ["--set", "inventory.redis_timeout=1s"]
        # FLASHGATE_IT_EXTRA: extra flags for every gateway (e.g. "--kafka-brokers none"
        # to run the HTTP suites against a TSan build, where librdkafka cannot run).
        return c + extra + self.args

    def names_identity_mode(self, args):
        """Whether the test chose identity.mode (a flag, the environment, or a
        --config file that names it) or gave jwt's keys (jwks_file, jwks_url:
        mode none refuses them, the default jwt reads them)."""
        names = ("identity.mode", "identity.jwks_file", "identity.jwks_url", "--identity-mode")
        if any(k in self.env for k in ("FLASHGATE_IDENTITY_MODE", "FLASHGATE_IDENTITY_JWKS_FILE",
                                       "FLASHGATE_IDENTITY_JWKS_URL")):
            return True
        for i, a in enumerate(args):
            if any(n in a for n in names):
                return True
            path = a[len("--config="):] if a.startswith("--config=") else (
                args[i + 1] if a == "--config" and i + 1 < len(args) else None)
            if path:
                try:
                    with open(path) as f:
                        text = f.read()
                except OSError:
                    continue
                if '"identity' in text:
                    return True
        return False

    def start(self, wait=True):
        self.spawn(self.cmd(), env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("flashgate exited with %s:\n%s" % (self.proc.returncode, self.logs()))
            try:
                if request(self.port, "GET", "/readyz", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("flashgate not ready in %ss:\n%s" % (timeout, self.logs()))

    # --- HTTP helpers ---
    def get(self, path, **kw):
        return request(self.port, "GET", path, **kw)

    def buy(self, sale, user, qty=None, key=None, headers=None, raw=None):
        h = {"Content-Type": "application/json"}
        if key:
            h["Idempotency-Key"] = key
        if headers:
            h.update(headers)
        body = raw if raw is not None else json.dumps(
            {"user_id": user} if qty is None else {"user_id": user, "qty": qty})
        return request(self.port, "POST", "/v1/sales/%s/orders" % sale, body=body, headers=h)

    def post_order(self, sale, body=None, headers=None, source=None):
        """POST /v1/sales/{sale}/orders with headers, from source (see request());
        body: a dict (sent as JSON) or raw bytes, by default {"qty": 1} (no
        user_id: the buyer is the one the identity mode verifies)."""
        return request(self.port, "POST", "/v1/sales/%s/orders" % sale,
                       body=body if body is not None else {"qty": 1}, headers=headers,
                       source=source)

    def stock_left(self, sale):
        return self.get("/v1/sales/" + sale).json["stock_left"]

    def order_token(self, oid):
        """The order's status token, as the 202 gave it: HMAC-SHA256 of "order:<id>"
        with <data-dir>/status.key, first 16 bytes in base64url (gateway/base/gw_token.c)."""
        return order_token(self.data_dir, oid)

    def order(self, oid, token=None, **kw):
        """GET /v1/orders/{id} with its status token (computed when not given)."""
        tok = token if token is not None else self.order_token(oid)
        return self.get("/v1/orders/%s?token=%s" % (oid, tok), **kw)

    def admin(self, method, path, body=None, token="default", headers=None):
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        return request(self.admin_port, method, path, body=body, headers=h)

    def put_sale(self, sale, **fields):
        r = self.admin("PUT", "/admin/v1/sales/" + sale, body=fields)
        if r.status not in (200, 201):
            raise RuntimeError("PUT sale failed: %r" % r)
        return r.json

    def spool_ids(self):
        out = subprocess.run([os.path.join(BIN, "flashgate-spool"), "dump", "--data-dir",
                              self.data_dir], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("flashgate-spool dump failed: %s" % out.stderr)
        ids = []
        for line in out.stdout.splitlines():
            rec = json.loads(line)
            if "order_id" in rec:
                ids.append(rec["order_id"])
        return ids


# The trusted proxy of the identity tests: their requests come from 127.0.0.1 with
# the client's address in X-Forwarded-For; 127.0.0.2 is a peer that is not trusted.
TRUSTED_PROXY = ["--server-trusted-proxies", "127.0.0.1"]
IDENTITY_HEADER = "X-Authenticated-User"


def identity_gateway(mode, *args, **kw):
    """A Gateway (not started) behind TRUSTED_PROXY with identity.mode=mode: "jwt"
    (the data dir's key, tokens from mint_token) or "header" (the user in
    IDENTITY_HEADER, set by the proxy); args: more flags, kw: Gateway's."""
    flags = TRUSTED_PROXY + ["--set", "identity.mode=" + mode]
    if mode == "header":
        flags += ["--set", "identity.header=" + IDENTITY_HEADER]
    return Gateway(*(flags + list(args)), **kw)


def rfc3339(t):
    """Unix time t as the API's timestamps (RFC 3339, UTC, whole seconds)."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def serve_raw(serve, backlog=64):
    """A test upstream on 127.0.0.1 at a free port that hands each accepted
    connection to serve(conn) on a daemon thread of its own (the raw bytes are
    the test's: what a proxy sent, what it gets back). Returns the port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def need_binary(name):
    if not os.path.exists(os.path.join(BIN, name)):
        # a missing binary is a failure, never a skip: the test would prove nothing
        print("FAIL: %s not built in %s" % (name, BIN))
        sys.exit(1)
