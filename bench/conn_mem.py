#!/usr/bin/env python3
"""Resident memory per public connection (what a connection costs while it
waits, against nginx's ~1 KiB).

One gateway (--threads 1, the bench's flags, a sold-out sale), then N keep-alive
connections from this process (default 10,000; the guard's caps and deadlines
raised so that none is refused or closed): the gateway's RssAnon (heap and
anonymous mmaps) before, with the N open and idle (no request yet), and 2.5 s
after each of them got one 410 and went idle (two of gw_h1.c's buffer sweeps).
Printed per connection. Loopback only, ~10 s.

Usage: bench/conn_mem.py [N]   Environment: FLASHGATE_BIN (default build/).
Run it under `flock /work/bench.lock` like every benchmark here.
"""
import os
import shutil
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (Gateway, stop, find_bin)
from bench_mem import rss_anon_kib  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    bindir = bench.find_bin()
    tmp = tempfile.mkdtemp(prefix="flashgate-conn-mem-")
    gw = bench.Gateway(tmp, "gw", os.path.join(bindir, "flashgate"),
                       ["--kafka-brokers", "none", "--server-max-connections", str(n + 1000),
                        "--server-head-timeout", "600s", "--server-connection-timeout", "600s"])
    socks = []
    try:
        gw.put_sale("so", 0)
        time.sleep(0.5)
        r0 = rss_anon_kib(gw.pid)
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", gw.port)))
        time.sleep(1.0)
        r1 = rss_anon_kib(gw.pid)
        body = b'{"user_id":"u-1","qty":1}'
        req = (b"POST /v1/sales/so/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for s in socks:
            s.sendall(req)
        for s in socks:
            data = b""
            while not (b"\r\n\r\n" in data and data.endswith(b"}")):
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit("conn_mem: a connection closed before its answer")
                data += chunk
            if b" 410 " not in data.split(b"\r\n", 1)[0]:
                sys.exit("conn_mem: not a 410: %r" % data[:80])
        time.sleep(2.5)  # two buffer sweeps
        r2 = rss_anon_kib(gw.pid)
        print("flashgate %s, %d connections: RssAnon %d KiB before; open and idle %+d KiB "
              "(%.0f bytes each); after one answer each, idle 2.5 s: %+d KiB (%.0f bytes each)"
              % (bindir, n, r0, r1 - r0, (r1 - r0) * 1024.0 / n, r2 - r0, (r2 - r0) * 1024.0 / n))
    finally:
        for s in socks:
            s.close()
        bench.stop(gw.proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
