"""deploy/nginx/flashgate.conf installed as its header says, into a copy of
this machine's Debian /etc/nginx, in front of a real flashgate.

integration.70 runs the file inside an nginx.conf of its own, so it cannot see
how the file meets Debian's layout: the default site (sites-enabled/default)
claims port 80 as default_server, and a conf.d server without it never got a
request (nginx -t only warned about the conflicting server name "_").

1. The install steps read from the file's header (cp into conf.d/, rm the
   default site) applied to a copy of /etc/nginx: `nginx -t` passes with no
   [warn] or [emerg].
2. The same copy with the default site left enabled: `nginx -t` fails (a
   duplicate default server), so a missed step is loud.
3. The installed copy runs against a flashgate, rewritten only as far as an
   unprivileged nginx on 127.0.0.1 at free ports needs (pid, logs, temp dirs,
   the include paths, no `user`, the listen address and the upstream): a buy
   through it reaches flashgate (202, the sale's count moves); a storm from one
   address meets flashgate's per-IP limit (429 scope "ip") before nginx's
   coarse one (scope "edge"), as the file's comment promises.
4. flashgate-beside-default.conf installed as its header says into a copy with
   Debian's default site left enabled: `nginx -t` passes with no [warn] or
   [emerg]; it is flashgate.conf but for its header, listen and server_name.
5. In both files the real-IP directives sit inside the server block (at http
   level they would rewrite $remote_addr for every other site), and the server
   listens on IPv6 too.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import SRC, Gateway, check, eq, finish, free_port, need_binary  # noqa: E402
from edge import Nginx, need_tool, rewrite  # noqa: E402

need_binary("flashgate")
NGINX = Nginx.BIN
need_tool(NGINX)
if not os.path.isfile("/etc/nginx/nginx.conf"):
    print("FAIL: /etc/nginx/nginx.conf missing (Debian's nginx-common)", file=sys.stderr)
    sys.exit(1)

SHIPPED = os.path.join(SRC, "deploy", "nginx", "flashgate.conf")
header = open(SHIPPED).read()
# The install steps, as the header gives them (so the test follows the text).
steps = re.findall(r"^#     (cp|rm) (\S+)(?: (\S+))?", header, flags=re.M)
eq([s[0] for s in steps], ["cp", "rm"], "the header gives the cp and rm steps")

VARIANT = os.path.join(SRC, "deploy", "nginx", "flashgate-beside-default.conf")
variant_text = open(VARIANT).read()
variant_steps = re.findall(r"^#     (cp|rm) (\S+)(?: (\S+))?", variant_text, flags=re.M)
eq([s[0] for s in variant_steps], ["cp"], "the variant's header gives a cp step and no rm")


def body(text):
    """The file past its header comment, without the lines the variant changes."""
    lines = text.split("\n")
    start = next(i for i, l in enumerate(lines) if l and not l.startswith("#"))
    return [l for l in lines[start:] if not re.match(r"\s*(listen|server_name) ", l)]


eq(body(variant_text), body(header), "the variant is flashgate.conf but for listen and server_name")
for name, text in (("flashgate.conf", header), ("flashgate-beside-default.conf", variant_text)):
    code = re.sub(r"#.*", "", text)
    srv = code.index("server {")
    for d in ("set_real_ip_from", "real_ip_header", "real_ip_recursive"):
        pos = [m.start() for m in re.finditer(r"^\s*%s " % d, code, re.M)]
        check(pos and all(p > srv for p in pos), "%s: %s is inside the server block" % (name, d))
    check(re.search(r"^\s*listen \[::\]:80[ ;]", code, re.M), "%s listens on [::]:80" % name)
check(re.search(r"^\s*listen 80;", re.sub(r"#.*", "", variant_text), re.M) and
      "default_server" not in re.sub(r"#.*", "", variant_text),
      "the variant claims no default_server")

tmp = tempfile.mkdtemp(prefix="fg-nginx-installed-")
os.chmod(tmp, 0o755)


def install(root, keep_default_site, shipped=SHIPPED):
    """A copy of /etc/nginx at root/etc/nginx with the header's steps applied."""
    etc = os.path.join(root, "etc", "nginx")
    # symlinks=False: sites-enabled/default points at /etc/nginx/sites-available/default
    shutil.copytree("/etc/nginx", etc, symlinks=False)
    for op, a, b in (steps if shipped == SHIPPED else variant_steps):
        if op == "cp":
            eq((a, b), (os.path.basename(shipped), "/etc/nginx/conf.d/flashgate.conf"), "cp step")
            shutil.copy(shipped, root + b)
        elif op == "rm" and not keep_default_site:
            eq(a, "/etc/nginx/sites-enabled/default", "rm step")
            os.unlink(root + a)
    # Paths into the copy: what nginx.conf includes, and what nginx writes.
    main = os.path.join(etc, "nginx.conf")
    conf = open(main).read()
    conf = rewrite(conf, r"^user \S+;\n", "", 1, "nginx.conf user")
    conf = rewrite(conf, r"^pid \S+;", "pid %s/nginx.pid;" % root, 1, "nginx.conf pid")
    conf = rewrite(conf, r"^error_log \S+;", "error_log %s/error.log;" % root, 1,
                   "nginx.conf error_log")
    conf = rewrite(conf, r"^(\s*)access_log \S+;", "\\1access_log %s/access.log;" % root, 1,
                   "nginx.conf access_log")
    conf = rewrite(conf, r"include /etc/nginx/(modules-enabled|conf\.d|sites-enabled)/",
                   "include %s/\\1/" % etc, 3, "nginx.conf includes")
    conf = conf.replace("include /etc/nginx/mime.types", "include %s/mime.types" % etc)
    conf = rewrite(conf, r"^http \{\n", "http {\n" + "".join(
        "\t%s_temp_path %s/%s;\n" % (t, root, t) for t in
        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")), 1, "nginx.conf http")
    open(main, "w").write(conf)
    return main


def nginx_t(root, main):
    # no -p: load_module's relative paths resolve against Debian's prefix
    p = subprocess.run([NGINX, "-t", "-e", os.path.join(root, "error.log"),
                        "-c", main], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr


gw = ngx = None
try:
    # 1. installed as the header says
    root = os.path.join(tmp, "installed")
    main = install(root, keep_default_site=False)
    rc, err = nginx_t(root, main)
    eq(rc, 0, "nginx -t accepts the installed file: " + err)
    bad = [l for l in err.splitlines() if "[warn]" in l or "[emerg]" in l]
    eq(bad, [], "nginx -t prints no warning")

    # 2. the default site left enabled: nginx -t says so
    root2 = os.path.join(tmp, "default-site-kept")
    main2 = install(root2, keep_default_site=True)
    rc, err = nginx_t(root2, main2)
    check(rc != 0 and "duplicate default server" in err,
          "with Debian's default site still enabled nginx -t fails: rc=%d %s" % (rc, err[-300:]))

    # 4. the variant, Debian's default site kept
    root4 = os.path.join(tmp, "beside-default")
    main4 = install(root4, keep_default_site=True, shipped=VARIANT)
    check(os.path.exists(os.path.join(root4, "etc", "nginx", "sites-enabled", "default")),
          "the default site is still enabled")
    rc, err = nginx_t(root4, main4)
    eq(rc, 0, "nginx -t accepts the variant beside the default site: " + err)
    bad = [l for l in err.splitlines() if "[warn]" in l or "[emerg]" in l]
    eq(bad, [], "nginx -t prints no warning for the variant")

    # 3. run it against a real flashgate
    gw = Gateway("--set", "server.trusted_proxies=127.0.0.1/32").start()
    port = free_port()
    fconf = os.path.join(root, "etc", "nginx", "conf.d", "flashgate.conf")
    c = open(fconf).read()
    c = rewrite(c, r"^(\s*)listen 80 (.*)$", "\\1listen 127.0.0.1:%d \\2" % port, 1, "listen")
    c = rewrite(c, r"^\s*listen \[::\]:80 .*\n", "", 1, "listen [::]")
    c = rewrite(c, r"^(\s*)server \S+:8080 (.*)$", "\\1server 127.0.0.1:%d \\2" % gw.port, 2,
                "upstream servers")
    open(fconf, "w").write(c)
    rc, err = nginx_t(root, main)
    eq(rc, 0, "nginx -t after the port rewrite: " + err)
    log = open(os.path.join(tmp, "nginx.out"), "ab")
    ngx = subprocess.Popen([NGINX, "-e", os.path.join(root, "error.log"), "-c", main,
                            "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    up = False
    while time.time() < deadline and ngx.poll() is None and not up:
        try:
            cn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            cn.request("GET", "/healthz")
            up = cn.getresponse().status == 200
            cn.close()
        except OSError:
            time.sleep(0.1)
    check(up, "nginx (as installed) answers /healthz from flashgate")

    gw.put_sale("inst", stock=1000, per_user_limit=1)

    def buy(user, conn=None):
        cn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        cn.request("POST", "/v1/sales/inst/orders", body=json.dumps({"user_id": user}),
                   headers={"Content-Type": "application/json"})
        r = cn.getresponse()
        body = r.read()
        try:
            j = json.loads(body)
        except ValueError:
            j = {"raw": body[:200]}
        return r.status, j, cn

    st, j, cn = buy("first")
    eq(st, 202, "a buy through the installed nginx is accepted: %r" % j)
    check("status_token" in j, "the answer is flashgate's 202")
    a = gw.admin("GET", "/admin/v1/sales/inst").json
    eq(a.get("accepted_orders"), 1, "flashgate counted the buy")

    # one address storming: flashgate's per-IP limit (burst 40) before nginx's (burst 80)
    scopes = {}
    for i in range(75):
        st, j, cn = buy("storm-%d" % i, cn)
        key = (st, j.get("scope")) if st == 429 else (st, None)
        scopes[key] = scopes.get(key, 0) + 1
    print("storm of 75 from one address:", scopes)
    check(scopes.get((429, "ip"), 0) > 0, "flashgate's per-IP limit refused the storm: %r" % scopes)
    eq(scopes.get((429, "edge"), 0), 0, "nginx's coarse limit is looser than flashgate's")
    cn.close()
finally:
    if ngx is not None:
        ngx.terminate()
        try:
            ngx.wait(10)
        except subprocess.TimeoutExpired:
            ngx.kill()
            ngx.wait(5)
    if gw is not None:
        gw.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
finish()
