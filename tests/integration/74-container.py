"""Container image, compose stack and Kubernetes manifests, checked offline.

This machine has no container engine and no cluster, so nothing here is built,
started or applied (README says so). What can be checked without them is:

- Dockerfile: Debian 12 in every stage, multi-stage, a numeric non-root USER;
  its cmake steps are the README's; its build packages are the library
  packages of deploy/install-deps.sh (test-only ones aside); every shared
  library the built binaries need (readelf NEEDED, resolved with ldd and
  dpkg -S) comes from a package its runtime stage installs (or libc6).
- compose.yaml (python3-yaml): parses; Redis, Kafka in KRaft mode, PostgreSQL,
  two gateways, two settle workers and nginx are there; depends_on names real
  services; nginx's upstream rewrite names the gateways on the port they
  expose; every FLASHGATE_* variable is accepted by the binary and reaches a
  key (--check-config); Debian 12's docker-compose 1.29.2 accepts the file
  (`docker-compose config`); both gateways read one JWK set (the same host file
  mounted read-only at identity.jwks_file); the tokens the gateways and
  Prometheus read are files the `secrets` one-shot writes; Prometheus's config
  passes promtool check config with the shipped rule files and scrapes every
  gateway's admin port and every worker's metrics port; Grafana provisions
  the shipped dashboard and a data source that is the stack's Prometheus.
- flashgate.yaml (Kubernetes): parses; StatefulSet or Deployment, Service,
  PodDisruptionBudget and HorizontalPodAutoscaler present; selectors match the
  pod labels; probes (/readyz readiness, /healthz liveness) and Service ports
  name real container ports; a preStop hook; resource requests and limits;
  preStop + drain grace + drain timeout fit terminationGracePeriodSeconds;
  flashgate-settle's settle.stop_grace + its exit fit its
  terminationGracePeriodSeconds and compose's stop_grace_period;
  runAsUser is the image's user; args and env pass --check-config; the HPA
  targets a workload that exists.
"""
import atexit
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, SRC, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-settle")
need_binary("flashgate-token")
try:
    import yaml
except ImportError:
    print("FAIL: python3-yaml not installed (sh deploy/install-deps.sh)", file=sys.stderr)
    sys.exit(1)

D = os.path.join(SRC, "deploy")
dockerfile = open(os.path.join(D, "container", "Dockerfile")).read()
readme = open(os.path.join(SRC, "README.md")).read()


SECRETS = tempfile.mkdtemp(prefix="fg-it-secrets-")
atexit.register(shutil.rmtree, SECRETS, True)


def local_secret(path):
    """A stand-in for a mounted secret file (compose's /run/secrets/..., a k8s
    secret volume), 0400 as mounted: --check-config reads the admin token file
    as the start does."""
    p = os.path.join(SECRETS, path.strip("/").replace("/", "_"))
    if not os.path.exists(p):
        with open(p, "w") as f:
            f.write("s" * 48 + "\n")
        os.chmod(p, 0o400)
    return p


def jwks_stand_in():
    """A real public JWK set (flashgate-token --init --jwks) for a mounted one."""
    p = os.path.join(SECRETS, "jwks.json")
    if not os.path.exists(p):
        os.makedirs(os.path.join(SECRETS, "signer"), mode=0o700, exist_ok=True)
        out = subprocess.run([os.path.join(BIN, "flashgate-token"), "--data-dir",
                              os.path.join(SECRETS, "signer"), "--init", "--jwks"],
                             capture_output=True, text=True, timeout=30)
        eq(out.returncode, 0, "flashgate-token --init --jwks: " + out.stderr[-300:])
        with open(p, "w") as f:
            f.write(out.stdout)
    return p


def tokens_stand_in():
    """A named-tokens file (server.admin_tokens_file) as the secrets one-shot writes it."""
    p = os.path.join(SECRETS, "admin.tokens")
    if not os.path.exists(p):
        with open(p, "w") as f:
            f.write("prometheus:read:%s\n" % ("r" * 32))
        os.chmod(p, 0o600)
    return p


def run_check(binary, args, env_vars):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    env.update(env_vars)
    for k, v in env_vars.items():
        if k.endswith("_TOKEN_FILE") and v.startswith("/"):
            env[k] = local_secret(v)
        if k.endswith("_TOKENS_FILE") and v.startswith("/"):
            env[k] = tokens_stand_in()
        if k == "FLASHGATE_IDENTITY_JWKS_FILE":
            env[k] = jwks_stand_in()
    out = subprocess.run([os.path.join(BIN, binary)] + args + ["--check-config"],
                         capture_output=True, text=True, env=env, timeout=30)
    return out


def check_env_reaches(binary, args, env_vars, what):
    out = run_check(binary, args, env_vars)
    eq(out.returncode, 0, what + ": --check-config accepts args and env: " + out.stderr[-400:])
    for k in env_vars:
        check(("# env " + k) in out.stdout, what + ": %s reaches a configuration key" % k)


def secs(v):
    """A --check-config duration ("5s", "250ms", "1m") or compose's ("30s", "1m30s")."""
    v = v.split()[0].strip('"')
    parts = re.findall(r"(\d+)(ms|s|m|h)?", v)
    check("".join(n + u for n, u in parts) == v, "a duration: %r" % v)
    return sum(int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 0.001}[u] for n, u in parts)


# What flashgate-settle may spend on a stop besides settle.stop_grace: the outcomes
# producer's last flush (2 s), leaving the consumer group, the database write
# under way (settle/st_settle.h, ST_DEFAULT_STOP_GRACE_MS; 73-systemd says the same).
SETTLE_EXIT_S = 10


def settle_stop_grace(args, env_vars):
    out = run_check("flashgate-settle", args, env_vars)
    eff = dict(l.split(" = ", 1) for l in out.stdout.splitlines() if " = " in l)
    return secs(eff["settle.stop_grace"])


def local_args(args, tmp="/tmp/fg-it-container-data"):
    a = list(args)
    if "--data-dir" in a:
        a[a.index("--data-dir") + 1] = tmp
    return a


# ---- Dockerfile ----
stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M)
check(len(stages) >= 2, "Dockerfile is multi-stage (%r)" % stages)
check(all(s[0].startswith("debian:12") for s in stages), "every stage is Debian 12 (%r)" % stages)
users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
check(users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]) is not None,
      "the image runs as a numeric non-root USER (%r)" % users)
image_uid = int(users[-1].split(":")[0]) if users else None
cmake_steps = re.findall(r"^RUN (cmake .*)$", dockerfile, re.M)
check(len(cmake_steps) >= 2, "the Dockerfile configures and builds with cmake")
for step in cmake_steps:
    check(step in readme, "README shows the Dockerfile's build step: " + step)
parts = re.split(r"^FROM\s", dockerfile, flags=re.M)[1:]
build_stage, run_stage = parts[0], parts[-1]


def apt_pkgs(stage):
    pk = set()
    for m in re.finditer(r"apt-get install[^\n]*?((?:[^\n]*\\\n)*[^\n]*)", stage):
        for w in m.group(0).replace("\\\n", " ").split():
            if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w) and w not in ("apt-get", "install", "rm"):
                pk.add(w)
    return pk


deps = open(os.path.join(D, "install-deps.sh")).read()
pkgs_line = re.search(r'PKGS="([^"]*)"', deps, re.S).group(1).split()
# node-llhttp: the request parser's C sources (built with ours: CMakeLists.txt)
lib_dev = {p for p in pkgs_line if (p.startswith("lib") and p.endswith("-dev")) or p == "node-llhttp"}
# liblua5.1-0-dev: the simulator's (a test tool, not built with -DFLASHGATE_TESTS=OFF)
test_only = {"libcmocka-dev", "libclang-rt-14-dev", "liblua5.1-0-dev"}
eq(sorted((lib_dev - test_only) - apt_pkgs(build_stage)), [],
   "the build stage installs install-deps.sh's libraries")
run_pkgs = apt_pkgs(run_stage)
needed = set()
for b in ("flashgate", "flashgate-settle", "flashgate-spool"):
    path = os.path.join(BIN, b)
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, timeout=30)
    names = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
    for n in names:
        m = re.search(r"^\s*%s => (\S+)" % re.escape(n), ldd, re.M)
        check(m is not None, "%s: ldd resolves %s" % (b, n))
        if m:
            needed.add((b, n, m.group(1)))
cands = {}
for b, n, p in needed:
    c = {p, os.path.realpath(p)}
    for x in list(c):
        c.add(x.replace("/usr/lib/", "/lib/", 1) if x.startswith("/usr/lib/") else
              x.replace("/lib/", "/usr/lib/", 1))
    cands[b, n, p] = c
# One dpkg -S for every path: each call reads dpkg's whole file database (35 calls, one
# per path, were 10 s of the test's 14 on a loaded machine). It prints "package[:arch]:
# path" for each path it knows, and exits 1 if it does not know one of them.
owner = {}
paths = sorted(set().union(*cands.values()))
if paths:
    out = subprocess.run(["dpkg", "-S"] + paths, capture_output=True, text=True, timeout=60)
    for line in out.stdout.splitlines():
        pk, sep, path = line.partition(": /")
        if sep and not line.startswith("diversion by "):
            owner["/" + path] = pk.split(":")[0]
for b, n, p in sorted(needed):
    pkg = next((owner[c] for c in sorted(cands[b, n, p]) if c in owner), None)
    check(pkg is not None, "%s: dpkg knows the package of %s" % (b, p))
    if pkg:
        check(pkg in run_pkgs or pkg == "libc6",
              "%s needs %s from %s: the runtime stage installs it" % (b, n, pkg))

# ---- compose ----
compose = yaml.safe_load(open(os.path.join(D, "container", "compose.yaml")))
svcs = compose["services"]
for s in ("redis", "kafka", "postgres", "gateway1", "gateway2", "settle1", "settle2", "nginx"):
    check(s in svcs, "compose has " + s)
kenv = svcs["kafka"]["environment"]
check("controller" in kenv.get("KAFKA_PROCESS_ROLES", "") and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kenv
      and "ZOOKEEPER" not in " ".join(kenv), "Kafka runs in KRaft mode")
for name, s in svcs.items():
    for dep in s.get("depends_on", []):
        check(dep in svcs, "compose %s depends on a real service %s" % (name, dep))
for g in ("gateway1", "gateway2"):
    s = svcs[g]
    eq(s.get("build", {}).get("dockerfile"), "deploy/container/Dockerfile", g + " builds the Dockerfile")
    check("8080" in [str(p) for p in s.get("expose", [])], g + " exposes 8080")
    env = {k: "x" * 24 if "${" in str(v) else str(v) for k, v in s["environment"].items()}
    env["FLASHGATE_INVENTORY"] = str(s["environment"]["FLASHGATE_INVENTORY"])
    check_env_reaches("flashgate", local_args(shlex.split(
        re.search(r'^CMD (\[.*\])$', dockerfile, re.M).group(1).replace('", "', " ")
        .strip('[]"'))), env, "compose " + g)
ng = " ".join(svcs["nginx"]["command"])
nginx_conf = open(os.path.join(D, "nginx", "flashgate.conf")).read()
for old, new in re.findall(r"s/([\d.]+:\d+)/([\w.]+:\d+)/", ng):
    check(("server %s " % old) in nginx_conf, "nginx rewrite matches an upstream line: " + old)
    check(new.split(":")[0] in svcs and new.endswith(":8080"),
          "nginx upstream %s is a gateway on its port" % new)
for st in ("settle1", "settle2"):
    s = svcs[st]
    env = {k: re.sub(r"\$\{[^}]*\}", "pw", str(v)) for k, v in s["environment"].items()}
    check_env_reaches("flashgate-settle", local_args(s["command"]), env, "compose " + st)
    grace = settle_stop_grace(local_args(s["command"]), env)
    check(secs(s.get("stop_grace_period", "10s")) >= grace + SETTLE_EXIT_S,
          "compose %s: stop_grace_period %s covers settle.stop_grace (%g s) + %d"
          % (st, s.get("stop_grace_period", "10s (default)"), grace, SETTLE_EXIT_S))
eq(svcs["gateway1"]["image"], svcs["settle1"]["image"], "gateways and settle share one image")

# Debian 12's docker-compose (1.29.2) must accept the file as it is: no key
# newer than it (a top-level `name`, a secret's `environment`).
COMPOSE_ENV = {"FLASHGATE_JWKS": "/tmp/jwks.json", "FLASHGATE_ADMIN_TOKEN": "a" * 24,
               "FLASHGATE_METRICS_TOKEN": "b" * 24, "POSTGRES_PASSWORD": "c" * 16,
               "GRAFANA_ADMIN_PASSWORD": "d" * 12}
dc = shutil.which("docker-compose")
check(dc is not None, "docker-compose installed (Debian 12's, apt install docker-compose)")
if dc:
    ver = subprocess.run([dc, "version", "--short"], capture_output=True, text=True, timeout=60)
    print("docker-compose %s" % ver.stdout.strip())
    env = dict(os.environ, **COMPOSE_ENV)
    out = subprocess.run([dc, "-f", os.path.join(D, "container", "compose.yaml"), "config", "-q"],
                         capture_output=True, text=True, timeout=60, env=env)
    eq(out.returncode, 0, "docker-compose %s config accepts compose.yaml: %s"
       % (ver.stdout.strip(), (out.stdout + out.stderr)[-600:]))
    # and it does refuse what it does not know (the check is not a no-op)
    bad_dir = tempfile.mkdtemp(prefix="fg-it-compose-")
    atexit.register(shutil.rmtree, bad_dir, True)
    with open(os.path.join(bad_dir, "compose.yaml"), "w") as f:
        f.write("name: x\nservices:\n  a: {image: busybox}\n")
    out = subprocess.run([dc, "-f", os.path.join(bad_dir, "compose.yaml"), "config", "-q"],
                         capture_output=True, text=True, timeout=60, env=env)
    check(out.returncode != 0, "docker-compose config refuses a top-level name (1.29)")

# The compose-spec schema: Debian's docker-compose (1.29) ships it, unchanged.
SPEC = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json"
try:
    import jsonschema
    import json
    spec = json.load(open(SPEC))
except (ImportError, OSError) as e:
    print("FAIL: the compose schema needs python3-jsonschema and docker-compose "
          "(sh deploy/install-deps.sh): %s" % e, file=sys.stderr)
    sys.exit(1)
raw = yaml.safe_load(open(os.path.join(D, "container", "compose.yaml")))
V = jsonschema.Draft201909Validator  # the schema's $schema
errs = sorted(V(spec).iter_errors(raw), key=str)
eq(["%s: %s" % ("/".join(map(str, e.absolute_path)), e.message[:200]) for e in errs], [],
   "compose.yaml is valid against the compose-spec schema")
# and the schema is not a no-op: a misspelt key is refused
bad = dict(raw, services=dict(raw["services"], redis=dict(raw["services"]["redis"], helthcheck={})))
check(any(True for _ in V(spec).iter_errors(bad)),
      "the schema refuses an unknown service key")

# Start order: every depends_on has a condition its target can meet.
for name, s in svcs.items():
    deps = s.get("depends_on", {})
    check(isinstance(deps, dict), "compose %s: depends_on with conditions (%r)" % (name, deps))
    for dep, cond in (deps.items() if isinstance(deps, dict) else []):
        c = cond.get("condition")
        if c == "service_healthy":
            check("healthcheck" in svcs[dep], "compose %s waits for %s healthy: it has a "
                  "healthcheck" % (name, dep))
        elif c == "service_started":
            check(dep in svcs, "compose %s starts after %s" % (name, dep))
        elif c == "service_completed_successfully":
            check(svcs[dep].get("restart", "no") in ("no", "on-failure") and
                  "healthcheck" not in svcs[dep], "compose %s waits for %s to complete: a one-shot"
                  % (name, dep))
        else:
            check(False, "compose %s -> %s: condition %r" % (name, dep, c))
for g in ("gateway1", "gateway2", "settle1", "settle2"):
    eq(svcs[g]["depends_on"].get("kafka-init"), {"condition": "service_completed_successfully"},
       g + " starts after the topics exist")
check("kafka-topics.sh" in " ".join(svcs["kafka-init"]["command"]) and
      svcs["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy",
      "kafka-init creates the topics once Kafka is healthy")

# Healthchecks: the command exists in the image, and asks the port the service listens on.
for name in ("redis", "kafka", "postgres", "gateway1", "gateway2", "settle1", "settle2"):
    check("healthcheck" in svcs[name], "compose %s has a healthcheck" % name)
cmd_line = re.search(r'^CMD (\[.*\])$', dockerfile, re.M).group(1)
admin_port = re.search(r'"--admin-listen", "[^"]*:(\d+)"', cmd_line).group(1)
for g in ("gateway1", "gateway2"):
    t = svcs[g]["healthcheck"]["test"]
    eq(t[:2], ["CMD", "curl"], g + ": healthcheck runs curl")
    eq(t[-1], "http://127.0.0.1:%s/readyz" % admin_port, g + ": probes the admin listener's /readyz")
for st in ("settle1", "settle2"):
    t = svcs[st]["healthcheck"]["test"]
    port = svcs[st]["environment"]["FLASHGATE_SETTLE_METRICS_LISTEN"].rsplit(":", 1)[1]
    eq(t[-1], "http://127.0.0.1:%s/metrics" % port, st + ": probes its metrics listener")
check("curl" in run_pkgs, "the runtime stage installs curl, which the healthchecks run")
# The image's own HEALTHCHECK: liveness (/healthz) on the admin port of its CMD.
hc = re.search(r"^HEALTHCHECK ((?:--\S+ )*)\\?\s*CMD (\[.*\])$", run_stage, re.M)
check(hc is not None, "the runtime stage has a HEALTHCHECK CMD [...]")
if hc:
    hopts = dict(o.lstrip("-").split("=", 1) for o in hc.group(1).split())
    hcmd = json.loads(hc.group(2))
    eq(hcmd[0], "curl", "the HEALTHCHECK runs curl (installed in the runtime stage)")
    eq(hcmd[-1], "http://127.0.0.1:%s/healthz" % admin_port,
       "the HEALTHCHECK asks /healthz on the CMD's admin listener, never the public port")
    check(secs(hopts.get("timeout", "30s")) >= 2 and int(hopts.get("retries", "3")) >= 3,
          "the HEALTHCHECK waits several CPU-quota periods, 3 or more misses: %r" % hopts)
    check(secs(hopts.get("start-period", "0s")) >= 30, "a start period for the spool's replay")

# Entrypoints and paths against the Dockerfile.
copied = re.search(r"^COPY --from=build (.*) (/\S+/)$", run_stage, re.M)
check(copied is not None, "the runtime stage copies the binaries")
bins = {copied.group(2) + os.path.basename(p) for p in copied.group(1).split()} if copied else set()
entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
check(entry[0] in bins, "the image's ENTRYPOINT %s is a copied binary" % entry[0])
for st in ("settle1", "settle2"):
    check(svcs[st]["entrypoint"][0] in bins, st + ": entrypoint is a binary in the image")
vol = json.loads(re.search(r"^VOLUME (\[.*\])$", dockerfile, re.M).group(1))
def mount_target(v):
    return v["target"] if isinstance(v, dict) else v.split(":")[1]


def mount_source(v):
    return v["source"] if isinstance(v, dict) else v.split(":")[0]


for name in ("gateway1", "gateway2"):
    data = [mount_source(v) for v in svcs[name]["volumes"] if mount_target(v) == vol[0]]
    check(len(vol) == 1 and len(data) == 1 and data[0] in compose.get("volumes", {}),
          name + ": a named volume at the image's VOLUME %s: %r" % (vol, svcs[name]["volumes"]))
    check(("--data-dir\", \"%s\"" % vol[0]) in cmd_line, "the image's CMD uses that data dir")
for st in ("settle1", "settle2"):
    a = svcs[st]["command"]
    eq(a[a.index("--data-dir") + 1], vol[0], st + ": --data-dir is the image's VOLUME")
# Kafka: the volume holds what Kafka writes (log.dirs), not a path it never uses.
kvol = [v.split(":")[1] for v in svcs["kafka"]["volumes"]]
eq(kvol, [kenv.get("KAFKA_LOG_DIRS")], "the Kafka volume is its KAFKA_LOG_DIRS")
check(re.fullmatch(r"[A-Za-z0-9_-]{22}", kenv.get("CLUSTER_ID", "")) is not None,
      "Kafka has a fixed CLUSTER_ID (a restart keeps its formatted volume)")

# One JWK set for both gateways: the same host file, read-only, at the path
# identity.jwks_file names.
jwks_srcs = set()
for g in ("gateway1", "gateway2"):
    path = svcs[g]["environment"].get("FLASHGATE_IDENTITY_JWKS_FILE")
    check(path, g + " sets identity.jwks_file (FLASHGATE_IDENTITY_JWKS_FILE)")
    m = [v for v in svcs[g]["volumes"] if mount_target(v) == path]
    check(len(m) == 1, "%s mounts a file at %s: %r" % (g, path, svcs[g]["volumes"]))
    if m:
        check(isinstance(m[0], dict) and m[0].get("type") == "bind" and m[0].get("read_only"),
              g + ": the JWK set is a read-only bind of the host's file: %r" % m[0])
        jwks_srcs.add(mount_source(m[0]))
eq(len(jwks_srcs), 1, "both gateways mount the same JWK set: %r" % jwks_srcs)

# The tokens: files the secrets one-shot writes into the volume the readers mount.
sec = svcs.get("secrets", {})
sec_cmd = " ".join(sec.get("command", []))
sec_vol = [v.split(":") for v in sec.get("volumes", [])]
check(sec_vol and sec.get("restart", "no") == "no" and "healthcheck" not in sec,
      "a one-shot secrets service with a volume")
sec_dir = dict((a, b) for a, b, *_ in sec_vol)


def written_by_secrets(svc, path):
    for v in svcs[svc].get("volumes", []):
        parts = [mount_source(v), mount_target(v)]
        if parts[0] in sec_dir and path.startswith(parts[1].rstrip("/") + "/"):
            name = path[len(parts[1].rstrip("/")) + 1:]
            return ("$$d/" + name) in sec_cmd
    return False


for g in ("gateway1", "gateway2"):
    e = svcs[g]["environment"]
    for k in ("FLASHGATE_ADMIN_TOKEN_FILE", "FLASHGATE_SERVER_ADMIN_TOKENS_FILE"):
        check(written_by_secrets(g, e.get(k, "")), "%s: %s (%s) is written by the secrets one-shot"
              % (g, k, e.get(k)))
    eq(svcs[g]["depends_on"].get("secrets"), {"condition": "service_completed_successfully"},
       g + " starts after the secrets are written")
check("chmod 0400 $$d/admin_token" in sec_cmd and "chown 10001:10001" in sec_cmd,
      "the admin token is the image user's, 0400 (flashgate refuses other access)")

# Prometheus: the shipped rule files, promtool check config, every gateway and worker.
prom = svcs.get("prometheus", {})
mounts = {mount_target(v): mount_source(v) for v in prom.get("volumes", [])}
cfg_path = [a.split("=", 1)[1] for a in prom.get("command", []) if a.startswith("--config.file=")]
check(cfg_path and cfg_path[0] in mounts, "Prometheus's --config.file is a mounted file")
if cfg_path and cfg_path[0] in mounts:
    host_cfg = os.path.normpath(os.path.join(D, "container", mounts[cfg_path[0]]))
    pcfg = yaml.safe_load(open(host_cfg))
    ptmp = tempfile.mkdtemp(prefix="fg-it-prom-")
    atexit.register(shutil.rmtree, ptmp, True)
    cdir = os.path.dirname(cfg_path[0])
    for rf in pcfg["rule_files"]:
        cpath = rf if rf.startswith("/") else cdir + "/" + rf
        check(cpath in mounts, "rule file %s is mounted" % cpath)
        if cpath in mounts:
            src = os.path.normpath(os.path.join(D, "container", mounts[cpath]))
            check(src.startswith(os.path.join(D, "observability")),
                  "rule file %s is the shipped %s" % (cpath, src))
            shutil.copy(src, os.path.join(ptmp, os.path.basename(rf)))
    jobs = {j["job_name"]: j for j in pcfg["scrape_configs"]}
    eq(sorted(jobs), ["flashgate", "flashgate-settle"], "Prometheus has the jobs the alerts name")
    cred = jobs["flashgate"]["authorization"]["credentials_file"]
    check(written_by_secrets("prometheus", cred),
          "Prometheus's token file %s is written by the secrets one-shot" % cred)
    check("prometheus:read:" in sec_cmd, "the gateways list Prometheus's token as a READ token")
    tok = os.path.join(ptmp, "token")
    with open(tok, "w") as f:
        f.write("t\n")
    jobs["flashgate"]["authorization"]["credentials_file"] = tok
    with open(os.path.join(ptmp, "prometheus.yml"), "w") as f:
        yaml.safe_dump(pcfg, f)
    out = subprocess.run(["promtool", "check", "config", os.path.join(ptmp, "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    eq(out.returncode, 0, "promtool check config on compose's prometheus.yml: " +
       (out.stdout + out.stderr)[-500:])
    targets = lambda j: sorted(t for sc in jobs[j]["static_configs"] for t in sc["targets"])
    eq(targets("flashgate"), ["gateway%d:%s" % (i, admin_port) for i in (1, 2)],
       "Prometheus scrapes both gateways' admin listeners")
    eq(targets("flashgate-settle"), sorted(
        "%s:%s" % (st, svcs[st]["environment"]["FLASHGATE_SETTLE_METRICS_LISTEN"].rsplit(":", 1)[1])
        for st in ("settle1", "settle2")), "Prometheus scrapes both settle workers")

# Grafana: the shipped dashboard and the stack's Prometheus, provisioned from files.
graf = svcs.get("grafana", {})
gm = {mount_target(v): mount_source(v) for v in graf.get("volumes", [])}
prov = {k: yaml.safe_load(open(os.path.normpath(os.path.join(D, "container", v))))
        for k, v in gm.items() if k.startswith("/etc/grafana/provisioning/")}
ds = [d for k, p in prov.items() if "/datasources/" in k for d in p.get("datasources", [])]
check(any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090" for d in ds),
      "Grafana's data source is the stack's Prometheus: %r" % ds)
dp = [p_["options"]["path"] for k, p in prov.items() if "/dashboards/" in k for p_ in p.get("providers", [])]
dash_mounts = [k for k, v in gm.items() if v.endswith("observability/grafana-dashboard.json")]
check(dash_mounts and dp and any(m.startswith(dp[0].rstrip("/") + "/") for m in dash_mounts),
      "Grafana's dashboard provider reads the shipped grafana-dashboard.json: %r %r" % (dp, dash_mounts))

# systemd: the env example names the same shared set, installed readable by the
# service's group beside the config.
senv = open(os.path.join(D, "systemd", "flashgate.env.example")).read()
m = re.search(r"^FLASHGATE_IDENTITY_JWKS_FILE=(\S+)$", senv, re.M)
check(m is not None, "the systemd env example sets FLASHGATE_IDENTITY_JWKS_FILE (not commented out)")
if m:
    check(re.search(r"install -m 0640 -g flashgate \S+ %s" % re.escape(m.group(1)),
                    open(os.path.join(D, "systemd", "flashgate.service")).read()),
          "flashgate.service's comments install the JWK set at %s" % m.group(1))

# ---- Kubernetes ----
docs = [d for d in yaml.safe_load_all(open(os.path.join(D, "k8s", "flashgate.yaml"))) if d]
kinds = [d["kind"] for d in docs]
for k in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Deployment"):
    check(k in kinds, "k8s has a " + k)
workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
check("flashgate" in workloads and "flashgate-settle" in workloads, "k8s runs gateways and settle")
for name, w in workloads.items():
    spec = w["spec"]
    labels = spec["template"]["metadata"]["labels"]
    sel = spec["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), name + ": selector matches pod labels")
    pod = spec["template"]["spec"]
    check(pod["securityContext"].get("runAsNonRoot") is True, name + ": runAsNonRoot")
    eq(pod["securityContext"].get("runAsUser"), image_uid, name + ": runAsUser is the image's user")
    c = pod["containers"][0]
    eq(c["image"], svcs["gateway1"]["image"], name + ": the image compose builds")
    r = c.get("resources", {})
    check("cpu" in r.get("requests", {}) and "memory" in r.get("requests", {}) and "memory" in
          r.get("limits", {}), name + ": resource requests and limits")
    check(c["securityContext"].get("allowPrivilegeEscalation") is False, name + ": no privilege escalation")
    env = {e["name"]: (e.get("value") or "x" * 24) for e in c.get("env", [])}
    binary = os.path.basename(c.get("command", ["/usr/local/bin/flashgate"])[0])
    if "FLASHGATE_INVENTORY" in env:
        env["FLASHGATE_INVENTORY"] = "redis://127.0.0.1:6379/0"
    if "FLASHGATE_SETTLE_DB" in env:
        env["FLASHGATE_SETTLE_DB"] = "postgresql://u:p@127.0.0.1/orders"
    check_env_reaches(binary, local_args(c.get("args", [])), env, "k8s " + name)
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    check("/var/lib/flashgate" in mounts, name + ": the data dir is a volume (read-only root)")
    if name == "flashgate-settle":
        grace = settle_stop_grace(local_args(c.get("args", [])), env)
        check(pod["terminationGracePeriodSeconds"] >= grace + SETTLE_EXIT_S,
              "flashgate-settle: terminationGracePeriodSeconds %d covers settle.stop_grace "
              "(%g s) + %d" % (pod["terminationGracePeriodSeconds"], grace, SETTLE_EXIT_S))
    if name == "flashgate":
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        rp = c["readinessProbe"]["httpGet"]
        eq((rp["path"], rp["port"] in ports), ("/readyz", True), "gateway readiness is /readyz")
        lp = c["livenessProbe"]["httpGet"]
        eq((lp["path"], lp["port"] in ports), ("/healthz", True), "gateway liveness is /healthz")
        args = c["args"]
        eq(args[args.index("--listen") + 1].split(":")[-1], str(ports["http"]),
           "gateway listens on its http containerPort")
        pre = c["lifecycle"]["preStop"]["exec"]["command"]
        check(pre[0] == "/bin/sleep", "gateway has a preStop hook (%r)" % pre)
        out = run_check("flashgate", local_args(args), env)
        eff = dict(l.split(" = ", 1) for l in out.stdout.splitlines() if " = " in l)

        total = float(pre[1]) + secs(eff["server.drain_grace"]) + secs(eff["server.drain_timeout"])
        check(pod["terminationGracePeriodSeconds"] >= total + 5,
              "terminationGracePeriodSeconds %d covers preStop + drain grace + timeout (%.0f s) + 5"
              % (pod["terminationGracePeriodSeconds"], total))
        for svc in (d for d in docs if d["kind"] == "Service"):
            check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
                  "Service %s selects the gateways" % svc["metadata"]["name"])
            for p in svc["spec"]["ports"]:
                check(p["targetPort"] in ports, "Service %s port %s names a container port"
                      % (svc["metadata"]["name"], p["targetPort"]))
for d in docs:
    if d["kind"] == "PodDisruptionBudget":
        sel = d["spec"]["selector"]["matchLabels"]
        check(any(all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                  for w in workloads.values()), "PDB %s selects a workload" % d["metadata"]["name"])
    if d["kind"] == "HorizontalPodAutoscaler":
        t = d["spec"]["scaleTargetRef"]
        check(t["name"] in workloads and workloads[t["name"]]["kind"] == t["kind"],
              "HPA targets an existing %s %s" % (t["kind"], t["name"]))
check("not run in CI" in readme or "not built, started or applied in CI" in readme,
      "README says the container and Kubernetes files are not run in CI")
finish()
