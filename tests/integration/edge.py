"""Servers in front of flashgate, for the deploy tests: nginx with the shipped
deploy/nginx/flashgate.conf and Varnish with deploy/cdn/flashgate.vcl, each
rewritten to loopback ports in a temp dir, run in the foreground (no daemon)
and stopped by PID through fg.Server.

Every rewrite of a shipped file must match exactly as often as expected, so a
test fails (instead of testing something else) when the file drifts.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import SRC, Server, free_port, request  # noqa: E402


def rewrite(text, pattern, repl, count, what):
    """re.subn that insists on `count` matches (the shipped file's shape)."""
    out, n = re.subn(pattern, repl, text, flags=re.M)
    if n != count:
        raise RuntimeError("%s: %d matches of %r, want %d" % (what, n, pattern, count))
    return out


def need_tool(path):
    """A missing dependency is a failure, never a skip."""
    if not path or not os.access(path, os.X_OK):
        print("FAIL: %s not installed (sh deploy/install-deps.sh)" % path, file=sys.stderr)
        sys.exit(1)


class Nginx(Server):
    """nginx running deploy/nginx/flashgate.conf in front of `upstreams`
    (ports on 127.0.0.1), trusting 127.0.0.1 as the CDN (so a test client's
    X-Forwarded-For is the client address)."""

    BIN = shutil.which("nginx") or "/usr/sbin/nginx"

    def __init__(self, upstream_ports):
        need_tool(self.BIN)
        self.tmp = tempfile.mkdtemp(prefix="fg-nginx-")
        os.chmod(self.tmp, 0o755)  # workers run as an unprivileged user
        self.port = free_port()
        self.log_path = os.path.join(self.tmp, "nginx.out")
        shipped = open(os.path.join(SRC, "deploy", "nginx", "flashgate.conf")).read()
        conf = rewrite(shipped, r"^(\s*)set_real_ip_from \S+;.*$", "\\1set_real_ip_from 127.0.0.1;", 1,
                       "flashgate.conf CDN range")
        conf = rewrite(conf, r"^(\s*)server \S+:8080 (.*)$", "\\1server UPSTREAM \\2",
                       len(upstream_ports), "flashgate.conf upstream servers")
        for p in upstream_ports:
            conf = conf.replace("server UPSTREAM", "server 127.0.0.1:%d" % p, 1)
        conf = rewrite(conf, r"^(\s*)listen 80 (.*)$", "\\1listen 127.0.0.1:%d \\2" % self.port, 1,
                       "flashgate.conf listen")
        # IPv6's port 80 is not ours to take here (unprivileged, maybe no IPv6)
        conf = rewrite(conf, r"^\s*listen \[::\]:80 .*\n", "", 1, "flashgate.conf listen [::]")
        open(os.path.join(self.tmp, "flashgate.conf"), "w").write(conf)
        t = self.tmp
        main = """
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 2048; }
http {
    access_log off;
    # as Debian's nginx.conf, which the shipped file is included into: its own
    # answers must say JSON themselves
    default_type application/octet-stream;
    client_body_temp_path %s/client_body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    include %s/flashgate.conf;
}
""" % (t, t, t, t, t, t, t, t)
        self.conf = os.path.join(t, "nginx.conf")
        open(self.conf, "w").write(main)

    def check_config(self):
        out = subprocess.run([self.BIN, "-t", "-p", self.tmp, "-e", os.path.join(self.tmp, "error.log"),
                              "-c", self.conf], capture_output=True, text=True, timeout=30)
        return out.returncode, out.stderr

    def start(self):
        rc, err = self.check_config()
        if rc != 0:
            raise RuntimeError("nginx -t failed:\n" + err)
        self.spawn([self.BIN, "-p", self.tmp, "-e", os.path.join(self.tmp, "error.log"), "-c",
                    self.conf, "-g", "daemon off;"])
        deadline = time.time() + 10
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError("nginx exited:\n" + self.logs() + self.error_log())
            try:
                request(self.port, "GET", "/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen:\n" + self.error_log())

    def error_log(self):
        try:
            return open(os.path.join(self.tmp, "error.log")).read()[-4000:]
        except OSError:
            return ""


class Varnish(Server):
    """varnishd running deploy/cdn/flashgate.vcl in front of one origin port,
    in the foreground (-F), its own work dir (-n), stopped by PID."""

    BIN = shutil.which("varnishd") or "/usr/sbin/varnishd"
    STAT = shutil.which("varnishstat") or "/usr/bin/varnishstat"

    def __init__(self, origin_port):
        need_tool(self.BIN)
        need_tool(self.STAT)
        self.tmp = tempfile.mkdtemp(prefix="fg-varnish-")
        os.chmod(self.tmp, 0o755)
        self.port = free_port()
        self.log_path = os.path.join(self.tmp, "varnishd.out")
        self.workdir = os.path.join(self.tmp, "work")
        shipped = open(os.path.join(SRC, "deploy", "cdn", "flashgate.vcl")).read()
        vcl = rewrite(shipped, r'^(\s*)\.host = "[^"]*";', '\\1.host = "127.0.0.1";', 1,
                      "flashgate.vcl backend host")
        vcl = rewrite(vcl, r'^(\s*)\.port = "8080";', '\\1.port = "%d";' % origin_port, 1,
                      "flashgate.vcl backend port")
        self.vcl = os.path.join(self.tmp, "flashgate.vcl")
        open(self.vcl, "w").write(vcl)
        os.chmod(self.vcl, 0o644)

    def start(self):
        # -j none: no privilege separation (the test may run as root or not);
        # -s malloc: memory only; -T none: no management port (varnishstat
        # reads the shared memory log through -n); backend_idle_timeout as
        # the VCL's header says to run it.
        self.spawn([self.BIN, "-F", "-j", "none", "-n", self.workdir, "-a",
                    "127.0.0.1:%d" % self.port, "-f", self.vcl, "-s", "malloc,32m", "-T", "none",
                    "-p", "thread_pool_min=10", "-p", "thread_pools=1",
                    "-p", "backend_idle_timeout=20"])
        deadline = time.time() + 30
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError("varnishd exited:\n" + self.logs())
            try:
                request(self.port, "GET", "/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("varnishd did not listen:\n" + self.logs())

    def counters(self):
        """MAIN.* counters from varnishstat (cache_hit, cache_miss, backend_req...)."""
        out = subprocess.run([self.STAT, "-1", "-n", self.workdir, "-f", "MAIN.*"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError("varnishstat failed: " + out.stderr)
        c = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("MAIN."):
                c[parts[0][5:]] = int(parts[1])
        return c
