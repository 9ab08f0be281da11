"""The public port is this gateway's workers' alone (SO_REUSEPORT lets any
process of the same user join them): a second gateway on an occupied port, or
one whose port another process already shares with SO_REUSEPORT, refuses to
start with a clear message, and the first one keeps every connection.
--listen HOST:0 binds one port for all workers, logs it and writes it to
<data-dir>/listen.addr. The admin port: a second live gateway on it is
refused, while a restart binds over the first one's connections in TIME_WAIT
(SO_REUSEADDR, not SO_REUSEPORT). Loopback only."""
import os
import shutil
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, free_port, need_binary, request  # noqa: E402

need_binary("flashgate")
ARGS = ["--kafka-brokers", "none"]


def exits(g, what, timeout=15):
    """g started; True once it exited non-zero (with the reason in its log)."""
    deadline = time.time() + timeout
    while time.time() < deadline and g.proc.poll() is None:
        time.sleep(0.05)
    if g.proc.poll() is None:
        check(False, "%s: it started (still running after %d s)" % (what, timeout))
        return False
    check(g.proc.returncode == 1, "%s: exit %s, want 1" % (what, g.proc.returncode))
    return True


def done(g):
    g.stop()
    shutil.rmtree(g.tmp, ignore_errors=True)


def listeners(port):
    """Listening TCP sockets on port in this network namespace (/proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:
                n += 1
    return n


# ---- a second gateway on the first one's port ----
a = Gateway(*ARGS, threads=2).start()
b = None
try:
    a.put_sale("only-on-a", stock=5)
    b = Gateway(*ARGS, threads=2)
    b.port = a.port
    b.start(wait=False)
    if exits(b, "a second gateway on an occupied port"):
        check("another process listens there" in b.logs() and "127.0.0.1:%d" % a.port in b.logs(),
              "the reason names the port and the cause: %r" % b.logs()[-400:])
    answers = [a.get("/v1/sales/only-on-a").status for _ in range(40)]
    eq(answers, [200] * 40, "every request on the port reaches the first gateway")
finally:
    if b:
        done(b)
    done(a)

# ---- another process already shares the port with SO_REUSEPORT ----
port = free_port()
intruder = socket.socket()
intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
intruder.bind(("127.0.0.1", port))
intruder.listen(16)
g = Gateway(*ARGS)
g.port = port
g.start(wait=False)
try:
    if exits(g, "a gateway on a port another process holds with SO_REUSEPORT"):
        check("another process listens there" in g.logs(), "the reason: %r" % g.logs()[-300:])
finally:
    done(g)
    intruder.close()

# ---- the admin port: a restart binds over TIME_WAIT, a second live process is refused ----
def time_waits(port):
    """Connections in TIME_WAIT whose local port is port (/proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:]
                   if line.split()[3] == "06" and int(line.split()[1].split(":")[1], 16) == port)


def admin_close_first(port):
    """One admin request with Connection: close: the server closes first, so the
    connection's TIME_WAIT is on the admin port's side."""
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    c.close()
    return data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else data


a = Gateway(*ARGS)
a.start()
b = c = None
try:
    eq([admin_close_first(a.admin_port) for _ in range(3)], [b"200"] * 3,
       "admin /healthz with Connection: close")
    b = Gateway(*ARGS)
    b.admin_port = a.admin_port
    b.start(wait=False)
    if exits(b, "a second gateway on a live gateway's admin port"):
        check("127.0.0.1:%d" % a.admin_port in b.logs(),
              "the reason names the admin address: %r" % b.logs()[-400:])
    eq(request(a.admin_port, "GET", "/healthz").status, 200, "the first one keeps its admin port")
    a.stop()
    check(time_waits(a.admin_port) > 0,
          "the closed admin connections wait in TIME_WAIT on the admin port (%d)"
          % time_waits(a.admin_port))
    c = Gateway(*ARGS)
    c.admin_port = a.admin_port
    c.start(wait=False)
    deadline = time.time() + 20
    while time.time() < deadline and c.proc.poll() is None:
        try:
            if request(c.admin_port, "GET", "/readyz", timeout=1).status == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    check(c.proc.poll() is None, "a restart on the admin port at once, over its TIME_WAIT, "
          "starts: %r" % c.logs()[-400:])
    eq(request(c.admin_port, "GET", "/readyz").status, 200, "and answers there")
finally:
    for x in (c, b):
        if x:
            done(x)
    done(a)

# ---- --listen HOST:0: one port for every worker, said and written ----
g = Gateway(*ARGS, threads=4)
g.args += ["--listen", "127.0.0.1:0"]
g.start(wait=False)
try:
    path = os.path.join(g.data_dir, "listen.addr")
    deadline = time.time() + 20
    while time.time() < deadline and not os.path.exists(path) and g.proc.poll() is None:
        time.sleep(0.05)
    check(os.path.exists(path), "<data-dir>/listen.addr is written")
    if os.path.exists(path):
        text = open(path).read()
        check(text.startswith("127.0.0.1:") and text.endswith("\n"), "listen.addr: %r" % text)
        p = int(text.strip().rsplit(":", 1)[1])
        check(p != 0, "a real port: %d" % p)
        g.port = p
        g.wait_ready()
        check("listening" in g.logs() and "listen=127.0.0.1:%d" % p in g.logs(),
              "the log says the bound address: %r" % g.logs()[-600:])
        eq(listeners(p), 4, "the 4 workers listen on that one port")
        eq([request(p, "GET", "/healthz").status for _ in range(20)], [200] * 20,
           "the port answers")
finally:
    done(g)

finish()
