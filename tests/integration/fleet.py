"""Fleet-mode helpers on top of fg.py: a real redis-server on 127.0.0.1 at a
free port in a temp dir (AOF on, so a kill -9 and restart keeps the stock),
stopped by PID; a tiny RESP client; a bounded multi-threaded crowd.

Standard library only; every wait is bounded.
"""
import http.client
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, die_with_parent, free_port  # noqa: E402,F401

REDIS_SERVER = os.environ.get("FLASHGATE_REDIS_SERVER") or shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def need_redis():
    if not REDIS_SERVER or not os.access(REDIS_SERVER, os.X_OK):
        print("FAIL: no redis-server (deploy/install-deps.sh installs it)")
        sys.exit(1)


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _n(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed the connection")
            self.buf += d
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError("redis error: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._n(n).decode(errors="replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)


class Redis:
    """A redis-server of our own: free port, temp dir, AOF with fsync "always"
    by default (what a fleet needs so that a Redis crash loses no reservation
    it acknowledged; "everysec" may lose the last second and oversell)."""

    def __init__(self, aof=True, fsync="always", extra=()):
        need_redis()
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix="fg-redis-")
        self.port = None
        self.proc = None
        self.aof = aof
        self.fsync = fsync

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def _spawn(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", self.fsync,
                "--dir", self.dir, "--daemonize", "no", "--logfile",
                os.path.join(self.dir, "redis.log")] + self.extra
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.cmd("PING", timeout=0.5) == "PONG":
                    return True
            except (OSError, RuntimeError, ConnectionError):
                pass
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait(5)
        return False

    def start(self):
        for _ in range(5):
            self.port = free_port()
            if self._spawn():
                return self
        raise RuntimeError("cannot start redis-server (see %s/redis.log)" % self.dir)

    def restart(self, timeout=15):
        """Same port and dir: the AOF reloads. The port may be briefly taken: retry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._spawn():
                return self
            time.sleep(0.2)
        raise RuntimeError("cannot restart redis-server on port %d" % self.port)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cmd(self, *args, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(_resp_encode(args))
            return _Reader(s).read()
        finally:
            s.close()


def rcmd(port, *args, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(_resp_encode(args))
        return _Reader(s).read()
    finally:
        s.close()


class Cluster:
    """A Redis Cluster of redis-server processes (127.0.0.1, free ports, one
    temp dir each, cluster-node-timeout 1 s), joined by redis-cli --cluster
    create with `replicas` replicas per master; stopped by PID."""

    def __init__(self, n=6, replicas=1):
        if not REDIS_CLI:
            print("FAIL: no redis-cli (deploy/install-deps.sh installs redis-tools)")
            sys.exit(1)
        self.dir = tempfile.mkdtemp(prefix="fg-rcluster-")
        self.procs = {}
        self.args = {}
        # Each node needs two ports: its client port and its cluster bus port.
        # The bus port defaults to port + 10000, which may be out of range or
        # taken by another test's server, so both are taken from the kernel
        # (all 2n sockets held open at once, so they are distinct) and the bus
        # port is passed with --cluster-port.
        held = []
        for _ in range(2 * n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        free = [s.getsockname()[1] for s in held]
        for s in held:
            s.close()
        for i in range(n):
            port, bus = free[2 * i], free[2 * i + 1]
            d = os.path.join(self.dir, str(port))
            os.mkdir(d)
            args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--cluster-enabled", "yes",
                    "--cluster-port", str(bus),
                    "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                    "--dir", d, "--daemonize", "no", "--logfile", os.path.join(d, "redis.log")]
            self.args[port] = args
            self._spawn(port)
        self.ports = list(self.procs)
        for p in self.ports:
            ok, _ = wait_for(lambda: rcmd(p, "PING", timeout=0.5) == "PONG", 10)
            if not ok:
                try:
                    with open(os.path.join(self.dir, str(p), "redis.log")) as f:
                        tail = f.read()[-2000:]
                except OSError:
                    tail = "(no log)"
                raise RuntimeError("redis-server on %d did not start (exit %s):\n%s"
                                   % (p, self.procs[p].poll(), tail))
        out = subprocess.run([REDIS_CLI, "--cluster", "create"] +
                             ["127.0.0.1:%d" % p for p in self.ports] +
                             ["--cluster-replicas", str(replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("cluster create failed: %s %s" % (out.stdout, out.stderr))
        ok, _ = wait_for(lambda: all("cluster_state:ok" in rcmd(p, "CLUSTER", "INFO")
                                     for p in self.ports), 20, step=0.1)
        if not ok:
            raise RuntimeError("the cluster did not reach cluster_state:ok")

    def nodes(self, via):
        """{port: (role, master_port or None, [slot ranges])} as `via` sees it."""
        ids, rows = {}, []
        for line in rcmd(via, "CLUSTER", "NODES").splitlines():
            f = line.split()
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            ids[f[0]] = port
            rows.append((port, f[2], f[3], f[8:]))
        out = {}
        for port, flags, master, slots in rows:
            role = "master" if "master" in flags else "replica"
            out[port] = (role, ids.get(master), slots)
        return out

    def master_of(self, slot, via):
        for port, (role, _, slots) in self.nodes(via).items():
            if role != "master":
                continue
            for rng in slots:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return port
        return None

    def replica_of(self, master, via):
        for port, (role, m, _) in self.nodes(via).items():
            if role == "replica" and m == master:
                return port
        return None

    def _spawn(self, port):
        self.procs[port] = subprocess.Popen(self.args[port], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent)

    def restart(self, port):
        """Same port and dir: nodes.conf brings it back into the cluster."""
        self._spawn(port)

    def kill9(self, port):
        self.procs[port].kill()
        self.procs[port].wait(10)

    def cleanup(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# Every rate limit off: a test of the inventory, not of the limiter.
NOLIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--set",
            "limits.global_rps=0", "--set", "limits.sale_rps=0"]


def start_fleet(redis, n, extra=(), threads=2):
    """n gateways on one Redis (a Redis object, or an inventory URL such as a
    redis-cluster:// seed list), distinct data dirs; returns them started."""
    url = redis if isinstance(redis, str) else redis.url
    gws = []
    for _ in range(n):
        g = Gateway("--inventory", url, "--kafka-brokers", "none", *extra, threads=threads)
        gws.append(g)
    for g in gws:
        g.start(wait=False)
    for g in gws:
        g.wait_ready(timeout=30)
    return gws


def stats(g):
    r = g.admin("GET", "/admin/v1/stats")
    return r.json if r.status == 200 else None


def wait_for(pred, timeout, step=0.05):
    """Polls pred() until true or timeout; returns (ok, seconds waited)."""
    t0 = time.time()
    while True:
        try:
            if pred():
                return True, time.time() - t0
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            pass
        if time.time() - t0 > timeout:
            return False, time.time() - t0
        time.sleep(step)


NO_LIMITS = ("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
             "limits.subnet_rps=0", "--set", "limits.sale_rps=0")


class FleetLottery:
    """A start-window lottery on a fleet, as the waitlist tests read it: its keys in
    Redis (K the fair slot's prefix, S the sale's), the draw each gateway serves, a
    gateway's owner id and the orders Redis holds."""

    def __init__(self, redis, sale):
        self.redis, self.sale = redis, sale
        self.K = "{flashgate:fair:%s}:" % sale
        self.S = "{sale:%s}:" % sale

    def open(self, gws, stock, entrants, starts_in):
        """PUTs the sale (a 1 s window opening starts_in seconds from now, kept in
        starts_at), waits until
        every gateway has it and enters e0..e<entrants-1> round-robin over gws; returns
        ({order_id: status_token}, {order_id: user})."""
        from fg import check, eq, rfc3339
        self.starts_at = rfc3339(time.time() + starts_in)
        r = gws[0].admin("PUT", "/admin/v1/sales/" + self.sale, body={
            "stock": stock, "per_user_limit": 1, "starts_at": self.starts_at,
            "fair_window_ms": 1000, "fair_early_ms": 3600000})
        eq(r.status, 201, "sale with a lottery")
        ok, _ = wait_for(lambda: all(g.admin("GET", "/admin/v1/sales/" + self.sale).json.get(
            "fair_window_ms") == 1000 for g in gws), 5)
        check(ok, "every gateway has the window")
        token, user = {}, {}
        for i in range(entrants):
            r = gws[i % len(gws)].buy(self.sale, "e%d" % i)
            eq((r.status, r.json.get("status")), (202, "entered"), "entry of e%d" % i)
            token[r.json["order_id"]] = r.json["status_token"]
            user[r.json["order_id"]] = "e%d" % i
        return token, user

    def draw(self, g):
        return g.admin("GET", "/admin/v1/sales/%s/draw" % self.sale).json

    def outcomes(self, g):
        return [e["outcome"] for e in sorted(self.draw(g)["entries"], key=lambda e: e["position"])]

    @staticmethod
    def owner_of(g):
        with open(os.path.join(g.data_dir, "fair", "owner.id")) as f:
            return f.read().strip()

    def held_orders(self):
        v = rcmd(self.redis.port, "HKEYS", self.S + "orders")
        return sorted(x.decode() if isinstance(x, bytes) else x for x in (v or []))


class Crowd:
    """Distinct users spread over the gateways by client threads with keep-alive
    connections; each user tries once (plus retries on 503/429 if asked).
    Bounded by the number of users and by `deadline_s`."""

    def __init__(self, ports, users, sale, nthreads=24, deadline_s=40, retry_codes=(),
                 on_reply=None):
        self.ports = ports
        self.users = users
        self.sale = sale
        self.nthreads = nthreads
        self.deadline = time.time() + deadline_s
        self.retry_codes = set(retry_codes)
        self.lock = threading.Lock()
        self.accepted = []  # (port, order_id, user)
        self.counts = {}
        self.errors = 0
        self.stop = threading.Event()
        self.on_reply = on_reply
        self.next = 0
        self.inflight = {}  # port -> requests sent and not answered yet (under lock)

    def _take(self):
        with self.lock:
            if self.next >= len(self.users):
                return None
            u = self.users[self.next]
            self.next += 1
            return u

    def _count(self, k):
        with self.lock:
            self.counts[k] = self.counts.get(k, 0) + 1

    def _worker(self, i):
        port = self.ports[i % len(self.ports)]
        conn = None
        path = "/v1/sales/%s/orders" % self.sale
        while not self.stop.is_set() and time.time() < self.deadline:
            u = self._take()
            if u is None:
                break
            while not self.stop.is_set() and time.time() < self.deadline:
                with self.lock:
                    self.inflight[port] = self.inflight.get(port, 0) + 1
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("POST", path, body=json.dumps({"user_id": u}),
                                 headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                    with self.lock:
                        self.inflight[port] -= 1
                    if r.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException):
                    with self.lock:
                        self.inflight[port] -= 1
                        self.errors += 1
                    if conn:
                        conn.close()
                    conn = None
                    if self.on_reply:
                        self.on_reply(port, None, None)
                    time.sleep(0.05)
                    # a dead gateway: the load balancer would send the user elsewhere
                    port = self.ports[(self.ports.index(port) + 1) % len(self.ports)]
                    continue
                code = None
                if data:
                    try:
                        code = json.loads(data).get("error") or json.loads(data).get("status")
                    except ValueError:
                        code = None
                self._count((r.status, code))
                if self.on_reply:
                    self.on_reply(port, r.status, code)
                if r.status == 202:
                    with self.lock:
                        self.accepted.append((port, json.loads(data)["order_id"], u))
                    break
                if r.status in self.retry_codes:
                    time.sleep(0.02)
                    continue
                break
        if conn:
            conn.close()

    def run(self, wait=True):
        self.threads = [threading.Thread(target=self._worker, args=(i,), daemon=True)
                        for i in range(self.nthreads)]
        for t in self.threads:
            t.start()
        if wait:
            self.join()
        return self

    def join(self, timeout=None):
        end = None if timeout is None else time.time() + timeout
        for t in self.threads:
            t.join(None if end is None else max(0.0, end - time.time()))
        self.stop.set()
        for t in self.threads:
            t.join(10)


def spool_orders(g, sale=None):
    """Order ids in g's spool (flashgate-spool dump), optionally of one sale only."""
    out = subprocess.run([os.path.join(BIN, "flashgate-spool"), "dump", "--data-dir", g.data_dir],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("flashgate-spool dump failed: %s" % out.stderr)
    ids = []
    for line in out.stdout.splitlines():
        rec = json.loads(line)
        if "order_id" in rec and (sale is None or rec.get("sale_id") == sale):
            ids.append(rec["order_id"])
    return ids
