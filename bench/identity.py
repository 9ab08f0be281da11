#!/usr/bin/env python3
"""What a buyer token costs, side by side with OpenSSL on this machine.

Prints the CPU model and load, `openssl speed -seconds 1` for the three
default algorithms' primitives (rsa2048, ecdsap256, ed25519), and
flashgate-bench-identity's figures for the same algorithms:

  openssl_us  EVP_DigestVerify of the token's bytes alone (the floor)
  verify_us   id_verify, uncached: base64url, two jansson trees, the checks, the same
              signature check; overhead = verify_us / openssl_us
  cached_ns   id_verify_cached answering from the per-worker cache (target <= 1 us)
  mint_us     id_signer_mint (the load tester mints one token per account)

Usage: bench/identity.py [--seconds S]   (FLASHGATE_BIN: the build dir, default build/)
On a machine shared with other work, every figure grows; the ratios hold better.
"""
import argparse
import os
import re
import subprocess
import sys

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def openssl_speed(seconds):
    """{name: (sign/s, verify/s)} from `openssl speed`."""
    out = subprocess.run(["openssl", "speed", "-seconds", str(seconds), "rsa2048", "ecdsap256",
                          "ed25519"], capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"rsa 2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line.strip())
        if m:
            res["RS256"] = (float(m.group(1)), float(m.group(2)))
        m = re.match(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line.strip())
        if m:
            res["ES256"] = (float(m.group(1)), float(m.group(2)))
        m = re.match(r"253 bits EdDSA \(Ed25519\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line.strip())
        if m:
            res["EdDSA"] = (float(m.group(1)), float(m.group(2)))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    a = ap.parse_args()
    bindir = os.environ.get("FLASHGATE_BIN", os.path.join(SRC, "build"))
    exe = os.path.join(bindir, "flashgate-bench-identity")
    if not os.access(exe, os.X_OK):
        sys.exit("identity: %s not found (cmake --build build --target flashgate-bench-identity)"
                 % exe)
    print("cpu: %s, %d cores, load average %s" % (cpu_model(), os.cpu_count(),
                                                  " ".join("%.2f" % x for x in os.getloadavg())))
    sp = openssl_speed(max(1, int(round(a.seconds))))
    out = subprocess.run([exe, str(a.seconds)], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        f = line.split()
        rows[f[0]] = f
    print("%-6s | %14s %14s | %10s %10s %9s %10s %9s" % (
        "alg", "speed sign/s", "speed verify", "floor_us", "verify_us", "overhead", "cached_ns",
        "mint_us"))
    for alg in ("RS256", "ES256", "EdDSA"):
        s = sp.get(alg, (0, 0))
        f = rows.get(alg)
        if not f:
            continue
        ver_us_speed = 1e6 / s[1] if s[1] else 0
        print("%-6s | %14.0f %8.0f (%4.0fus) | %10s %10s %9s %10s %9s" % (
            alg, s[0], s[1], ver_us_speed, f[1], f[2], f[3], f[4], f[5]))
    print("floor = OpenSSL's verify of the same token in-process; overhead = verify / floor;"
          " target: cached <= 1000 ns, verify <= 1.1x one verification")


if __name__ == "__main__":
    main()
