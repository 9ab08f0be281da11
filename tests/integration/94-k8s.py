"""The Kubernetes manifests (deploy/k8s/*.yaml), checked offline: no cluster and no
API-server schema (kubeconform) here, so what a kubelet, the Prometheus Operator
and a CNI would read is checked against the processes themselves.

- every document parses, has a known apiVersion for its kind, and a name;
- gateway probes (readiness, liveness, startup) hit /readyz and /healthz on the
  ADMIN port, never the public one, with failureThreshold >= 3 and a timeout of
  several CPU-quota periods; the admin port's containerPort is the one the
  effective server.admin_listen (flashgate --check-config on the pod's args and
  env) binds, on all addresses;
- settle has probes on its metrics port, which is the one its effective
  settle.metrics_listen (flashgate-settle --check-config) binds, on all addresses;
- the admin-tokens init container writes <data-dir>/admin.tokens from a secret
  key, and a gateway started as the pod starts it (token file 0440, the init
  container's command run on a 0440 copy) lets that read token scrape /metrics,
  refuses it a write, and answers the admin /readyz and /healthz without one;
- the PodMonitors select the workloads' pods, scrape named ports that exist, the
  gateway's with a token; jobLabel gives the job names the alerts use;
- the PrometheusRule holds exactly the groups of deploy/observability/*.yml;
- the NetworkPolicies select the workloads, admit the public port from the
  ingress namespace only and the admin and metrics ports from monitoring only,
  name ports that exist, and let egress reach only Redis, Kafka, PostgreSQL
  (settle) and DNS;
- every gateway pod verifies buyers with ONE shared JWK set: identity.jwks_file
  (its effective value, --check-config on the pod's args and env) lies in a
  volume mounted from a Secret or ConfigMap that every replica shares, and the
  gateway starts on that set (a token signed with its key verifies on two
  gateways with data dirs of their own);
- the StatefulSet spreads its pods over nodes and zones (topologySpreadConstraints
  selecting its own pods);
- the spool relay Job runs flashgate-spool relay on a volume of the StatefulSet's
  claim template, mounted at the gateway's --data-dir, with the gateways' brokers.
"""
import atexit
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
need_binary("flashgate-token")
need_binary("flashgate-spool")
try:
    import yaml
except ImportError:
    print("FAIL: python3-yaml not installed (sh deploy/install-deps.sh)", file=sys.stderr)
    sys.exit(1)

K = os.path.join(SRC, "deploy", "k8s")
O = os.path.join(SRC, "deploy", "observability")
API = {"Service": "v1", "StatefulSet": "apps/v1", "Deployment": "apps/v1",
       "PodDisruptionBudget": "policy/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
       "NetworkPolicy": "networking.k8s.io/v1", "PodMonitor": "monitoring.coreos.com/v1",
       "ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
       "Job": "batch/v1"}
# A CPU quota's period is 100 ms by default; the admin listener waited up to
# 119 ms for its turn under a quota (docs/runbook.md section 1, 7).
MIN_TIMEOUT_S = 2

docs = []
files = sorted(glob.glob(os.path.join(K, "*.yaml")))
check(len(files) >= 3, "deploy/k8s has the workloads, monitoring and network policy files: %s" % files)
for f in files:
    for d in yaml.safe_load_all(open(f)):
        if d:
            d["_file"] = os.path.basename(f)
            docs.append(d)
for d in docs:
    kind = d.get("kind")
    check(kind in API, "%s: known kind %r" % (d["_file"], kind))
    eq(d.get("apiVersion"), API.get(kind), "%s %s apiVersion" % (d["_file"], kind))
    check(d.get("metadata", {}).get("name"), "%s %s has a name" % (d["_file"], kind))
kinds = {d["kind"] for d in docs}
for k in ("StatefulSet", "Deployment", "PodMonitor", "PrometheusRule", "NetworkPolicy", "Job"):
    check(k in kinds, "deploy/k8s has a " + k)

workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("StatefulSet", "Deployment")}
gw, st = workloads["flashgate"], workloads["flashgate-settle"]


def pod_labels(w):
    return w["spec"]["template"]["metadata"]["labels"]


def container(w):
    return w["spec"]["template"]["spec"]["containers"][0]


def ports(w):
    return {p["name"]: p["containerPort"] for p in container(w).get("ports", [])}


def selects(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


SECRETS = tempfile.mkdtemp(prefix="fg-it-secrets-")
atexit.register(shutil.rmtree, SECRETS, True)


def local_secret(path):
    """A stand-in for a mounted secret file (a k8s secret volume), 0400 as
    mounted: --check-config reads the admin token file as the start does."""
    p = os.path.join(SECRETS, path.strip("/").replace("/", "_"))
    if not os.path.exists(p):
        with open(p, "w") as f:
            f.write("s" * 48 + "\n")
        os.chmod(p, 0o400)
    return p


def jwks_stand_in():
    """A real public JWK set (flashgate-token --init --jwks) standing in for the
    mounted Secret, and the key dir that signs for it."""
    p = os.path.join(SECRETS, "jwks.json")
    if not os.path.exists(p):
        keys = os.path.join(SECRETS, "signer")
        os.makedirs(keys, mode=0o700)
        out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", keys, "--init",
                              "--jwks"], capture_output=True, text=True, timeout=30)
        eq(out.returncode, 0, "flashgate-token --init --jwks: " + out.stderr[-300:])
        with open(p, "w") as f:
            f.write(out.stdout)
    return p


def effective(binary, c, args=None):
    """--check-config's effective values for the container's args and literal env."""
    args = list(c.get("args", []) if args is None else args)
    if "--data-dir" in args:
        args[args.index("--data-dir") + 1] = "/tmp/fg-it-k8s-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            if e["name"].endswith("_TOKEN_FILE") and e["value"].startswith("/"):
                env[e["name"]] = local_secret(e["value"])
            if e["name"] == "FLASHGATE_IDENTITY_JWKS_FILE":
                env[e["name"]] = jwks_stand_in()
    out = subprocess.run([os.path.join(BIN, binary)] + args + ["--check-config"],
                         capture_output=True, text=True, env=env, timeout=30)
    eq(out.returncode, 0, "%s --check-config with the pod's args: %s" % (binary, out.stderr[-300:]))
    return {k.strip(): v.split("#")[0].strip().strip('"') for k, v in
            (line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)}


# ---- gateway probes on the admin listener ----
gp = ports(gw)
gc = container(gw)
eff = effective("flashgate", gc)
admin = eff.get("server.admin_listen", "")
eq(admin.rsplit(":", 1)[-1], str(gp.get("admin")),
   "the gateway's admin containerPort is its effective server.admin_listen (%s)" % admin)
check(admin.rsplit(":", 1)[0] in ("0.0.0.0", "[::]", ""),
      "the admin listener binds all addresses (the kubelet probes the pod IP): %s" % admin)
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"),
                    ("startupProbe", "/readyz")):
    p = gc.get(probe)
    check(p, "gateway has a " + probe)
    if not p:
        continue
    h = p["httpGet"]
    eq((h["path"], h["port"]), (path, "admin"), "gateway %s: %s on the admin port" % (probe, path))
    check(h["port"] != "http" and gp.get(h["port"]) != gp.get("http"),
          "gateway %s never probes the public port" % probe)
    check(p.get("failureThreshold", 3) >= 3, "gateway %s: failureThreshold >= 3 (%s)" %
          (probe, p.get("failureThreshold")))
    check(p.get("timeoutSeconds", 1) >= MIN_TIMEOUT_S, "gateway %s: timeoutSeconds >= %d under a "
          "CPU quota (%s)" % (probe, MIN_TIMEOUT_S, p.get("timeoutSeconds")))

# ---- the read token for Prometheus ----
inits = gw["spec"]["template"]["spec"].get("initContainers", [])
tok_init = [i for i in inits if "admin.tokens" in " ".join(i.get("command", []))]
check(tok_init, "an init container writes <data-dir>/admin.tokens")
if tok_init:
    cmd = tok_init[0]["command"]
    check("-m" in cmd and cmd[cmd.index("-m") + 1] == "0600",
          "admin.tokens is written 0600 (the gateway refuses group access): %s" % cmd)
    check(cmd[-1] == gc["args"][gc["args"].index("--data-dir") + 1] + "/admin.tokens",
          "admin.tokens lands in the gateway's --data-dir")
    mounts = {m["mountPath"]: m["name"] for m in tok_init[0]["volumeMounts"]}
    vols = {v["name"]: v for v in gw["spec"]["template"]["spec"]["volumes"]}
    src = [m for m in mounts if cmd[-2].startswith(m + "/")]
    check(src and vols.get(mounts[src[0]], {}).get("secret", {}).get("items", [{}])[0].get("key")
          == "admin-tokens", "admin.tokens comes from the secret key admin-tokens")

# The gateway as the pod starts it: the write token from its file, the read token
# from the admin.tokens the init container wrote; Prometheus's token reads
# /metrics and writes nothing, the probes need no token.
tmp = tempfile.mkdtemp(prefix="fg-it-k8s-")
g = None
try:
    data = os.path.join(tmp, "data")
    os.makedirs(data, mode=0o700)
    write_tok, read_tok = "w" * 32, "r" * 32
    tf = os.path.join(tmp, "admin-token")
    with open(tf, "w") as f:
        f.write(write_tok + "\n")
    os.chmod(tf, 0o440)
    src_tokens = os.path.join(tmp, "admin-tokens")
    with open(src_tokens, "w") as f:
        f.write("prometheus:read:%s\n" % read_tok)
    os.chmod(src_tokens, 0o440)  # as a secret volume under fsGroup
    if tok_init:
        cmd = list(tok_init[0]["command"])
        cmd[-2], cmd[-1] = src_tokens, os.path.join(data, "admin.tokens")
        eq(subprocess.run(cmd, timeout=10).returncode, 0, "the init container's command runs")
    g = Gateway("--admin-token-file", tf, data_dir=data, token=None, threads=1).start()
    eq(g.admin("GET", "/metrics", token=read_tok).status, 200, "the read token reads /metrics")
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 1}, token=read_tok).status, 403,
       "the read token writes nothing")
    eq(g.admin("GET", "/readyz", token=None).status, 200, "admin /readyz needs no token")
    eq(g.admin("GET", "/healthz", token=None).status, 200, "admin /healthz needs no token")
finally:
    if g:
        g.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)

# ---- settle probes on its metrics port ----
sp = ports(st)
sc = container(st)
seff = effective("flashgate-settle", sc)
ml = seff.get("settle.metrics_listen", "")
eq(ml.rsplit(":", 1)[-1], str(sp.get("metrics")),
   "settle's metrics containerPort is its effective settle.metrics_listen (%s)" % ml)
check(ml.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"), "settle's listener binds all addresses: %s" % ml)
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    p = sc.get(probe)
    check(p, "settle has a " + probe)
    if p:
        eq((p["httpGet"]["path"], p["httpGet"]["port"]), (path, "metrics"),
           "settle %s: %s on the metrics port" % (probe, path))
        check(p.get("failureThreshold", 3) >= 3, "settle %s: failureThreshold >= 3" % probe)
        check(p.get("timeoutSeconds", 1) >= MIN_TIMEOUT_S, "settle %s: timeoutSeconds" % probe)

# ---- Prometheus Operator ----
pms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodMonitor"}
for name, w, port in (("flashgate", gw, "admin"), ("flashgate-settle", st, "metrics")):
    pm = pms.get(name)
    check(pm, "a PodMonitor for " + name)
    if not pm:
        continue
    check(selects(pm["spec"]["selector"]["matchLabels"], pod_labels(w)),
          "PodMonitor %s selects the %s pods" % (name, name))
    ep = pm["spec"]["podMetricsEndpoints"]
    eq([(e["port"], e.get("path")) for e in ep], [(port, "/metrics")],
       "PodMonitor %s scrapes /metrics on the %s port" % (name, port))
    check(port in ports(w), "PodMonitor %s's port is a container port of %s" % (name, name))
    eq(pod_labels(w).get(pm["spec"].get("jobLabel")), name,
       "PodMonitor %s's jobLabel makes the job %r (the alerts' job names)" % (name, name))
    if name == "flashgate":
        cred = ep[0].get("authorization", {}).get("credentials", {})
        eq((ep[0].get("authorization", {}).get("type"), cred.get("key")), ("Bearer", "metrics-token"),
           "the gateway's PodMonitor sends the read token")
shipped = []
for f in ("flashgate.rules.yml", "flashgate.alerts.yml"):
    shipped += yaml.safe_load(open(os.path.join(O, f)))["groups"]
prs = [d for d in docs if d["kind"] == "PrometheusRule"]
eq(len(prs), 1, "one PrometheusRule")
if prs:
    eq(prs[0]["spec"]["groups"], shipped,
       "the PrometheusRule's groups are deploy/observability's rules and alerts, unchanged")

# ---- NetworkPolicies ----
nps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}


def ns_of(peer):
    return peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")


for name, w, rules in (("flashgate", gw, {"http": "ingress-nginx", "admin": "monitoring"}),
                       ("flashgate-settle", st, {"metrics": "monitoring"})):
    np = nps.get(name)
    check(np, "a NetworkPolicy for " + name)
    if not np:
        continue
    spec = np["spec"]
    check(selects(spec["podSelector"]["matchLabels"], pod_labels(w)),
          "NetworkPolicy %s selects the %s pods" % (name, name))
    eq(sorted(spec.get("policyTypes", [])), ["Egress", "Ingress"],
       "NetworkPolicy %s restricts both directions" % name)
    admitted = {}
    for r in spec.get("ingress", []):
        check(r.get("from"), "NetworkPolicy %s: every ingress rule names its sources" % name)
        check(r.get("ports"), "NetworkPolicy %s: every ingress rule names its ports" % name)
        for p in r.get("ports", []):
            check(p["port"] in ports(w), "NetworkPolicy %s: port %s is a container port"
                  % (name, p["port"]))
            admitted.setdefault(p["port"], set()).update(ns_of(f) for f in r.get("from", []))
    eq({k: sorted(v) for k, v in admitted.items()}, {k: [v] for k, v in rules.items()},
       "NetworkPolicy %s admits each port from one namespace only" % name)
    allowed = {6379, 9092, 53} if name == "flashgate" else {9092, 5432, 53}
    for r in spec.get("egress", []):
        check(r.get("to"), "NetworkPolicy %s: every egress rule names its destinations" % name)
        for p in r.get("ports", []):
            check(p["port"] in allowed, "NetworkPolicy %s: egress port %s is Redis, Kafka, "
                  "PostgreSQL or DNS" % (name, p["port"]))
        for t in r.get("to", []):
            if t.get("podSelector") and t.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") != "kube-dns":
                check({p["port"] for p in r["ports"]} <= {6379, 9092, 5432},
                      "NetworkPolicy %s: a pod destination on its service port" % name)
# ---- one JWK set for every gateway ----
gspec = gw["spec"]["template"]["spec"]
gvols = {v["name"]: v for v in gspec.get("volumes", [])}
genv = {e["name"]: e.get("value") for e in gc.get("env", [])}
jwks_path = genv.get("FLASHGATE_IDENTITY_JWKS_FILE") or ""
check(jwks_path.startswith("/"), "the gateway sets identity.jwks_file (FLASHGATE_IDENTITY_JWKS_FILE): "
      "without it each pod verifies with its own data dir's key")
eq(eff.get("identity.jwks_file"), jwks_stand_in(),
   "the effective identity.jwks_file is the variable's (--check-config)")
eq(eff.get("identity.mode", "jwt"), "jwt", "the gateway verifies buyer tokens (identity.mode jwt)")
mnt = [m for m in gc.get("volumeMounts", []) if jwks_path.startswith(m["mountPath"].rstrip("/") + "/")]
check(len(mnt) == 1, "the JWK set's path %s lies in one volume mount" % jwks_path)
if mnt:
    v = gvols.get(mnt[0]["name"], {})
    src = v.get("secret") or v.get("configMap") or {}
    check(src and (src.get("secretName") or src.get("name")),
          "the JWK set's volume %s is a Secret or ConfigMap, the same for every replica (not a "
          "per-pod volume claim): %r" % (mnt[0]["name"], v))
    rel = jwks_path[len(mnt[0]["mountPath"].rstrip("/")) + 1:]
    items = src.get("items")
    check(items is None or rel in [i["path"] for i in items],
          "the Secret's items put the set at %s" % jwks_path)
    check(mnt[0].get("readOnly"), "the JWK set is mounted read-only")
check("flashgate-jwks" in open(os.path.join(K, "flashgate.yaml")).read().split("---")[0],
      "the manifest's header says how to create the JWK set's Secret")

# Two gateways, each with a data dir (and so a key) of its own, as two pods with the
# one mounted set: a token signed with the set's key verifies on both.
keys_dir = os.path.join(SECRETS, "signer")
tok = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir", keys_dir, "buyer-1"],
                     capture_output=True, text=True, timeout=30).stdout.strip()
check(tok.count(".") == 2, "flashgate-token signs with the set's key")
pods = []
try:
    for i in range(2):
        g2 = Gateway("--set", "identity.jwks_file=" + jwks_stand_in(), threads=1,
                     identity_mode=None).start()
        pods.append(g2)
        g2.put_sale("s1", stock=10, per_user_limit=1)
    for i, g2 in enumerate(pods):
        r = g2.post_order("s1", body={"qty": 1}, headers={"Authorization": "Bearer " + tok})
        eq(r.status, 202, "pod %d accepts a buyer whose token the shared set verifies (%s)"
           % (i, r.raw[:200]))
finally:
    for g2 in pods:
        g2.cleanup()

# ---- topology spread ----
tsc = gspec.get("topologySpreadConstraints", [])
keys = {t.get("topologyKey") for t in tsc
        if selects(t.get("labelSelector", {}).get("matchLabels"), pod_labels(gw))}
for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
    check(key in keys, "the StatefulSet spreads its own pods by %s" % key)
for t in tsc:
    check(t.get("maxSkew") == 1, "topology spread maxSkew 1: %r" % t)

# ---- the spool relay Job ----
jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
job = jobs.get("flashgate-spool-relay")
check(job, "a Job flashgate-spool-relay")
if job:
    jspec = job["spec"]["template"]["spec"]
    jc = jspec["containers"][0]
    eq(jc.get("command"), ["/usr/local/bin/flashgate-spool"], "the Job runs flashgate-spool")
    jargs = jc.get("args", [])
    check(jargs[:1] == ["relay"], "the Job's command is relay: %r" % jargs)
    jdir = jargs[jargs.index("--data-dir") + 1] if "--data-dir" in jargs else None
    eq(jdir, gc["args"][gc["args"].index("--data-dir") + 1], "the Job's --data-dir is the gateway's")
    jm = [m for m in jc.get("volumeMounts", []) if m["mountPath"] == jdir]
    check(jm, "a volume is mounted at the Job's --data-dir")
    jv = {v["name"]: v for v in jspec.get("volumes", [])}
    claim = jv.get(jm[0]["name"], {}).get("persistentVolumeClaim", {}).get("claimName", "") if jm else ""
    tmpl = gw["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    check(re.fullmatch(r"%s-%s-\d+" % (tmpl, gw["metadata"]["name"]), claim or ""),
          "the Job mounts a gateway's volume claim (%s-%s-N): %r" % (tmpl, gw["metadata"]["name"], claim))
    jenv = {e["name"]: e.get("value") for e in jc.get("env", [])}
    eq(jenv.get("FLASHGATE_KAFKA_BROKERS"), genv.get("FLASHGATE_KAFKA_BROKERS"),
       "the Job relays to the gateways' brokers")
    eq(jspec.get("restartPolicy"), "OnFailure", "the Job retries a failed relay")
    jeff = effective("flashgate-spool", jc, args=jargs)
    eq(jeff.get("kafka.brokers"), genv.get("FLASHGATE_KAFKA_BROKERS"),
       "flashgate-spool --check-config reads the brokers from the Job's env")
finish()
