"""The connection guard's deadlines after the head (gw_conn.c), the only
timeouts of the public listener (gw_h1.c has none of its own): with
server.connection_timeout=2s,
 1. an idle keep-alive connection is closed by the server, not before 2 s;
 2. a client that pipelines requests and never reads the answers is closed
    (counted as slow_reads) once its answer made no progress for a timeout;
 3. a client that reads slowly but steadily is not (it may stall for less
    than the timeout: a loaded machine deschedules it; 2 s, not the minimum
    1 s, for that reason);
and the gateway keeps serving others. About 12 s."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
REQ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
PIPELINED = 80000  # ~12 MB of answers: more than the socket buffers hold (tcp_wmem max 4 MB)
# The client's receive buffer, fixed (no autotuning): with net.ipv4.tcp_rmem's max at
# 32 MB (as on some kernels' defaults) a client that reads could autotune it past the
# 12 MB, every answer would be in the kernel early, and case 3 would measure an idle
# connection, not a slow one.
RCVBUF = 256 * 1024


def stats(g):
    r = g.admin("GET", "/admin/v1/stats")
    eq(r.status, 200, "stats")
    return r.json["connections"]


def pipeline(port):
    """A connection that sends PIPELINED requests from a thread (sendall blocks
    once the server stops reading) and is returned unread."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before connect: the window
    s.settimeout(30)
    s.connect(("127.0.0.1", port))

    def send():
        try:
            s.sendall(REQ * PIPELINED)
        except OSError:
            pass  # closed by the server: what case 2 waits for

    threading.Thread(target=send, daemon=True).start()
    return s


g = Gateway("--set", "server.connection_timeout=2s", "--set", "server.head_timeout=2s",
            "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", threads=1).start()
try:
    # --- 1. idle keep-alive ---
    s = socket.create_connection(("127.0.0.1", g.port), timeout=15)
    s.sendall(REQ)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    t0 = time.monotonic()
    rest = b"x"
    try:
        while rest:
            rest = s.recv(4096)
    except OSError:
        pass
    idle = time.monotonic() - t0
    s.close()
    print("idle keep-alive closed after %.2f s" % idle)
    check(got.startswith(b"HTTP/1.1 200"), "the keep-alive request was answered")
    check(1.9 <= idle < 15, "an idle keep-alive connection is closed after connection_timeout")

    # --- 2. answers never read ---
    before = stats(g)["slow_reads"]
    s = pipeline(g.port)
    deadline = time.monotonic() + 20
    while stats(g)["slow_reads"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    st = stats(g)
    print("after the unread pipeline:", st)
    eq(st["slow_reads"], before + 1, "the connection whose answers are never read is closed")
    check(g.get("/healthz").status == 200, "the gateway still serves")
    s.close()

    # --- 3. answers read slowly, steadily ---
    before = stats(g)["slow_reads"]
    s = pipeline(g.port)
    read = 0
    t_end = time.monotonic() + 4
    alive = True
    while time.monotonic() < t_end and alive:
        try:
            b = s.recv(65536)
            alive = bool(b)
            read += len(b)
        except OSError:
            alive = False
        time.sleep(0.1)
    st = stats(g)
    print("slow reader: %d bytes in 4 s, %s" % (read, st))
    check(alive, "a slow but steady reader is not closed")
    eq(st["slow_reads"], before, "nor counted")
    s.close()
finally:
    g.cleanup()
finish()
