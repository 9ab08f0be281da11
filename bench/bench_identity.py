#!/usr/bin/env python3
"""`make bench`'s identity section: what verified buyer identity costs
the gateway, side by side with OpenSSL on this machine. Python 3 stdlib, wrk.

Prints, in one run:
  1. `openssl speed -seconds 1` for ecdsap256 (the data dir key's ES256), rsa2048 and
     ed25519, next to flashgate-bench-identity's per-token figures (bench/identity.py):
     one uncached verification (id_verify) and a cached one (id_verify_cached).
  2. The accept path (202, spool only) with identity.mode=jwt against none: server CPU
     per request (utime+stime of the one-thread gateway over a wrk -t1 -c64 run, as
     bench.py measures), median of BENCH_REPS rounds, interleaved. In jwt mode every
     request carries a token never seen before (minted beforehand by flashgate-token
     --count), so each accept costs one signature check.
  3. A retried buy with a cached token: 64 users buying again and again (409 after
     their first) in jwt mode against none, and against none sent the same token header
     (ignored there): the difference to the latter is the identity work alone, the former
     adds the kernel's cost of ~400 more bytes a request.
  4. The answers that need no identity (sold out 410, not started 425, unknown sale
     404) from a jwt-mode gateway, each against nginx `return 200` under the same wrk
     script in the run before it (bench.py's x nginx).
  5. The JWKS refresh: two jwt-mode gateways on one JWK set (a key made with
     flashgate-token --init), one reading it from identity.jwks_file, the other fetching it
     from identity.jwks_url (a Python http.server on 127.0.0.1 in this process) every
     identity.jwks_refresh=1s, the shortest allowed; the URL answers the set and the set plus a
     second key by turns, so every refresh publishes a new key set. Each gets the same paced
     load of accepted buys (wrk -c16, each connection waiting 8 ms after an answer: at most
     2000/s, under the gateway's capacity, so p99 is not the closed loop's queue), every token
     new to the gateway (an uncached verification each), rounds interleaved; wrk's p99 of
     both, and the refreshes counted during each run (flashgate_identity_jwks_refreshes_total).
Targets: jwt accept <= none accept + 1.1 x one verification (openssl speed's);
cached retry <= none retry with the same bytes + 1 us; the no-identity answers <= 1.0 x nginx;
the refreshing gateway's p99 (median) within the jwks_file one's run-to-run range (at most its
highest round).

Environment as bench.py (FLASHGATE_BIN, BENCH_REPS, BENCH_SECONDS, BENCH_QUICK).
Run alone: BENCH_ONLY=identity sh bench/bench.sh; BENCH_IDENTITY_JWKS_ONLY=1 runs section 5
alone.
"""
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import shutil
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (Gateway, wrk, nginx, process bookkeeping)
import identity as I  # noqa: E402  (openssl speed, flashgate-bench-identity)
from wrklua import ANSWERS_LUA  # noqa: E402  (the wrk scripts' answer count)

CONNS = 64
TOKENS = 6000 if B.QUICK else 40000  # a round stops when its tokens run out
# section 5's paced load: JWKS_CONNS connections, each waiting JWKS_PACE_MS after an answer
JWKS_CONNS, JWKS_PACE_MS = 16, 8
JWKS_RATE = JWKS_CONNS * 1000 // JWKS_PACE_MS  # the most it sends a second

TOKENS_LUA = r"""
-- wrk: POST /v1/sales/SALE/orders, one line of TOKENS_FILE per request as its bearer
-- token (body {"qty":1}); MODE "body": the token file's users as body user_id instead
-- (identity.mode=none; "bodyhdr": with the token's header too, which none ignores). CYCLE: the first N lines over and over (retries); else the
-- thread stops when the lines run out, so no token is sent twice.
local sale, file, mode, cycle = "s", nil, "jwt", 0
local toks, users, i = {}, {}, 0
function init(args)
   sale, file, mode, cycle = args[1], args[2], args[3], tonumber(args[4] or "0")
   for line in io.lines(file) do
      table.insert(toks, line)
      if cycle > 0 and #toks >= cycle then break end
   end
   for n = 1, #toks do users[n] = "bench-" .. (n - 1) end
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["X-Forwarded-For"] = "198.18.0.1"
end
function request()
   i = i + 1
   if i > #toks then
      if cycle > 0 then i = 1 else wrk.thread:stop() i = #toks end
   end
   if mode == "jwt" then
      wrk.headers["Authorization"] = "Bearer " .. toks[i]
      return wrk.format(nil, nil, nil, '{"qty":1}')
   end
   if mode == "bodyhdr" then  -- the token's bytes sent along, unread by identity.mode=none
      wrk.headers["Authorization"] = "Bearer " .. toks[i]
   end
   return wrk.format(nil, nil, nil, '{"user_id":"' .. users[i] .. '","qty":1}')
end
""" + ANSWERS_LUA

# TOKENS_LUA paced: each connection waits args[5] ms after an answer before its next request
PACED_LUA = TOKENS_LUA + r"""
local tokens_init = init
function init(args)
   tokens_init(args)
   pace = tonumber(args[5] or "0")
end
function delay() return pace end
"""

PLAIN_LUA = r"""
-- wrk: POST /v1/sales/SALE/orders without a token, a new body user_id per request.
local sale, counter = "s", 0
function init(args)
   sale = args[1]
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
end
function request()
   counter = counter + 1
   return wrk.format(nil, nil, nil, string.format('{"user_id":"so-%d","qty":1}', counter))
end
""" + ANSWERS_LUA


# The no-identity answers against nginx (and the cached retry against none sent the same
# bytes): each round runs nginx, the gateway, the gateway,
# nginx (half of BENCH_SECONDS each), and its ratio is the gateway's CPU per request over
# both of its runs against nginx's over both of its. A load that rises or falls through
# the round (other work on the shared machine) weighs on both sides alike; one run
# each, nginx first, charged all of a rising load to the gateway: the 410 read 1.10x
# nginx by the median of three such rounds while the medians of the same runs gave 0.97x.
PAIR_NOTE = ("ABBA rounds: nginx, gateway, gateway, nginx, %d s each; a round's ratio over "
             "its two runs each")


def user_ticks(pid):
    """utime of the process (all its threads), in clock ticks"""
    st = open("/proc/%d/stat" % pid).read()
    return int(st[st.rindex(")") + 2:].split()[11])


def run_user(url, secs, script, args, pid):
    """B.run_wrk with the server's user CPU per request too (user_us): identity's work is
    all in user space, and the kernel's share, the same for the same bytes, is the
    noisiest part of a figure on a shared machine"""
    u0 = user_ticks(pid)
    r = B.run_wrk(url, CONNS, secs, script, args, pid)
    r["user_us"] = (user_ticks(pid) - u0) * 1e6 / B.CLK_TCK / max(r["requests"], 1)
    return r


def merge(runs):
    """One figure of several wrk runs: CPU per request over all of their requests (the
    rest from the first run, the answers summed)."""
    r = dict(runs[0])
    n = sum(x["requests"] for x in runs)
    r["cpu_us"] = sum(x["cpu_us"] * x["requests"] for x in runs) / max(n, 1)
    if "user_us" in r:
        r["user_us"] = sum(x["user_us"] * x["requests"] for x in runs) / max(n, 1)
    r["requests"] = n
    r["rps"] = sum(x["rps"] for x in runs) / len(runs)
    r["answers"] = {}
    for x in runs:
        for k, v in x["answers"].items():
            r["answers"][k] = r["answers"].get(k, 0) + v
    return r


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def main():
    bindir = B.find_bin()
    tmp = tempfile.mkdtemp(prefix="flashgate-bench-id-")
    toks_lua = os.path.join(tmp, "tokens.lua")
    plain_lua = os.path.join(tmp, "plain.lua")
    paced_lua = os.path.join(tmp, "paced.lua")
    open(toks_lua, "w").write(TOKENS_LUA)
    open(plain_lua, "w").write(PLAIN_LUA)
    open(paced_lua, "w").write(PACED_LUA)
    t0 = time.time()
    load0 = open("/proc/loadavg").read().split()[:3]
    srv = None
    try:
        if os.environ.get("BENCH_IDENTITY_JWKS_ONLY"):
            res, sp, rows = None, None, None
        else:
            res, sp, rows = run(tmp, bindir, toks_lua, plain_lua)
        srv = JwksServer(tmp, bindir)
        jres = run_jwks(tmp, bindir, paced_lua, srv)
    finally:
        B.stop_all()
        if srv:
            srv.close()
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = open("/proc/loadavg").read().split()[:3]
    report(res, sp, rows, load0, load1, time.time() - t0, jres)


def run(tmp, bindir, toks_lua, plain_lua):
    # 1. per-token figures: openssl speed and flashgate-bench-identity
    B.log("identity: openssl speed and flashgate-bench-identity")
    sp = I.openssl_speed(1)
    exe = os.path.join(bindir, "flashgate-bench-identity")
    out = subprocess.run([exe, "0.5" if B.QUICK else "1"], capture_output=True, text=True,
                         check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}

    common = ["--kafka-brokers", "none", "--limits-user-rps", "0"]
    gj = B.Gateway(tmp, "gw-jwt", os.path.join(bindir, "flashgate"),
                   common + ["--set", "identity.mode=jwt"])
    gn = B.Gateway(tmp, "gw-none", os.path.join(bindir, "flashgate"), common)
    ngx, ngx_port = B.start_nginx(tmp)
    tokf = os.path.join(tmp, "tokens.txt")
    B.log("identity: minting %d tokens (flashgate-token --count)" % TOKENS)
    with open(tokf, "w") as f:
        subprocess.run([os.path.join(bindir, "flashgate-token"), "--data-dir",
                        os.path.join(gj.dir, "data"), "--count", str(TOKENS), "bench"],
                       stdout=f, check=True, timeout=600)
    gj.put_sale("so", 0)
    gj.put_sale("later", 1000)
    B.http_req(gj.admin, "PUT", "/admin/v1/sales/later",
               {"stock": 1000, "per_user_limit": 1, "starts_at": rfc3339(time.time() + 86400)},
               B.TOKEN)
    for g in (gj, gn):
        g.put_sale("retry", B.HUGE)

    cases = ["accept, none", "accept, jwt", "retry, none", "retry, none + token bytes",
             "retry, jwt (cached)",
             "nginx (410's script)", "sold out (410), jwt", "nginx (425's script)",
             "not started (425), jwt", "nginx (404's script)", "unknown sale (404), jwt"]
    res = {c: [] for c in cases}
    for rep in range(B.REPS):
        for c in cases:
            if c.startswith("nginx"):
                continue  # run with its pair (the no-identity answers' ABBA round)
            B.log("identity rep %d/%d: %s" % (rep + 1, B.REPS, c))
            if c.startswith("accept"):
                g = gj if "jwt" in c else gn
                sale = g.new_sale("acc", B.HUGE)
                r = B.run_wrk(g.url(), CONNS, B.SECONDS, toks_lua,
                              [sale, tokf, "jwt" if g is gj else "body", "0"], g.pid)
            elif c == "retry, none + token bytes":
                continue  # run with its pair (the cached retry's ABBA round)
            elif c.startswith("retry"):
                g = gj if "jwt" in c else gn
                if g is gn:
                    r = B.run_wrk(gn.url(), CONNS, B.SECONDS, toks_lua,
                                  ["retry", tokf, "body", "64"], gn.pid)
                else:  # against none sent the same bytes, ABBA (see PAIR_NOTE)
                    peer = "retry, none + token bytes"
                    half = max(1, B.SECONDS // 2)
                    runs = {c: [], peer: []}
                    for who in (peer, c, c, peer):
                        gw = gj if who == c else gn
                        runs[who].append(run_user(
                            gw.url(), half, toks_lua,
                            ["retry", tokf, "jwt" if gw is gj else "bodyhdr", "64"], gw.pid))
                    res[peer].append(merge(runs[peer]))
                    r = merge(runs[c])
            elif "(4" in c:  # a no-identity answer and its nginx peer, ABBA (see PAIR_NOTE)
                peer = "nginx (%s's script)" % c.split("(")[1][:3]
                sale = {"410": "so", "425": "later", "404": "nosuch"}[c.split("(")[1][:3]]
                half = max(1, B.SECONDS // 2)
                ngx_url = "http://127.0.0.1:%d" % ngx_port
                runs = {c: [], peer: []}
                for who in (peer, c, c, peer):
                    if who == peer:
                        runs[who].append(B.run_wrk(ngx_url, CONNS, half, plain_lua, [sale],
                                                   pid=ngx.pid, pid_children=True))
                    else:
                        runs[who].append(B.run_wrk(gj.url(), CONNS, half, plain_lua, [sale],
                                                   gj.pid))
                res[peer].append(merge(runs[peer]))
                r = merge(runs[c])
            res[c].append(r)
    B.stop(gj.proc)
    B.stop(gn.proc)
    B.stop(ngx)
    return res, sp, rows


class JwksServer:
    """A JWK set on http://127.0.0.1:PORT/jwks.json: key 1 alone and key 1 with key 2 by
    turns, so that every fetch finds a set other than the one before (both keys made with
    flashgate-token --init in their own dirs; the tokens are signed with key 1). The file
    holds key 1's set, for the jwks_file gateway."""

    def __init__(self, tmp, bindir):
        tool = os.path.join(bindir, "flashgate-token")
        self.key_dir = os.path.join(tmp, "jwks-key1")
        sets = []
        for d in (self.key_dir, os.path.join(tmp, "jwks-key2")):
            os.makedirs(d, exist_ok=True)
            out = subprocess.run([tool, "--data-dir", d, "--init", "--jwks"], capture_output=True,
                                 text=True, check=True).stdout
            sets.append(json.loads(out)["keys"])
        self.one = json.dumps({"keys": sets[0]}).encode()
        self.both = json.dumps({"keys": sets[0] + sets[1]}).encode()
        self.file = os.path.join(tmp, "jwks.json")
        open(self.file, "wb").write(self.one)
        self.served = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = owner.both if owner.served % 2 else owner.one
                owner.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/jwks.json" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def jwks_refreshes(g):
    """g's completed JWKS fetches (flashgate_identity_jwks_refreshes_total, ok)"""
    st, body = B.http_req(g.admin, "GET", "/metrics", token=B.TOKEN)
    if st != 200:
        return 0
    m = re.search(r'^flashgate_identity_jwks_refreshes_total\{result="ok"\} (\d+)',
                  body.decode(), re.M)
    return int(m.group(1)) if m else 0


def run_jwks(tmp, bindir, paced_lua, srv):
    """Section 5: the same paced accepted buys on a jwks_file gateway and a jwks_url one
    refreshing every second, rounds interleaved; each run its own tokens (every
    verification uncached)."""
    B.log("identity: JWKS refresh (jwks_url every 1 s against jwks_file)")
    common = ["--kafka-brokers", "none", "--limits-user-rps", "0", "--set", "identity.mode=jwt"]
    gf = B.Gateway(tmp, "gw-jwks-file", os.path.join(bindir, "flashgate"),
                   common + ["--set", "identity.jwks_file=" + srv.file])
    gu = B.Gateway(tmp, "gw-jwks-url", os.path.join(bindir, "flashgate"),
                   common + ["--set", "identity.jwks_url=" + srv.url,
                             "--set", "identity.jwks_refresh=1s"])
    per = int(JWKS_RATE * B.SECONDS * 1.5)  # a run's tokens, with room
    cases = [("jwks_file (no refresh)", gf), ("jwks_url, refresh every 1 s", gu)]
    allt = os.path.join(tmp, "jwks-tokens.txt")
    B.log("identity: minting %d tokens" % (per * len(cases) * B.REPS))
    with open(allt, "w") as f:
        subprocess.run([os.path.join(bindir, "flashgate-token"), "--data-dir", srv.key_dir,
                        "--count", str(per * len(cases) * B.REPS), "jwks"],
                       stdout=f, check=True, timeout=600)
    lines = open(allt).read().splitlines()
    res = {c: [] for c, _ in cases}
    k = 0
    for rep in range(B.REPS):
        for c, g in cases:
            B.log("identity rep %d/%d: %s" % (rep + 1, B.REPS, c))
            tokf = os.path.join(tmp, "jwks-tokens-%d.txt" % k)
            open(tokf, "w").write("\n".join(lines[k * per:(k + 1) * per]) + "\n")
            k += 1
            sale = g.new_sale("jwks", B.HUGE)
            n0 = jwks_refreshes(g)
            r = B.run_wrk(g.url(), JWKS_CONNS, B.SECONDS, paced_lua,
                          [sale, tokf, "jwt", "0", str(JWKS_PACE_MS)], g.pid)
            r["refreshes"] = jwks_refreshes(g) - n0
            res[c].append(r)
    B.stop(gf.proc)
    B.stop(gu.proc)
    return res


def report_jwks(jres):
    print("-- JWKS refresh: paced accepted buys (wrk -t1 -c%d, %d ms after each answer: at most "
          "%d/s), jwt, ES256, every token new; median of %d rounds"
          % (JWKS_CONNS, JWKS_PACE_MS, JWKS_RATE, B.REPS))
    print("  %-28s %8s %8s %8s %13s %10s  %s" % ("case", "req/s", "p50 ms", "p99 ms",
                                                 "p99 min-max", "refreshes", "answers"))
    for c, rs in jres.items():
        p99 = [r["p99"] for r in rs]
        tot = {}
        for r in rs:
            for code, v in r["answers"].items():
                tot[code] = tot.get(code, 0) + v
        n = sum(tot.values())
        mix = " ".join("%d=%.0f%%" % (code, 100.0 * v / n) for code, v in sorted(tot.items()))
        print("  %-28s %8.0f %8.2f %8.2f %6.2f-%-6.2f %10s  %s" % (
            c, B.med([r["rps"] for r in rs]), B.med([r["p50"] for r in rs]), B.med(p99),
            min(p99), max(p99), "/".join(str(r["refreshes"]) for r in rs), mix))
    (_, rf), (_, ru) = list(jres.items())
    fp, up = [r["p99"] for r in rf], B.med([r["p99"] for r in ru])
    print("  target: jwks_url p99 %.2f ms (median) within jwks_file's run-to-run range "
          "%.2f-%.2f ms (at most its highest round): %s"
          % (up, min(fp), max(fp), "yes" if up <= max(fp) else "NO"))


def report(res, sp, rows, load0, load1, elapsed, jres):
    print("== Identity: what a verified buyer costs (bench/bench_identity.py) ==")
    print("cpu: %s, %d cores; load %s -> %s; %d rounds of %d s, wrk -t1 -c%d, one worker"
          % (B.cpu_model(), os.cpu_count(), " ".join(load0), " ".join(load1), B.REPS, B.SECONDS,
             CONNS))
    if res is None:  # BENCH_IDENTITY_JWKS_ONLY
        report_jwks(jres)
        print("identity section: %.0f s" % elapsed)
        return
    print("-- per token: openssl speed -seconds 1 | flashgate-bench-identity (thread CPU)")
    print("%-6s | %12s %12s %10s | %10s %10s %10s" % (
        "alg", "sign/s", "verify/s", "verify_us", "floor_us", "id_verify", "cached_ns"))
    for alg in ("ES256", "RS256", "EdDSA"):
        s = sp.get(alg, (0, 0))
        f = rows.get(alg, ["", "-", "-", "-", "-", "-"])
        print("%-6s | %12.0f %12.0f %10.1f | %10s %10s %10s" % (
            alg, s[0], s[1], 1e6 / s[1] if s[1] else float("nan"), f[1], f[2], f[4]))

    def m(c, key="cpu_us"):
        return B.med([r[key] for r in res[c]])

    def answers(c):
        tot = {}
        for r in res[c]:
            for k, v in r["answers"].items():
                tot[k] = tot.get(k, 0) + v
        n = sum(tot.values())
        return " ".join("%d=%.0f%%" % (k, 100.0 * v / n) for k, v in sorted(tot.items())) if n else ""

    print("-- server CPU per request (us, median of %d), answer mix" % B.REPS)
    for c in res:
        print("  %-26s %7.2f us  %9.0f req/s  p99 %6.2f ms  %s" % (
            c, m(c), m(c, "rps"), m(c, "p99"), answers(c)))
    es = sp.get("ES256", (0, 0))[1]
    one = 1e6 / es if es else float("nan")
    acc_n, acc_j = m("accept, none"), m("accept, jwt")
    ret_n, ret_j = m("retry, none + token bytes"), m("retry, jwt (cached)")
    print("-- targets (ES256, the data dir's key; one verification at openssl speed = %.1f us)"
          % one)
    ok = acc_j <= acc_n + 1.1 * one
    print("  jwt accept %.1f us <= none %.1f + 1.1 x %.1f = %.1f us: %s (jwt - none = %.1f us"
          " = %.2f x one verification)" % (acc_j, acc_n, one, acc_n + 1.1 * one,
                                            "yes" if ok else "NO", acc_j - acc_n,
                                            (acc_j - acc_n) / one if one else float("nan")))
    cached = rows.get("ES256", [None] * 6)[4]
    rj, rn = res["retry, jwt (cached)"], res["retry, none + token bytes"]
    d = B.med([a["cpu_us"] - b["cpu_us"] for a, b in zip(rj, rn)])
    du = B.med([a["user_us"] - b["user_us"] for a, b in zip(rj, rn)])
    print("  cached token: %s ns per lookup (flashgate-bench-identity); a retry with it %.2f us"
          " against %.2f without identity, the same bytes sent: %+.2f us (median of the ABBA"
          " rounds' differences %s; target <= 1 us: %s), user CPU alone %+.2f us;"
          " the token's bytes alone: %+.2f us" % (
              cached, ret_j, ret_n, d,
              " ".join("%+.2f" % (a["cpu_us"] - b["cpu_us"]) for a, b in zip(rj, rn)),
              "yes" if d <= 1.0 else "NO", du, ret_n - m("retry, none")))
    for c, peer in (("sold out (410), jwt", "nginx (410's script)"),
                    ("not started (425), jwt", "nginx (425's script)"),
                    ("unknown sale (404), jwt", "nginx (404's script)")):
        xs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(res[c], res[peer])]
        x = B.med(xs)
        print("  %-26s %.2f x nginx (target <= 1.0: %s); rounds %s; medians' ratio %.2f" % (
            c, x, "yes" if x <= 1.0 else "NO", " ".join("%.2f" % v for v in xs),
            m(c) / m(peer)))
    print("  (" + PAIR_NOTE % max(1, B.SECONDS // 2) + ")")
    report_jwks(jres)
    print("identity section: %.0f s" % elapsed)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        B.stop_all()
        sys.exit(130)
