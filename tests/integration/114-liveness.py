"""Liveness: a stuck worker loop fails /healthz and stops systemd's watchdog.

A gateway with two workers, server.liveness_timeout=2s, and the environment
systemd gives a Type=notify service with WatchdogSec=2s: NOTIFY_SOCKET (a unix
datagram socket this test reads) and WATCHDOG_USEC. Then:

- before: GET /healthz on the admin listener answers 200 alive, and
  WATCHDOG=1 arrives every 0.5 s (a quarter of WATCHDOG_USEC);
- worker 1's loop sleeps 5 s (PUT /admin/v1/debug/stall, debug routes only):
  within the timeout plus a second, /healthz answers 503 loop_stuck naming
  worker 1 and an age >= the timeout; no WATCHDOG=1 arrives from then until
  the loop turns again (a gap in the pings longer than the timeout);
- after: /healthz answers 200 again and the pings resume;
- without --enable-debug-routes the stall route answers 404.
"""
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")

TIMEOUT_S = 2
STALL_MS = 5000
tmp = tempfile.mkdtemp(prefix="fg-liveness-")
path = os.path.join(tmp, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(0.2)
pings = []  # monotonic times of WATCHDOG=1
msgs = []
done = threading.Event()


def reader():
    while not done.is_set():
        try:
            m = sock.recv(4096).decode()
        except socket.timeout:
            continue
        except OSError:
            return
        msgs.append(m)
        if "WATCHDOG=1" in m.split("\n"):
            pings.append(time.monotonic())


def healthz(g):
    return g.admin("GET", "/healthz", token=None)


t = threading.Thread(target=reader, daemon=True)
t.start()
g = Gateway("--enable-debug-routes", "--kafka-brokers", "none",
            "--set", "server.liveness_timeout=%ds" % TIMEOUT_S,
            extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
try:
    g.start()
    time.sleep(1.6)
    r = healthz(g)
    eq(r.status, 200, "healthz alive before the stall")
    eq(r.json.get("status"), "alive", "healthz says alive")
    check(len(pings) >= 2, "WATCHDOG=1 pings while every loop turns (%d in 1.6 s)" % len(pings))

    r = g.admin("PUT", "/admin/v1/debug/stall", body={"worker": 1, "ms": STALL_MS})
    eq(r.status, 200, "the stall route answers 200")
    t0 = time.monotonic()
    stuck = None
    while time.monotonic() - t0 < TIMEOUT_S + 2.5:
        r = healthz(g)
        if r.status == 503:
            stuck = r
            break
        time.sleep(0.1)
    check(stuck is not None, "healthz fails while worker 1's loop is stuck")
    if stuck is not None:
        body = stuck.json
        eq(body.get("status"), "stuck", "the 503 says stuck")
        eq(body.get("code"), "loop_stuck", "the 503's code")
        eq(body.get("worker"), 1, "the 503 names the stuck worker")
        check(body.get("age_ms", 0) >= TIMEOUT_S * 1000, "its age is past the timeout (%r)" % body)
        eq(body.get("timeout_ms"), TIMEOUT_S * 1000, "the 503 says the timeout")
    # the public port still answers through the other worker (or not at all
    # from the stuck one); the admin's health is the one that must see it
    recovered = False
    while time.monotonic() - t0 < STALL_MS / 1000 + 5:
        if healthz(g).status == 200:
            recovered = True
            break
        time.sleep(0.1)
    check(recovered, "healthz alive again once the loop turns")
    t1 = time.monotonic()
    time.sleep(1.2)
    gaps = [b - a for a, b in zip(pings, pings[1:]) if a >= t0 - 1]
    longest = max(gaps) if gaps else 0
    check(longest > TIMEOUT_S + 0.5,
          "no WATCHDOG=1 while the loop was stuck (longest gap %.2f s)" % longest)
    check(any(p > t1 for p in pings), "the pings resume after the stall")
    check(any("worker event loop stuck" in line for line in g.logs(20000).splitlines()),
          "the stuck loop is logged")
finally:
    g.cleanup()

# Fault injection only with the debug routes on.
g = Gateway("--kafka-brokers", "none")
try:
    g.start()
    eq(g.admin("PUT", "/admin/v1/debug/stall", body={"worker": 0, "ms": 10}).status, 404,
       "the stall route is not served without --enable-debug-routes")
finally:
    g.cleanup()
done.set()
sock.close()
shutil.rmtree(tmp, ignore_errors=True)
finish()
