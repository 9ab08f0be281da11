"""The admin listener's defences: the fault-injection routes only behind
--enable-debug-routes, a per-address backoff on wrong tokens (429 with
Retry-After), HTTPS from server.admin_tls_cert/key with curl, client
certificates with server.admin_tls_client_ca, and the rules on a plain-HTTP
listener off loopback. Loopback only; openssl makes the certificates."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
FG = os.path.join(BIN, "flashgate")
TMP = tempfile.mkdtemp(prefix="fg-adm-sec-")


def sh(*args):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("%r: %s" % (args, r.stderr[-500:]))
    return r


def curl(url, *extra, token=None, method="GET", body=None):
    """(HTTP status or 0, body, curl's exit code) of one request over curl."""
    args = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method]
    if token:
        args += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    r = subprocess.run(args + list(extra) + [url], capture_output=True, text=True, timeout=30)
    out, _, code = r.stdout.rpartition("\n")
    return int(code or 0), out, r.returncode


# ---------------- fault injection only behind the start flag ----------------
g = Gateway("--kafka-brokers", "none").start()
try:
    for path, body in (("/admin/v1/debug/clock", {"wall_offset_ms": -3600000}),
                       ("/admin/v1/debug/broker", {"down": True})):
        r = g.admin("PUT", path, body=body)
        eq((r.status, (r.json or {}).get("error")), (404, "not_found"),
           "PUT %s with the write token, no --enable-debug-routes: 404" % path)
        eq(g.admin("PUT", path, body=body, token=None).status, 401, "and 401 without a token")

    # ---------------- wrong tokens: per-address backoff ----------------
    statuses, retry = [], []
    for i in range(300):
        r = g.admin("GET", "/admin/v1/stats", token="wrong-token-%04d-0123456789" % i)
        statuses.append(r.status)
        retry.append(r.headers.get("retry-after"))
    eq(statuses[:64], [401] * 64, "the first 64 wrong tokens in a minute: 401")
    eq(set(statuses[64:]), {429}, "the rest of 300: 429")
    r = g.admin("GET", "/admin/v1/stats", token="wrong-token-again-0123456789")
    eq((r.status, (r.json or {}).get("error")), (429, "rate_limited"), "429 is JSON rate_limited")
    ra = int(r.headers.get("retry-after") or 0)
    check(1 <= ra <= 5, "Retry-After 1..5 s: %r" % r.headers.get("retry-after"))
    eq(g.admin("GET", "/admin/v1/stats").status, 429,
       "the right token from the blocked address is 429 too (no oracle for a right guess)")
    eq(request(g.admin_port, "GET", "/healthz").status, 200, "routes without a token still answer")
    eq(g.get("/healthz").status, 200, "the public listener is not touched")
    time.sleep(ra + 0.2)
    eq(g.admin("GET", "/admin/v1/stats").status, 200, "after Retry-After the right token works")
    eq(g.admin("GET", "/admin/v1/stats", token="still-wrong-0123456789").status, 401,
       "and a success cleared the address: a wrong one is 401 again")
finally:
    g.stop()

g = Gateway("--kafka-brokers", "none", "--enable-debug-routes").start()
try:
    r = g.admin("PUT", "/admin/v1/debug/clock", body={"wall_offset_ms": 0})
    eq(r.status, 200, "with --enable-debug-routes the clock route answers")
    eq(g.admin("PUT", "/admin/v1/debug/broker", body={"down": False}).status, 409,
       "and the broker route (409: no embedded broker here)")
finally:
    g.stop()

# ---------------- HTTPS ----------------
ca_key, ca_crt = os.path.join(TMP, "ca.key"), os.path.join(TMP, "ca.crt")
key, csr, crt = (os.path.join(TMP, n) for n in ("srv.key", "srv.csr", "srv.crt"))
ckey, ccsr, ccrt = (os.path.join(TMP, n) for n in ("cli.key", "cli.csr", "cli.crt"))
ext = os.path.join(TMP, "san.ext")
with open(ext, "w") as f:
    f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
   "-days", "2", "-subj", "/CN=flashgate test CA")
for k, c, r, cn in ((key, crt, csr, "localhost"), (ckey, ccrt, ccsr, "operator")):
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", k, "-out", r, "-subj", "/CN=" + cn)
    sh("openssl", "x509", "-req", "-in", r, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
       "-out", c, "-days", "2", "-extfile", ext)
os.chmod(key, 0o644)

# the key readable by others: refused, by --check-config and the start alike
r = subprocess.run([FG, "--admin-tls-cert", crt, "--admin-tls-key", key, "--data-dir",
                    os.path.join(TMP, "d0"), "--check-config"], capture_output=True, text=True,
                   timeout=30)
check(r.returncode == 2 and "server.admin_tls_key" in r.stderr and "others" in r.stderr,
      "a TLS key readable by others is refused: %r" % r.stderr[-300:])
os.chmod(key, 0o600)

# a certificate with another certificate's key: refused by name, by --check-config and the
# start alike (not "cannot listen ... Address already in use", libmicrohttpd's failure
# without an errno)
r = subprocess.run([FG, "--admin-tls-cert", crt, "--admin-tls-key", ckey, "--data-dir",
                    os.path.join(TMP, "d0"), "--check-config"], capture_output=True, text=True,
                   timeout=30)
check(r.returncode == 2 and "server.admin_tls_key" in r.stderr and "do not match" in r.stderr,
      "--check-config: a key that is not the certificate's is refused: %r" % r.stderr[-300:])
g = Gateway("--kafka-brokers", "none", "--admin-tls-cert", crt, "--admin-tls-key", ckey)
g.start(wait=False)
try:
    rc = g.proc.wait(20)
except subprocess.TimeoutExpired:
    rc = None
check(rc == 1 and "do not match" in g.logs() and "Address already in use" not in g.logs(),
      "the start refuses it by name (exit %r): %r" % (rc, g.logs()[-300:]))
g.proc = None
g.cleanup()

g = Gateway("--kafka-brokers", "none", "--admin-tls-cert", crt, "--admin-tls-key", key).start()
try:
    base = "https://127.0.0.1:%d" % g.admin_port
    st, body, rc = curl(base + "/healthz", "--cacert", ca_crt)
    eq((st, rc), (200, 0), "curl over https with the CA: /healthz 200 (%s)" % body[:100])
    st, body, rc = curl(base + "/admin/v1/stats", "--cacert", ca_crt, token=g.token)
    check(st == 200 and "requests" in body, "the admin API over https: %d %s" % (st, body[:100]))
    st, _, rc = curl(base + "/admin/v1/sales/tls", "--cacert", ca_crt, token=g.token, method="PUT",
                     body={"stock": 3})
    eq(st, 201, "a write over https")
    st, _, rc = curl(base + "/healthz")
    check(rc != 0 and st == 0, "without the CA curl refuses the certificate (exit %d)" % rc)
    st, _, rc = curl("http://127.0.0.1:%d/healthz" % g.admin_port)
    check(st != 200, "plain HTTP on the TLS port gets no answer (%d, exit %d)" % (st, rc))
    check("serves HTTPS" in g.logs(), "the start says it serves HTTPS")
finally:
    g.stop()

# client certificates
g = Gateway("--kafka-brokers", "none", "--admin-tls-cert", crt, "--admin-tls-key", key,
            "--admin-tls-client-ca", ca_crt).start()
try:
    base = "https://127.0.0.1:%d" % g.admin_port
    st, body, rc = curl(base + "/admin/v1/stats", "--cacert", ca_crt, token=g.token)
    check(st == 403 or rc != 0, "no client certificate: refused (%d, exit %d, %s)" % (st, rc, body[:120]))
    st, body, rc = curl(base + "/admin/v1/stats", "--cacert", ca_crt, "--cert", ccrt, "--key", ckey,
                        token=g.token)
    eq(st, 200, "a client certificate from the CA: 200 (%s)" % body[:100])
    # one not from the CA
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ckey + ".x",
       "-out", ccrt + ".x", "-days", "2", "-subj", "/CN=stranger")
    st, body, rc = curl(base + "/admin/v1/stats", "--cacert", ca_crt, "--cert", ccrt + ".x",
                        "--key", ckey + ".x", token=g.token)
    check(st != 200, "a self-signed client certificate: refused (%d, exit %d)" % (st, rc))
finally:
    g.stop()

# ---------------- plain HTTP off loopback ----------------
tok = os.path.join(TMP, "tok")
with open(tok, "w") as f:
    f.write("k" * 40 + "\n")
os.chmod(tok, 0o600)
r = subprocess.run([FG, "--admin-listen", "192.0.2.1:9", "--admin-token-file", tok, "--data-dir",
                    os.path.join(TMP, "d1"), "--check-config"], capture_output=True, text=True,
                   timeout=30)
check(r.returncode == 2 and "plain HTTP" in r.stderr,
      "a public admin address without TLS is refused: %r" % r.stderr[-300:])
g = Gateway("--kafka-brokers", "none", "--admin-token-file", tok, token=None)
g.args += ["--admin-listen", "0.0.0.0:%d" % g.admin_port]
g.start()
try:
    check("PLAIN HTTP OFF LOOPBACK" in g.logs(), "every address in plain HTTP: a loud warning")
finally:
    g.stop()

finish()
