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
  key (--check-config).
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


def run_check(binary, args, env_vars):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    env.update(env_vars)
    for k, v in env_vars.items():
        if k.endswith("_TOKEN_FILE") and v.startswith("/"):
            env[k] = local_secret(v)
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
for b, n, p in sorted(needed):
    cands = {p, os.path.realpath(p)}
    for c in list(cands):
        cands.add(c.replace("/usr/lib/", "/lib/", 1) if c.startswith("/usr/lib/") else
                  c.replace("/lib/", "/usr/lib/", 1))
    pkg = None
    for c in cands:
        out = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            pkg = out.stdout.split(":")[0]
            break
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

# The compose-spec schema: Debian's docker-compose (1.29) ships it; the spec has
# since gained two keys this file uses (top-level `name`, a secret's
# `environment`), added here as the current spec defines them.
SPEC = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json"
try:
    import jsonschema
    import json
    spec = json.load(open(SPEC))
except (ImportError, OSError) as e:
    print("FAIL: the compose schema needs python3-jsonschema and docker-compose "
          "(sh deploy/install-deps.sh): %s" % e, file=sys.stderr)
    sys.exit(1)
spec["properties"].setdefault("name", {"type": "string"})
spec["definitions"]["secret"]["properties"].setdefault("environment", {"type": "string"})
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

# Entrypoints and paths against the Dockerfile.
copied = re.search(r"^COPY --from=build (.*) (/\S+/)$", run_stage, re.M)
check(copied is not None, "the runtime stage copies the binaries")
bins = {copied.group(2) + os.path.basename(p) for p in copied.group(1).split()} if copied else set()
entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
check(entry[0] in bins, "the image's ENTRYPOINT %s is a copied binary" % entry[0])
for st in ("settle1", "settle2"):
    check(svcs[st]["entrypoint"][0] in bins, st + ": entrypoint is a binary in the image")
vol = json.loads(re.search(r"^VOLUME (\[.*\])$", dockerfile, re.M).group(1))
for name in ("gateway1", "gateway2"):
    targets = [v.split(":")[1] for v in svcs[name]["volumes"]]
    eq(targets, vol, name + ": its volume is the image's VOLUME")
    check(("--data-dir\", \"%s\"" % vol[0]) in cmd_line, "the image's CMD uses that data dir")
for st in ("settle1", "settle2"):
    a = svcs[st]["command"]
    eq(a[a.index("--data-dir") + 1], vol[0], st + ": --data-dir is the image's VOLUME")
# Kafka: the volume holds what Kafka writes (log.dirs), not a path it never uses.
kvol = [v.split(":")[1] for v in svcs["kafka"]["volumes"]]
eq(kvol, [kenv.get("KAFKA_LOG_DIRS")], "the Kafka volume is its KAFKA_LOG_DIRS")
check(re.fullmatch(r"[A-Za-z0-9_-]{22}", kenv.get("CLUSTER_ID", "")) is not None,
      "Kafka has a fixed CLUSTER_ID (a restart keeps its formatted volume)")

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
