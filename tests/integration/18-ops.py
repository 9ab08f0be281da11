"""Operating it live: named admin tokens with roles (none, wrong,
read on a write route: 401/403 and nothing changed), per-sale rules with dry
run (reject nothing, count exactly), an audit line for every change, rollback
restores earlier limits and rules (never stock), heavy hitters, the sampled
access log, and GET /metrics passing `promtool check metrics`."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")
PROMTOOL = shutil.which("promtool")
check(PROMTOOL is not None, "promtool installed (deploy/install-deps.sh: prometheus)")

READ_TOK = "read-token-0123456789abcdef"
OPS_TOK = "ops-write-token-0123456789"


def audit_lines(g):
    with open(os.path.join(g.data_dir, "audit.log")) as f:
        return [json.loads(x) for x in f if x.strip()]


def promtool_ok(text, what):
    if not PROMTOOL:
        return
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 0, "%s: promtool check metrics: %s %s" % (what, p.stdout, p.stderr))


def metric(text, name, **labels):
    """The value of one sample, or None."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, val = line.rsplit(" ", 1)
        n, _, lab = key.partition("{")
        if n != name:
            continue
        got = ",".join(sorted(x for x in lab.rstrip("}").split(",") if x))
        if got == want:
            return float(val)
    return None


# A tokens file readable by others is refused at start.
g0 = Gateway()
os.makedirs(g0.data_dir, exist_ok=True)
tf = os.path.join(g0.data_dir, "admin.tokens")
with open(tf, "w") as f:
    f.write("viewer:read:%s\n" % READ_TOK)
os.chmod(tf, 0o644)
g0.spawn(g0.cmd(), env=g0.env)
rc = g0.proc.wait(20)
check(rc != 0 and "chmod 600" in g0.logs(), "world-readable tokens file refused: %r" % g0.logs()[-300:])
g0.cleanup()

g = Gateway("--access-log-sample", "1", "--log-summary-interval", "0", "--enable-debug-routes")
os.makedirs(g.data_dir, exist_ok=True)
tf = os.path.join(g.data_dir, "admin.tokens")
with open(tf, "w") as f:
    f.write("# name:role:token\nviewer:read:%s\nops:write:%s\n" % (READ_TOK, OPS_TOK))
os.chmod(tf, 0o600)
g.start()
try:
    A = g.admin
    eq(A("PUT", "/admin/v1/sales/s1", body={"stock": 100, "per_user_limit": 100}).status, 201,
       "sale created (default token)")
    eq(A("PATCH", "/admin/v1/limits", body={"user_rps": 0, "ip_rps": 0, "subnet_rps": 0}).status, 200,
       "global user/ip limits off")

    # --- roles ---
    eq(A("GET", "/admin/v1/whoami", token=READ_TOK).json, {"name": "viewer", "role": "read"},
       "whoami read")
    eq(A("GET", "/admin/v1/whoami", token=OPS_TOK).json["role"], "write", "whoami write")
    for p in ("/admin/v1/stats", "/admin/v1/limits", "/admin/v1/rules", "/admin/v1/audit",
              "/admin/v1/sales", "/admin/v1/sales/s1", "/metrics", "/admin/v1/config",
              "/admin/v1/routes"):
        eq(A("GET", p, token=READ_TOK).status, 200, "read token reads " + p)
    before_limits = A("GET", "/admin/v1/limits").json
    before_sale = A("GET", "/admin/v1/sales/s1").json
    n_audit = len(audit_lines(g))
    writes = [("PUT", "/admin/v1/sales/s1", {"stock": 5}),
              ("POST", "/admin/v1/sales/s1/restock", {"add": 5}),
              ("PATCH", "/admin/v1/limits", {"user_rps": 1}),
              ("PUT", "/admin/v1/rules/s1", {"user_rps": 1}),
              ("DELETE", "/admin/v1/rules/s1", None),
              ("POST", "/admin/v1/config/rollback", {"version": 1}),
              ("PUT", "/admin/v1/debug/broker", {"down": True}),
              ("PUT", "/admin/v1/degrade", {"level": 2}),
              ("PATCH", "/admin/v1/routes", {"prefix": "/v1/x/", "latency_target_ms": 5})]
    for m, p, b in writes:
        for tok, want in ((None, 401), ("wrong-token-0123456789", 401), (READ_TOK, 403)):
            r = A(m, p, body=b, token=tok)
            check(r.status == want and r.json and r.json["error"] ==
                  ("unauthorized" if want == 401 else "forbidden"),
                  "%s %s with %s: %r" % (m, p, tok, r))
    eq(A("GET", "/admin/v1/limits").json, before_limits, "refused writes changed no limit")
    eq(A("GET", "/admin/v1/sales/s1").json, before_sale, "refused writes changed no sale")
    eq(A("GET", "/admin/v1/rules").json["rules"], [], "refused writes made no rule")
    eq(len(audit_lines(g)), n_audit, "refused writes wrote no audit line")
    # The debug routes refuse unknown fields, and a broker body that asks for two things
    # (its rtt_ms was dropped without a word): 400, nothing changes, no audit line.
    for p, b in (("/admin/v1/debug/clock", {"wall_offset_ms": 0, "colour": 1}),
                 ("/admin/v1/debug/broker", {"down": False, "colour": 1}),
                 ("/admin/v1/debug/broker", {"down": False, "rtt_ms": 5})):
        r = A("PUT", p, body=b)
        check(r.status == 400 and r.json["error"] == "bad_request" and
              ("colour" in r.json["message"] or "not both" in r.json["message"]),
              "PUT %s %r refused, naming the problem: %r" % (p, b, r))
    eq(len(audit_lines(g)), n_audit, "refused debug writes wrote no audit line")
    eq(A("GET", "/admin/v1/nope", token=None).status, 401, "unknown path still needs a token")
    eq(A("GET", "/admin/v1/nope").status, 404, "unknown path with a token: 404")
    r = A("POST", "/admin/v1/limits")
    check(r.status == 405 and "PATCH" in r.headers.get("allow", ""), "405 with Allow: %r" % r)

    # --- rules: validation ---
    for bad in ({}, {"user_rps": -1}, {"user_rps": 1, "colour": 1}, {"dry_run": "yes", "user_rps": 1},
                {"user_rps": 1, "user_burst": 0}, {"sale_rps": 0.0001},
                {"sale_id": "s2", "user_rps": 1}, {"sale_id": 7, "user_rps": 1}):
        r = A("PUT", "/admin/v1/rules/s1", body=bad)
        check(r.status == 400 and r.json["error"] == "bad_request", "rule %r refused: %r" % (bad, r))
    eq(A("PUT", "/admin/v1/rules/bad%20id", body={"user_rps": 1}).status, 400, "bad sale id")
    eq(A("DELETE", "/admin/v1/rules/s1").status, 404, "delete of no rule: 404")
    eq(A("GET", "/admin/v1/rules").json["rules"], [], "refused rules made nothing")

    # --- dry run: rejects nothing, counts exactly ---
    created_before = metric(A("GET", "/metrics", token=READ_TOK).raw.decode(),
                            "flashgate_admin_responses_total", status="201", code="created") or 0
    v_before_rule = A("GET", "/admin/v1/audit").json["version"]
    r = A("PUT", "/admin/v1/rules/s1", body={"user_rps": 0.001, "user_burst": 2, "dry_run": True},
          token=OPS_TOK)
    eq(r.status, 201, "dry-run rule created")
    statuses = [g.buy("s1", "bot1").status for _ in range(10)]
    eq(statuses, [202] * 10, "dry-run rule refuses nothing")
    rule = A("GET", "/admin/v1/rules").json["rules"][0]
    eq((rule["dry_run_rejected"]["user"], rule["rejected"]["user"]), (8, 0),
       "dry run counts exactly the 8 it would refuse")
    # Enforced: the same rule for another user refuses after its burst.
    eq(A("PUT", "/admin/v1/rules/s1", body={"user_rps": 0.001, "user_burst": 2}).status, 200,
       "rule enforced")
    statuses = [g.buy("s1", "bot2").status for _ in range(6)]
    eq(statuses, [202, 202, 429, 429, 429, 429], "enforced rule refuses past its burst")
    r = g.buy("s1", "bot2")
    eq((r.status, r.json["scope"]), (429, "user"), "rule refusal says its scope")
    eq(g.buy("s1", "bot3").status, 202, "other users have their own rule bucket")
    rule = A("GET", "/admin/v1/rules").json["rules"][0]
    eq((rule["rejected"]["user"], rule["dry_run_rejected"]["user"]), (5, 8), "enforced count")
    # Another sale is not touched by s1's rule.
    A("PUT", "/admin/v1/sales/s2", body={"stock": 100, "per_user_limit": 100})
    eq([g.buy("s2", "bot2").status for _ in range(4)], [202] * 4, "rule is per sale")
    # A sale-rate rule.
    eq(A("PUT", "/admin/v1/rules/s2", body={"sale_rps": 0.001, "sale_burst": 3}).status, 201,
       "sale rule")
    eq([g.buy("s2", "u%d" % i).status for i in range(5)], [202, 202, 202, 429, 429],
       "sale rule refuses past its burst")
    # A burst without its rate is not kept (the part is off): the answer and the
    # audit say what is in force, as GET does.
    r = A("PUT", "/admin/v1/rules/s2", body={"sale_rps": 0.001, "sale_burst": 3, "user_burst": 7})
    got = [x for x in A("GET", "/admin/v1/rules").json["rules"] if x["sale_id"] == "s2"][0]
    last = audit_lines(g)[-1]
    eq((r.status, r.json["user_burst"], got["user_burst"], last["new"]["user_burst"]),
       (200, 0, 0, 0), "a rule's burst of a part that is off: answer, GET and audit agree")

    # --- heavy hitters ---
    st = A("GET", "/admin/v1/stats").json
    users = st["heavy_hitters"]["users"]
    check(users and users[0]["key"] == "bot2" and users[0]["count"] >= 5,
          "bot2 tops the heavy hitters: %r" % users)
    check(any(x["key"] == "127.0.0.1" for x in st["heavy_hitters"]["ips"]),
          "client address among heavy hitters")
    rows = users + st["heavy_hitters"]["ips"]
    check(all(x["lower_bound"] == x["count"] - x["error"] and x["lower_bound"] > 1 for x in rows),
          "each row has its guaranteed count (count - error), and it is above 1: %r" % rows)
    check(all(a["lower_bound"] >= b["lower_bound"] for a, b in zip(users, users[1:])),
          "rows by guaranteed count: %r" % users)

    # --- audit: a line for every change, with who/what/old/new ---
    lines = audit_lines(g)
    eq(lines[0]["what"], "start", "first line: start")
    whats = [x["what"] for x in lines]
    for w in ("sale.put", "limits.patch", "rule.put"):
        check(w in whats, "audit has " + w)
    vers = [x["version"] for x in lines]
    eq(vers, list(range(1, len(vers) + 1)), "versions consecutive")
    rp = [x for x in lines if x["what"] == "rule.put"]
    eq((rp[0]["who"], rp[0]["old"], rp[0]["new"]["dry_run"]), ("ops", None, True),
       "rule.put by ops, old null")
    eq((rp[1]["who"], rp[1]["old"]["dry_run"], rp[1]["new"]["dry_run"]), ("admin", True, False),
       "rule change old and new")
    lp = [x for x in lines if x["what"] == "limits.patch"][0]
    eq((lp["old"]["user_rps"], lp["new"]["user_rps"]), (1.0, 0.0), "limits old/new")
    check(all("at" in x and "config" in x for x in lines), "every line has at and config")
    api = A("GET", "/admin/v1/audit?since=%d" % v_before_rule).json
    eq([x["version"] for x in api["entries"]], list(range(v_before_rule + 1, api["version"] + 1)),
       "GET audit since")
    eq(len(A("GET", "/admin/v1/audit?limit=2").json["entries"]), 2, "audit limit")
    eq(A("GET", "/admin/v1/audit?since=x").status, 400, "bad since")
    n = len(lines)
    r = A("POST", "/admin/v1/sales/s1/restock", body={"add": 7})
    eq(r.status, 200, "restock")
    last = audit_lines(g)[-1]
    eq((len(audit_lines(g)), last["what"], last["new"]["add"],
        last["new"]["stock_total"] - last["old"]["stock_total"]), (n + 1, "sale.restock", 7, 7),
       "restock audited with old and new")

    # --- rollback: limits and rules as at a version, stock untouched ---
    v_limits_off = lp["version"]  # after this: user/ip limits off, no rules
    stock_before = A("GET", "/admin/v1/sales/s1").json["stock_total"]
    eq(A("PATCH", "/admin/v1/limits", body={"global_rps": 500, "global_burst": 50}).status, 200,
       "limits changed again")
    r = A("POST", "/admin/v1/config/rollback", body={"version": v_limits_off}, token=OPS_TOK)
    eq(r.status, 200, "rollback")
    eq(r.json["restored"], v_limits_off, "rollback says which version")
    lim = A("GET", "/admin/v1/limits").json
    eq((lim["global_rps"], lim["user_rps"], lim["ip_rps"]), (0.0, 0.0, 0.0),
       "rollback restored the limits")
    eq(A("GET", "/admin/v1/rules").json["rules"], [], "rollback restored the rule set (none)")
    eq(A("GET", "/admin/v1/sales/s1").json["stock_total"], stock_before, "stock never rolled back")
    last = audit_lines(g)[-1]
    eq((last["what"], last["who"], len(last["old"]["rules"]), last["new"]["rules"]),
       ("config.rollback", "ops", 2, []), "rollback audited")
    eq([g.buy("s1", "bot2").status for _ in range(3)], [202] * 3, "rolled-back rule no longer refuses")
    # Roll forward to the version with the enforced s1 rule.
    v_enforced = rp[1]["version"]
    eq(A("POST", "/admin/v1/config/rollback", body={"version": v_enforced}).status, 200,
       "roll forward")
    eq([x["sale_id"] for x in A("GET", "/admin/v1/rules").json["rules"]], ["s1"],
       "roll forward restored the rule")
    for bad in ({}, {"version": 0}, {"version": "1"}, {"version": 10 ** 6}, {"version": 1, "x": 1}):
        r = A("POST", "/admin/v1/config/rollback", body=bad)
        check(r.status in (400, 404), "rollback %r refused: %r" % (bad, r))

    # --- a limit changed at run time ---
    # A scope that is off keeps its configured burst (limits.sale_burst, default 1000), so
    # turning its rate on is one field; it was kept as 0, GET showed 0 and this was a 400.
    eq(A("GET", "/admin/v1/limits").json["sale_burst"], 1000, "an off scope shows its burst")
    r = A("PATCH", "/admin/v1/limits", body={"sale_rps": 1000})
    eq((r.status, (r.json or {}).get("sale_rps"), (r.json or {}).get("sale_burst")),
       (200, 1000.0, 1000), "PATCH of sale_rps alone: on, with the configured burst")
    # GET /admin/v1/config says where each value in force came from: a changed limit was
    # shown with the source of the value it replaced ("default").
    cfg = A("GET", "/admin/v1/config").json
    eq((cfg["limits.sale_rps"]["value"], cfg["limits.sale_rps"]["source"]), ("1000", "runtime"),
       "config: a limit set through the admin API is 'runtime'")
    eq((cfg["limits.user_rps"]["value"], cfg["limits.user_rps"]["source"]), ("0", "runtime"),
       "config: the earlier PATCH's limit too")
    eq((cfg["limits.sale_burst"]["value"], cfg["limits.sale_burst"]["source"]), ("1000", "default"),
       "config: a limit no change touched keeps its source")
    eq(A("PATCH", "/admin/v1/limits", body={"sale_rps": 0}).status, 200, "sale rate off again")

    # --- access log: sampled at 1 here; never a line with the default 0 (see below) ---
    check("mod=access" in g.logs(20000) and "route=buy" in g.logs(20000), "access lines at rate 1")

    # --- metrics ---
    r = A("GET", "/metrics", token=READ_TOK)
    eq(r.status, 200, "metrics")
    check(r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"), "content type")
    text = r.raw.decode()
    promtool_ok(text, "gateway /metrics")
    st = A("GET", "/admin/v1/stats").json
    eq(metric(text, "flashgate_responses_total", route="buy", status="202", code="queued"),
       float(st["replies"]["202_queued"]), "202s in metrics = stats")
    rule = A("GET", "/admin/v1/rules").json["rules"][0]
    for mode, key in (("dry_run", "dry_run_rejected"), ("enforce", "rejected")):
        eq(metric(text, "flashgate_rule_rejected_total", sale="s1", scope="user", mode=mode),
           float(rule[key]["user"]), "rule %s count in metrics = rules API" % mode)
    # two rules and the sale s2 created since created_before: each counted as the
    # 201 it was (a created rule was counted as a 200 "ok")
    eq(metric(text, "flashgate_admin_responses_total", status="201", code="created"),
       created_before + 3, "admin 201s in metrics: two rules and a sale created")
    eq(metric(text, "flashgate_sale_stock_left", sale="s1"),
       float(A("GET", "/admin/v1/sales/s1").json["stock_left"]), "stock left per sale")
    eq(metric(text, "flashgate_request_duration_seconds_bucket", route="buy", le="+Inf"),
       metric(text, "flashgate_requests_total", route="buy"), "histogram count = buy requests")
    check((metric(text, "flashgate_request_duration_seconds_bucket", route="buy", le="5e-05") or 0)
          <= (metric(text, "flashgate_request_duration_seconds_bucket", route="buy", le="0.001")),
          "buckets cumulative")
    # heavy hitters are user ids and addresses: churning label values, kept out of
    # Prometheus (the admin stats and the dashboard list them)
    check("flashgate_heavy_hitter_rejections" not in text and "bot2" not in text,
          "no heavy hitter label values in metrics")
    check(re.search(r'^flashgate_build_info\{version="[^"]+",commit="[0-9A-Za-z._-]+"\} 1$', text,
                    re.M) is not None, "flashgate_build_info{version,commit}")
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds"):
        v = metric(text, name)
        check(v is not None and v > 0, "%s exported: %r" % (name, v))
    check(abs(metric(text, "process_start_time_seconds") - time.time()) < 3600,
          "process_start_time_seconds is a recent Unix time")
    check(metric(text, "process_open_fds") < metric(text, "process_max_fds"), "open fds < max")
    eq(metric(text, "flashgate_degrade_level"), 0.0, "degrade level metric")
    for reason in ("redis_limit", "queue_delay", "inflight_limit"):
        check(metric(text, "flashgate_overload_rejected_total", reason=reason) is not None,
              "overload reason %s exported" % reason)
    eq(A("PUT", "/admin/v1/degrade", body={"level": 2}, token=OPS_TOK).status, 200, "pin level 2")
    text = A("GET", "/metrics").raw.decode()
    promtool_ok(text, "gateway /metrics at level 2")
    eq((metric(text, "flashgate_degrade_level"), metric(text, "flashgate_degrade_pinned")),
       (2.0, 1.0), "pinned level in metrics")
    last = audit_lines(g)[-1]
    eq((last["what"], last["who"], last["old"]["level"], last["new"]["level"]),
       ("degrade.set", "ops", 0, 2), "degrade change audited")
    eq(A("PUT", "/admin/v1/degrade", body={"level": "auto"}).status, 200, "back to auto")
    if "--kafka-brokers none" not in os.environ.get("FLASHGATE_IT_EXTRA", ""):
        from fgq import wait_until  # noqa: E402
        accepted = A("GET", "/admin/v1/stats").json["accepted_units"]
        check(wait_until(lambda: metric(A("GET", "/metrics").raw.decode(),
                                        "flashgate_relay_delivered_total") >= accepted, 30),
              "every accepted order delivered to Kafka")
        t2 = A("GET", "/metrics").raw.decode()
        eq(metric(t2, "flashgate_kafka_ack_duration_seconds_count"),
           metric(t2, "flashgate_relay_delivered_total"), "one Kafka ack sample per delivery")
    check(metric(text, "flashgate_relay_oldest_unacked_age_seconds") is not None or
          "--kafka-brokers none" in os.environ.get("FLASHGATE_IT_EXTRA", ""), "relay lag metric")

    # --- flashgate-settle --metrics-listen: its side, checked by promtool too ---
    if "--kafka-brokers none" not in os.environ.get("FLASHGATE_IT_EXTRA", ""):
        from fgq import Settle, sqlite_count, wait_until  # noqa: E402
        from fg import free_port  # noqa: E402
        mport = free_port()
        st = Settle(g.data_dir, "--metrics-listen", "127.0.0.1:%d" % mport).start()
        try:
            accepted = A("GET", "/admin/v1/stats").json["accepted_units"]

            def settled_all():
                try:
                    return sqlite_count(st.db_path) >= accepted
                except Exception:
                    return False
            check(wait_until(settled_all, 60), "settle settled every order")

            def scrape():
                return request(mport, "GET", "/metrics").raw.decode()
            # messages_total moves after the batch's commit, with batches_total
            check(wait_until(lambda: metric(scrape(), "flashgate_settle_messages_total") >= accepted,
                             30), "settle metrics count every committed message (%d)" % accepted)
            text = scrape()
            eq(metric(text, "flashgate_settle_settled_total"), float(accepted),
               "settled orders in the metrics")
            promtool_ok(text, "flashgate-settle /metrics")
            eq(metric(text, "flashgate_settle_batch_duration_seconds_count"),
               metric(text, "flashgate_settle_batches_total"), "one latency sample per batch")
            check(metric(text, "flashgate_settle_batches_total") >= 1, "batches counted")
            eq(metric(text, "flashgate_settle_consumer_lag"), 0.0, "no lag once caught up")
            eq(metric(text, "flashgate_settle_poisoned_total"), 0.0, "no poison order")
            eq(metric(text, "flashgate_settle_stalled"), 0.0, "not stalled")
            eq(request(mport, "GET", "/nope").status, 404, "settle metrics: other paths 404")
            eq(request(mport, "POST", "/metrics").status, 405, "settle metrics: GET only")
        finally:
            st.cleanup()
finally:
    g.stop()

# A restart keeps counting versions; the default access log is off.
g2 = Gateway("--log-summary-interval", "0", data_dir=g.data_dir).start()
try:
    g2.put_sale("s9", stock=3)
    for i in range(5):
        g2.buy("s9", "x%d" % i)
    lines = audit_lines(g2)
    eq([x["version"] for x in lines], list(range(1, len(lines) + 1)), "versions continue across restart")
    eq(lines[-2]["what"], "start", "restart appends a start line")
    check("mod=access" not in g2.logs(20000), "no access log by default")
finally:
    g2.cleanup()

# A torn last line (a crash or a full disk in its write) is cut off at start,
# not appended after: the next line glued to it was unreadable, lost to
# GET /admin/v1/audit and rollback, and its version was given out again.
with open(os.path.join(g.data_dir, "audit.log"), "a") as f:
    f.write('{"version":999,"at":"2026-')
g3 = Gateway("--log-summary-interval", "0", data_dir=g.data_dir).start()
try:
    g3.put_sale("s10", stock=1)
    lines = g3.admin("GET", "/admin/v1/audit?limit=10000").json["entries"]
    eq([x["version"] for x in lines], list(range(1, len(lines) + 1)),
       "versions consecutive after a torn line")
    eq([x["what"] for x in lines[-2:]], ["start", "sale.put"], "no line lost after a torn one")
finally:
    g3.cleanup()
g.cleanup()
finish()
