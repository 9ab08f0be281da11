#!/usr/bin/env python3
"""Slow connections from one address (a slowloris), for the connection-guard
test (tests/integration/16-slow-conns.py) and the full-size measurement
(tests/fault/slow-conns-bench.sh).

Opens COUNT connections from SOURCE (e.g. 127.0.0.3) to HOST:PORT and sends a
request one byte every INTERVAL seconds: in mode "head" the head never ends;
in mode "body" the head is whole (Content-Length: 3000) and the body trickles.
A connection the server closes is reopened after 0.2 s (--reconnect), so the
pressure stays for DURATION seconds. Prints one JSON object: connections
opened, refused at once (closed within 0.5 s without any answer), closed by
the server, the longest and the 99th percentile life of a connection the
server closed, and how many were still open at the end with their age.
Loopback only: HOST must be 127.x or ::1.
"""
import argparse
import heapq
import itertools
import json
import os
import selectors
import socket
import struct
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2

HEAD = (b"POST /v1/sales/s1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Pad: " + b"a" * 4000 + b"\r\n")
BODY_HEAD = (b"POST /v1/sales/s1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 3000\r\n\r\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--source", default="127.0.0.3")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--mode", choices=["head", "body", "mixed"], default="mixed")
    ap.add_argument("--reconnect", action="store_true")
    ap.add_argument("--ready-file", help="touched once COUNT connections were attempted")
    a = ap.parse_args()
    if not (a.host.startswith("127.") or a.host == "::1"):
        sys.exit("loopback only")

    sel = selectors.DefaultSelector()
    conns = {}  # sock -> [opened_at, sent, payload, slot, last_send, first_byte_at]
    lives, byte_lives, refused, opened, errors = [], [], 0, 0, 0
    reopen = []  # (at, slot)
    # heap of (next send, seq, sock): a send looks only at the connections that
    # are due, so that this process, sharing the gateway's cores, spends its CPU
    # on sockets rather than on scanning 10,000 of them 20 times a second.
    due, seq = [], itertools.count()
    t0 = time.monotonic()
    end = t0 + a.duration

    def open_one(slot):
        nonlocal opened, errors
        payload = HEAD if (a.mode == "head" or (a.mode == "mixed" and slot % 2 == 0)) else BODY_HEAD
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The port is picked at connect(), by the whole 4-tuple: bind() alone
            # must find a port free for every destination, and the TIME_WAITs
            # a previous run left on SOURCE made it slow and then fail.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((a.source, 0))
            s.setblocking(False)
            s.connect_ex((a.host, a.port))
        except OSError:
            errors += 1
            s.close()
            return
        opened += 1
        now = time.monotonic()
        # body mode: the whole head at once, then the body by the byte
        conns[s] = [now, 0, payload, slot, now - a.interval, None]
        heapq.heappush(due, (now, next(seq), s))
        sel.register(s, selectors.EVENT_READ)

    def closed(s, now):
        nonlocal refused
        st = conns.pop(s)
        sel.unregister(s)
        s.close()
        life = now - st[0]
        if life < 0.5 and st[1] <= 1:
            refused += 1
        else:
            lives.append(life)
            if st[5] is not None:
                byte_lives.append(now - st[5])
        if a.reconnect:
            reopen.append((now + 0.2, st[3]))

    for i in range(a.count):
        open_one(i)
        if i % 200 == 199:
            # let the kernel's accept queue drain a little
            time.sleep(0.01)
    if a.ready_file:
        open(a.ready_file, "w").close()

    while True:
        now = time.monotonic()
        if now >= end:
            break
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data and s in conns:
                closed(s, time.monotonic())
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, s = heapq.heappop(due)
            st = conns.get(s)
            if st is None:
                continue  # closed since
            st[4] = now
            heapq.heappush(due, (now + a.interval, next(seq), s))
            payload = st[2]
            if payload is BODY_HEAD and st[1] == 0:
                chunk = BODY_HEAD
            elif st[1] < len(payload):
                chunk = payload[st[1]:st[1] + 1]
            else:
                chunk = b"a"
            try:
                n = s.send(chunk)
                if n and st[5] is None:
                    st[5] = now  # established: the kernel took a first byte
                st[1] += n
            except BlockingIOError:
                pass
            except OSError:
                closed(s, now)
        while reopen and reopen[0][0] <= now and len(conns) < a.count:
            _, slot = reopen.pop(0)
            open_one(slot)
    now = time.monotonic()
    still = [now - st[0] for st in conns.values()]
    lives.sort()
    byte_lives.sort()
    out = {
        "opened": opened, "connect_errors": errors, "refused_at_once": refused,
        "closed_by_server": len(lives),
        "max_life_s": round(lives[-1], 3) if lives else None,
        "p99_life_s": round(lives[int(len(lives) * 0.99) - 1], 3) if lives else None,
        # from the first byte sent: without the SYN retries of a full accept queue
        "max_life_from_first_byte_s": round(byte_lives[-1], 3) if byte_lives else None,
        "still_open": len(still), "oldest_open_s": round(max(still), 3) if still else None,
    }
    for s in list(conns):
        # RST rather than FIN: no TIME_WAIT left on SOURCE for the next run
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
