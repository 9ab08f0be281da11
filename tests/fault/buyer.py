#!/usr/bin/env python3
"""A buyer on fresh connections (from 127.0.0.1), for the connection-abuse
measurements: RATE requests/s for DURATION seconds to POST /v1/sales/SALE/orders,
each with its own connection and a 5 s timeout. Prints JSON: sent, answered by
status, errors, latency p50/p99/max in ms, the connect() p99, and this
process's own wake-up lag p99 (how late its sleeps between requests end: what
the machine's run queue alone adds to any latency measured here, the
gateway's included). Loopback only."""
import argparse
import http.client
import json
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--sale", default="s1")
ap.add_argument("--rate", type=float, default=20)
ap.add_argument("--duration", type=float, default=10)
a = ap.parse_args()
lat, conn_lat, lag, status, errors = [], [], [], {}, {}
t_end = time.monotonic() + a.duration
i = 0
while time.monotonic() < t_end:
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
        c.connect()
        conn_lat.append(time.monotonic() - t)
        c.request("POST", "/v1/sales/%s/orders" % a.sale, body=json.dumps({"user_id": "b-%d" % i}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        status[r.status] = status.get(r.status, 0) + 1
    except OSError as e:
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    dt = time.monotonic() - t
    lat.append(dt)
    i += 1
    pause = max(0, 1 / a.rate - dt)
    t = time.monotonic()
    time.sleep(pause)
    lag.append(time.monotonic() - t - pause)


def pick(v, q):
    v = sorted(v)
    return round(v[min(len(v) - 1, int(len(v) * q))] * 1e3, 2) if v else None


print(json.dumps({"sent": len(lat), "status": status, "errors": errors, "p50_ms": pick(lat, 0.5),
                  "p99_ms": pick(lat, 0.99), "max_ms": pick(lat, 1), "connect_p99_ms": pick(conn_lat, 0.99),
                  "lag_p99_ms": pick(lag, 0.99)}))
