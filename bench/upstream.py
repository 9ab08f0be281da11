#!/usr/bin/env python3
"""A test upstream for the mixed overload benchmark: one HTTP/1.1 server on
127.0.0.1 that serves at most RATE answers per second, like a page service
with a fixed capacity: requests are answered in arrival order, each taking
1/RATE s of a single virtual server, so past RATE/s its queue (and latency)
grows, as a real saturated service's does. Keep-alive; GET/HEAD only needs
a request head, a body (Content-Length) is read and ignored.

    python3 bench/upstream.py --port 0 --rate 2000 [--port-file F]

Prints "listening PORT" on stdout (and writes it to --port-file). Stops on
SIGTERM/SIGINT. Counts served answers; GET /__stats answers them at once
(outside the queue) as JSON.
"""
import argparse
import asyncio
import json
import signal
import sys
import time

BODY = b'{"page":"item","html":"' + b"x" * 200 + b'"}'


class Upstream:
    def __init__(self, rate):
        self.interval = 1.0 / rate
        self.next_free = 0.0
        self.served = 0
        self.max_queue_s = 0.0

    def slot(self, loop):
        """When the virtual server finishes the request that arrives now."""
        now = loop.time()
        start = max(now, self.next_free)
        self.next_free = start + self.interval
        self.max_queue_s = max(self.max_queue_s, start - now)
        return self.next_free


class Conn(asyncio.Protocol):
    def __init__(self, up):
        self.up = up
        self.buf = b""
        self.tr = None
        self.pending = 0
        self.closed = False

    def connection_made(self, tr):
        self.tr = tr

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.tr.close()
                return
            head = self.buf[:end].decode("latin-1")
            clen = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v.strip() or 0)
            if len(self.buf) < end + 4 + clen:
                return
            self.buf = self.buf[end + 4 + clen:]
            path = head.split(" ", 2)[1] if head.count(" ") >= 2 else "/"
            loop = asyncio.get_running_loop()
            if path == "/__stats":
                body = json.dumps({"served": self.up.served,
                                   "max_queue_ms": round(self.up.max_queue_s * 1000, 1)}).encode()
                self.answer(body)
                continue
            loop.call_at(self.up.slot(loop), self.serve)

    def serve(self):
        self.up.served += 1
        self.answer(BODY)

    def answer(self, body):
        if self.closed:
            return
        self.tr.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--port-file")
    a = ap.parse_args()
    if a.rate <= 0:
        sys.exit("upstream: --rate must be > 0")
    up = Upstream(a.rate)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Conn(up), "127.0.0.1", a.port, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        import os
        os.replace(a.port_file + ".tmp", a.port_file)
    print("listening %d" % port, flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    srv.close()
    print("served %d, max queue %.1f ms" % (up.served, up.max_queue_s * 1000), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
