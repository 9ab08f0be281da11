"""The browser tests' shared setup: Debian's chromium driven by playwright-core
from npm (tests/browser/, its lock file pinning the version), installed with
`npm ci` into the build dir and redone when the lock file changes."""
import os
import shutil
import subprocess

from fg import BIN, SRC, check, finish

CHROMIUM = "/usr/bin/chromium"
PKG = os.path.join(SRC, "tests", "browser")


def need_browser():
    """Returns (node, node_modules dir); skips the test (finish) when node, npm
    or chromium is missing, fails it when npm ci fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    check(node is not None and npm is not None, "node and npm installed")
    check(os.path.exists(CHROMIUM), "chromium installed (deploy/install-deps.sh)")
    if not (node and npm and os.path.exists(CHROMIUM)):
        finish()
    mods = os.path.join(BIN, "browser-test")
    lock = open(os.path.join(PKG, "package-lock.json")).read()
    stamp = os.path.join(mods, "package-lock.json")
    if not os.path.exists(stamp) or open(stamp).read() != lock or \
            not os.path.isdir(os.path.join(mods, "node_modules", "playwright-core")):
        os.makedirs(mods, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(PKG, f), mods)
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=mods,
                           capture_output=True, text=True, timeout=600)
        check(p.returncode == 0, "npm ci: %s %s" % (p.stdout[-500:], p.stderr[-1500:]))
    return node, os.path.join(mods, "node_modules")
