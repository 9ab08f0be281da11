#!/usr/bin/env python3
"""Redis CPU per call of the reserve script and of variants of it, each priced by
redis-benchmark -P 64 EVALSHA against a scratch redis-server on a free port (bench/README.md
"Redis" under "Findings that hold"). Python 3 stdlib, cc, redis-server, redis-cli, redis-benchmark.

  flock /work/bench.lock python3 bench/script_steps.py [VARIANTS.py]

The shipped text comes from inventory/inv_redis_lua.h via cc (as bench.py does). VARIANTS.py,
if given, is exec'd with FULL (that text), STD (the bench's keys and arguments) and
v(name, text, args=None) in scope, to add rows. N=calls per run (200000), ROUNDS (3),
RESERVE=FILE prices FILE's text as "as shipped" instead. The variants kept in bench/lua/:
  RESERVE=bench/lua/reserve_169d8da.lua python3 bench/script_steps.py bench/lua/reserve_steps.py
  python3 bench/script_steps.py bench/lua/reserve_ab.py      (169d8da's text against the header's)
  python3 bench/script_steps.py bench/lua/reserve_args.py    (ed847e4's text against the header's)
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(os.environ.get("N", "200000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
# CALLGRIND=1: redis-server under callgrind, instructions per call instead of CPU (noise-free;
# N=20000 ROUNDS=1 is enough, ~10 s a variant)
CALLGRIND = os.environ.get("CALLGRIND", "0") not in ("", "0")
# the reserve script's keys and arguments (the older texts in bench/lua/ take the sale id as
# a fifth argument, OLD_ARGS: they only PUBLISH it on a sell-out)
STD = ["4", "{sale:c}:meta", "{sale:c}:users", "{sale:c}:orders", "{sale:c}:idem",
       "u__rand_int__", "1", "", "o__rand_int__"]
STD_KEY = STD[:7] + ["k__rand_int__", STD[8]]
OLD_ARGS = STD + ["c"]


def shipped(tmp):
    c, exe = os.path.join(tmp, "lua.c"), os.path.join(tmp, "lua")
    with open(c, "w") as f:
        f.write('#include <stdio.h>\n#include "inventory/inv_redis_lua.h"\n'
                'int main(void) { fputs(INV_REDIS_LUA_RESERVE, stdout); return 0; }\n')
    subprocess.run(["cc", "-I", SRC, "-o", exe, c], check=True)
    return subprocess.run([exe], check=True, capture_output=True).stdout.decode()


def main():
    tmp = tempfile.mkdtemp(prefix="script-steps-")
    full = open(os.environ["RESERVE"]).read() if os.environ.get("RESERVE") else shipped(tmp)
    base = OLD_ARGS if "ARGV[5]" in full else STD  # RESERVE= an older text (sale id sent)
    variants = [("as shipped", full, base),
                ("as shipped, with an idempotency key", full, base[:7] + ["k__rand_int__"] + base[8:]),
                ("as shipped, one user over the limit (refusals)", full, base[:5] + ["u1"] + base[6:]),
                ("return 1, the same keys and arguments", "return 1\n", None)]
    if len(sys.argv) > 1:
        env = {"FULL": full, "STD": base, "OLD_ARGS": OLD_ARGS, "SRC": SRC, "os": os,
               "v": lambda name, text, args=None: variants.append((name, text, args))}
        exec(open(sys.argv[1]).read(), env)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    vg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + os.path.join(tmp, "cg.out")]
    rs = subprocess.Popen((vg if CALLGRIND else []) +
                          ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL if CALLGRIND else None)
    hz = os.sysconf("SC_CLK_TCK")
    ndump = [0]

    def cli(*a):
        return subprocess.run(["redis-cli", "-p", str(port)] + list(a), capture_output=True,
                              check=True).stdout.decode().strip()

    def ticks():
        if CALLGRIND:  # instructions since the last zeroing (callgrind_control -z)
            ndump[0] += 1
            subprocess.run(["callgrind_control", "-d", str(rs.pid)], check=True,
                           capture_output=True)
            path = os.path.join(tmp, "cg.out.%d" % ndump[0])
            ir = [int(ln.split()[1]) for ln in open(path) if ln.startswith(("summary:", "totals:"))]
            subprocess.run(["callgrind_control", "-z", str(rs.pid)], check=True,
                           capture_output=True)
            return ir[0]
        f = open("/proc/%d/stat" % rs.pid).read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    res = {name: [] for name, _, _ in variants}
    try:
        for _ in range(300):
            try:
                cli("PING")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        print("load average: %s" % open("/proc/loadavg").read().strip(), flush=True)
        for _ in range(ROUNDS):
            for name, text, args in variants:
                cli("FLUSHALL")
                cli("HSET", "{sale:c}:meta", "id", "c", "total", "1000000000000", "left",
                    "1000000000000", "limit", "5", "starts", "0", "ends", "0", "version", "1")
                sha = cli("SCRIPT", "LOAD", text)
                c0 = ticks()
                p = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(N), "-P", "64",
                                    "-r", "100000000", "-q", "EVALSHA", sha] + (args or STD),
                                   capture_output=True)
                c1 = ticks()
                if b"requests per second" not in p.stdout + p.stderr:
                    raise RuntimeError("%s: %s" % (name, (p.stdout + p.stderr)[-400:]))
                if "errorstat_" in cli("INFO", "errorstats"):
                    raise RuntimeError("%s: the script failed in Redis" % name)
                res[name].append(c1 / N if CALLGRIND else (c1 - c0) * 1e6 / hz / N)
        base = statistics.median(res["as shipped"])
        for name, _, _ in variants:
            m = statistics.median(res[name])
            if CALLGRIND:
                print("%-60s %7.0f instructions %+6.0f" % (name, m, m - base))
            else:
                print("%-60s %6.2f us %+6.2f  [%s]" % (name, m, m - base,
                                                        " ".join("%.2f" % x for x in res[name])))
        print("load average: %s" % open("/proc/loadavg").read().strip())
    finally:
        rs.terminate()
        rs.wait()


if __name__ == "__main__":
    main()
