"""docs/openapi.yaml against the running server:
- the routes it documents are exactly the routes in the server's route tables
  (GW_PUBLIC_ROUTES in gateway/base/gw_types.h, the GW_ADMIN_ROUTE rows of each owner),
  and the admin routes' roles match the documented security (401 everywhere a token is
  needed, 403 on every write route);
- every documented route answers every documented status (a request for each; the few
  that need a broken server are listed below with the suite that covers them), and each
  answer's body has the documented required fields and types; the refusals (a body over
  64 KiB on every route that takes one, a rollback to a set this build cannot use)
  change nothing."""
import json
import os
import re
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import SRC, Gateway, check, eq, finish, need_binary, request, rfc3339  # noqa: E402

need_binary("flashgate")
spec = yaml.safe_load(open(os.path.join(SRC, "docs", "openapi.yaml")))
check(spec["openapi"].startswith("3.1"), "OpenAPI 3.1")
METHODS = ("get", "put", "post", "patch", "delete")

# --- the server's routes, from its route tables ---
hdr = open(os.path.join(SRC, "gateway", "base", "gw_types.h")).read()
pub_block = hdr[hdr.index("#define GW_PUBLIC_ROUTES"):]
pub_block = pub_block[:pub_block.index("\n\n")]
server = {}
for name, label, methods, path in re.findall(r'XX\((\w+),\s*"(\w+)",\s*"([^"]+)",\s*"([^"]+)"\)',
                                              pub_block):
    for m in methods.split(", "):
        if m != "HEAD":  # HEAD is GET without the body
            server[(m, path)] = "NONE"
# the admin routes: each owner's table of GW_ADMIN_ROUTE rows (gateway/base/gw_admin_route.h)
for d, _, names in os.walk(os.path.join(SRC, "gateway")):
    for n in sorted(names):
        if n.endswith(".c"):
            for m, path, role in re.findall(r'GW_ADMIN_ROUTE\("(\w+)",\s*"([^"]+)",\s*(\w+),',
                                            open(os.path.join(d, n)).read()):
                server[(m, path)] = role
check(len(server) >= 20, "route tables parsed (%d routes)" % len(server))

documented = {}
for path, item in spec["paths"].items():
    for m in METHODS:
        if m in item:
            documented[(m.upper(), path)] = item[m]
for k in sorted(set(server) - set(documented)):
    check(False, "route answered by the server but not documented: %s %s" % k)
for k in sorted(set(documented) - set(server)):
    check(False, "route documented but not in the server's route tables: %s %s" % k)
for k, role in server.items():
    op = documented.get(k)
    if not op:
        continue
    # the buyer's token (identity.mode=jwt) is optional and not an admin credential
    secured = any(req for req in op.get("security") or [] if "buyer" not in req)
    eq(secured, role != "NONE", "%s %s: documented security matches role %s" % (k + (role,)))
    if role != "NONE":
        check("401" in op["responses"], "%s %s documents 401" % k)
    # (the buy's 403 is the waiting room's admission_required, a public answer; the
    # queue's is identity's, identity_mismatch or forbidden; the registration's
    # registration_closed)
    if k not in (("POST", "/v1/sales/{sale_id}/orders"), ("GET", "/v1/sales/{sale_id}/queue"),
                 ("POST", "/v1/sales/{sale_id}/registrations")):
        eq("403" in op["responses"], role == "WRITE", "%s %s documents 403 iff a write route" % k)


# --- a small JSON-schema check: types, required, properties, items, enum, $ref, allOf ---
def deref(s):
    while isinstance(s, dict) and "$ref" in s:
        node = spec
        for part in s["$ref"].lstrip("#/").split("/"):
            node = node[part]
        s = node
    return s


TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(v, s, where):
    s = deref(s)
    errs = []
    for sub in s.get("allOf", []):
        errs += validate(v, sub, where)
    t = s.get("type")
    if t is not None:
        ts = t if isinstance(t, list) else [t]
        ok = False
        for x in ts:
            if x == "integer":
                ok |= isinstance(v, int) and not isinstance(v, bool)
            elif x == "number":
                ok |= isinstance(v, (int, float)) and not isinstance(v, bool)
            else:
                ok |= isinstance(v, TYPES[x])
        if not ok:
            return errs + ["%s: %r is not %s" % (where, v, t)]
    if "enum" in s and v not in s["enum"]:
        errs.append("%s: %r not in %r" % (where, v, s["enum"]))
    if isinstance(v, dict):
        for r in s.get("required", []):
            if r not in v:
                errs.append("%s: missing required %s" % (where, r))
        for k, sub in s.get("properties", {}).items():
            if k in v:
                errs += validate(v[k], sub, where + "." + k)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            for k, x in v.items():
                if k not in s.get("properties", {}):
                    errs += validate(x, ap, where + "." + k)
    if isinstance(v, list) and "items" in s:
        for i, x in enumerate(v):
            errs += validate(x, s["items"], "%s[%d]" % (where, i))
    return errs


covered = set()


def call(method, template, path, want, body=None, token="default", headers=None, raw=None):
    """One request; checks status, that it is documented, and the body's schema."""
    admin = template.startswith("/admin") or template == "/metrics"
    port = g.admin_port if admin else g.port
    h = dict(headers or {})
    tok = g.token if token == "default" else token
    if tok:
        h["Authorization"] = "Bearer " + tok
    if body is not None and raw is None:
        raw = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    r = request(port, method, path, body=raw, headers=h)
    what = "%s %s (%s)" % (method, path, template)
    eq(r.status, want, what + " status")
    op = documented.get((method, template))
    if not op:
        check(False, what + ": not documented")
        return r
    resp = op["responses"].get(str(r.status))
    if resp is None:
        check(False, "%s answered %d, not documented" % (what, r.status))
        return r
    covered.add((method, template, str(r.status)))
    resp = deref(resp)
    content = resp.get("content", {})
    ctype = r.headers.get("content-type", "").split(";")[0]
    if "application/json" in content:
        check(ctype == "application/json" and r.json is not None,
              "%s %d: JSON body (%s)" % (what, r.status, ctype))
        for e in validate(r.json, content["application/json"]["schema"], what):
            check(False, e)
    elif content:
        check(ctype in content, "%s %d: content type %s documented" % (what, r.status, ctype))
    return r


READ = "openapi-read-token-0123456789"
# one proxied route, for /admin/v1/routes (its upstream is never called)
g = Gateway("--log-summary-interval", "0", "--enable-debug-routes", "--proxy-routes",
            json.dumps([{"prefix": "/v1/recs/", "upstream": "http://127.0.0.1:9",
                         "timeout_ms": 300, "latency_target_ms": 20}]))
os.makedirs(g.data_dir, exist_ok=True)
with open(os.path.join(g.data_dir, "admin.tokens"), "w") as f:
    f.write("reader:read:%s\n" % READ)
os.chmod(os.path.join(g.data_dir, "admin.tokens"), 0o600)
# An audit log another build left (or a hand edit): versions 1 and 2 hold sets this build
# refuses, a limit and a rule field it does not know. A rollback to either is 409.
with open(os.path.join(g.data_dir, "audit.log"), "w") as f:
    for v, cfg in ((1, {"limits": {"user_rps": 1, "region_rps": 5}, "rules": []}),
                   (2, {"limits": {"user_rps": 1},
                        "rules": [{"sale_id": "s1", "user_rps": 1, "priority": "high"}]})):
        f.write(json.dumps({"version": v, "at": "2026-01-01T00:00:00.000Z", "who": "ops",
                            "what": "limits.patch", "target": "limits", "old": None, "new": None,
                            "config": cfg}) + "\n")
g.start()
no_kafka = "--kafka-brokers none" in os.environ.get("FLASHGATE_IT_EXTRA", "")
try:
    # Every secured admin route: 401 without a token; every write route: 403 with a read one.
    samples = {"{sale_id}": "s1", "{order_id}": "0AAAAAAAAAAAA", "{file}": "app.js"}
    for (m, tpl), role in sorted(server.items()):
        path = tpl
        for k, v in samples.items():
            path = path.replace(k, v)
        if role != "NONE":
            call(m, tpl, path, 401, body={}, token=None)
        if role == "WRITE":
            call(m, tpl, path, 403, body={}, token=READ)

    S = "/admin/v1/sales/{sale_id}"
    call("PUT", S, "/admin/v1/sales/s1", 201, {"stock": 50, "per_user_limit": 2})
    call("PUT", S, "/admin/v1/sales/s1", 200, {"stock": 50, "per_user_limit": 2})
    call("PUT", S, "/admin/v1/sales/s1", 400, {"stock": -1})
    call("PUT", S, "/admin/v1/sales/one", 201, {"stock": 1})
    call("PUT", S, "/admin/v1/sales/later", 201, {"stock": 1, "starts_at": "2099-01-01T00:00:00Z"})
    call("GET", S, "/admin/v1/sales/s1", 200)
    call("GET", S, "/admin/v1/sales/nosale", 404)
    call("GET", S, "/admin/v1/sales/bad%21", 400)
    call("GET", "/admin/v1/sales", "/admin/v1/sales", 200)
    call("PUT", S, "/admin/v1/sales/old", 201, {"stock": 1, "starts_at": "2020-01-01T00:00:00Z",
                                                "ends_at": "2020-01-02T00:00:00Z"})
    call("DELETE", S, "/admin/v1/sales/old", 200)
    call("DELETE", S, "/admin/v1/sales/old", 404)
    call("DELETE", S, "/admin/v1/sales/s1", 409)
    call("DELETE", S, "/admin/v1/sales/bad%21", 400)
    DR = "/admin/v1/sales/{sale_id}/draw"
    call("PUT", S, "/admin/v1/sales/fair", 201, {"stock": 1, "starts_at": "2099-01-01T00:00:00Z",
                                                 "fair_window_ms": 1000})
    call("GET", DR, "/admin/v1/sales/fair/draw", 200)
    call("GET", DR, "/admin/v1/sales/s1/draw", 404)
    call("GET", DR, "/admin/v1/sales/bad%21/draw", 400)
    R = "/admin/v1/sales/{sale_id}/restock"
    call("POST", R, "/admin/v1/sales/s1/restock", 200, {"add": 1})
    call("POST", R, "/admin/v1/sales/s1/restock", 400, {"add": 0})
    call("POST", R, "/admin/v1/sales/nosale/restock", 404, {"add": 1})
    call("PATCH", "/admin/v1/limits", "/admin/v1/limits", 200, {"user_rps": 0, "ip_rps": 0, "subnet_rps": 0})
    call("PATCH", "/admin/v1/limits", "/admin/v1/limits", 400, {"user_rps": -1})
    call("GET", "/admin/v1/limits", "/admin/v1/limits", 200)

    # public
    B = "/v1/sales/{sale_id}/orders"
    r = call("POST", B, "/v1/sales/s1/orders", 202, {"user_id": "u1"}, token=None)
    order_id = r.json["order_id"]
    loc = r.headers.get("location", "/v1/orders/" + order_id)
    call("POST", B, "/v1/sales/s1/orders", 400, token=None, raw="{nope",
         headers={"Content-Type": "application/json"})
    call("POST", B, "/v1/sales/nosale/orders", 404, {"user_id": "u1"}, token=None)
    call("POST", B, "/v1/sales/s1/orders", 409, {"user_id": "u9", "qty": 3}, token=None)
    call("POST", B, "/v1/sales/one/orders", 202, {"user_id": "u1"}, token=None)
    call("POST", B, "/v1/sales/one/orders", 410, {"user_id": "u2"}, token=None)
    call("POST", B, "/v1/sales/s1/orders", 413, token=None, raw='{"user_id":"%s"}' % ("x" * 5000),
         headers={"Content-Type": "application/json"})
    call("POST", B, "/v1/sales/s1/orders", 501, token=None, raw='{"user_id":"u1"}',
         headers={"Content-Type": "application/json", "Transfer-Encoding": "gzip"})
    call("POST", B, "/v1/sales/s1/orders", 415, token=None, raw='{"user_id":"u1"}',
         headers={"Content-Type": "text/plain"})
    call("POST", B, "/v1/sales/later/orders", 425, {"user_id": "u1"}, token=None)
    call("PUT", S, "/admin/v1/sales/room", 201, {"stock": 5, "waiting_room_rate": 100})
    call("POST", B, "/v1/sales/room/orders", 403, {"user_id": "u1"}, token=None)
    Q = "/v1/sales/{sale_id}/queue"
    call("GET", Q, "/v1/sales/room/queue", 200, token=None)
    call("GET", Q, "/v1/sales/room/queue?user_id=u1", 200, token=None)
    call("GET", Q, "/v1/sales/room/queue?user_id=bad%21", 400, token=None)
    call("GET", Q, "/v1/sales/s1/queue", 404, token=None)
    # a ticket whose place is gone (its sale deleted and created again): 409 place_gone
    call("PUT", S, "/admin/v1/sales/gone", 201, {"stock": 1, "waiting_room_rate": 100})
    gone_ticket = call("GET", Q, "/v1/sales/gone/queue?user_id=u1", 200, token=None).json["ticket"]
    call("PUT", S, "/admin/v1/sales/gone", 200, {"stock": 1, "waiting_room_rate": 100,
                                                 "ends_at": "2020-01-02T00:00:00Z"})
    call("GET", Q, "/v1/sales/gone/queue?user_id=u1", 410, token=None)  # ended: no place
    call("DELETE", S, "/admin/v1/sales/gone", 200)
    call("PUT", S, "/admin/v1/sales/gone", 201, {"stock": 1, "waiting_room_rate": 100})
    call("GET", Q, "/v1/sales/gone/queue?user_id=u1&ticket=" + gone_ticket, 409, token=None)
    # A join goes through the buy's limiters (docs/api.md): the sale's rule, one join per user.
    RU = "/admin/v1/rules/{sale_id}"
    call("PUT", RU, "/admin/v1/rules/room", 201, {"user_rps": 0.001, "user_burst": 1})
    call("GET", Q, "/v1/sales/room/queue?user_id=rl", 200, token=None)
    r = call("GET", Q, "/v1/sales/room/queue?user_id=rl", 429, token=None)
    check("retry-after" in r.headers and r.json.get("scope") == "user", "a join's 429: %r" % r.json)
    call("DELETE", RU, "/admin/v1/rules/room", 200)
    # The sealed pre-queue's export (docs/api.md): "room" started at its first join.
    RP = "/admin/v1/sales/{sale_id}/room/persons"
    call("GET", RP, "/admin/v1/sales/room/room/persons?limit=10", 200)
    call("GET", RP, "/admin/v1/sales/room/room/persons?limit=0", 400)
    call("GET", RP, "/admin/v1/sales/s1/room/persons", 404)
    call("PUT", S, "/admin/v1/sales/pq19", 201, {"stock": 1, "starts_at": "2099-01-01T00:00:00Z",
                                                 "waiting_room_rate": 10})
    call("GET", RP, "/admin/v1/sales/pq19/room/persons", 409)
    # Registration (docs/api.md): open now until the lottery's window far ahead; one closed.
    RG, RX = "/v1/sales/{sale_id}/registrations", "/admin/v1/sales/{sale_id}/registrations"
    now_ms = int(time.time() * 1000)
    call("PUT", S, "/admin/v1/sales/reg", 201, {"stock": 1, "starts_at": "2099-01-01T00:00:00Z",
                                                "fair_window_ms": 1000,
                                                "registration_opens_at": now_ms - 1000,
                                                "registration_closes_at": "2098-01-01T00:00:00Z"})
    call("PUT", S, "/admin/v1/sales/regx", 201, {"stock": 1, "starts_at": "2099-01-01T00:00:00Z",
                                                 "fair_window_ms": 1000,
                                                 "registration_opens_at": "2097-01-01T00:00:00Z",
                                                 "registration_closes_at": "2098-01-01T00:00:00Z"})
    call("POST", RG, "/v1/sales/reg/registrations?user_id=r1", 201, token=None)
    call("POST", RG, "/v1/sales/reg/registrations?user_id=r1", 200, token=None)
    call("POST", RG, "/v1/sales/reg/registrations?user_id=bad%21", 400, token=None)
    call("POST", RG, "/v1/sales/regx/registrations?user_id=r1", 403, token=None)
    call("POST", RG, "/v1/sales/s1/registrations?user_id=r1", 404, token=None)
    call("PUT", RU, "/admin/v1/rules/reg", 201, {"user_rps": 0.001, "user_burst": 1})
    call("POST", RG, "/v1/sales/reg/registrations?user_id=rl", 201, token=None)
    call("POST", RG, "/v1/sales/reg/registrations?user_id=rl", 429, token=None)
    call("DELETE", RU, "/admin/v1/rules/reg", 200)
    r = call("GET", RX, "/admin/v1/sales/reg/registrations?limit=1", 200)
    eq((r.json["count"], r.json["persons"], r.json["next_cursor"]), (2, ["r1"], "1"), "page 1")
    call("GET", RX, "/admin/v1/sales/reg/registrations?limit=0", 400)
    call("GET", RX, "/admin/v1/sales/s1/registrations", 404)
    call("PUT", RU, "/admin/v1/rules/s1", 201, {"user_rps": 0.001, "user_burst": 1})
    call("PUT", RU, "/admin/v1/rules/s1", 200, {"user_rps": 0.001, "user_burst": 1})
    call("PUT", RU, "/admin/v1/rules/s1", 400, {"user_rps": "x"})
    call("POST", B, "/v1/sales/s1/orders", 202, {"user_id": "rl"}, token=None)
    r = call("POST", B, "/v1/sales/s1/orders", 429, {"user_id": "rl"}, token=None)
    check("retry-after" in r.headers and "ratelimit-policy" in r.headers, "429 headers")
    O = "/v1/orders/{order_id}"
    call("GET", O, loc, 200, token=None)
    call("GET", O, "/v1/orders/0AAAAAAAAAAAA", 404, token=None)
    # A start-window lottery's entries read on the order route too: 200 "entered" before
    # the draw (entered_at and draw_at: no order, so no accepted_at yet), then the loser's
    # 410 sold_out with its draw position, the winner's order.
    starts = int(time.time()) + 2
    call("PUT", S, "/admin/v1/sales/lot", 201, {"stock": 1, "per_user_limit": 1,
                                                "starts_at": rfc3339(starts),
                                                "fair_window_ms": 500, "fair_early_ms": 3000})
    locs = {}
    for u in ("la", "lb"):
        r = call("POST", B, "/v1/sales/lot/orders", 202, {"user_id": u}, token=None)
        eq(r.json["status"], "entered", "a lottery entry")
        locs[r.json["order_id"]] = r.headers["location"]
    r = call("GET", O, locs[min(locs)], 200, token=None)
    eq(r.json["status"], "entered", "an entry before the draw")
    deadline = time.time() + 20
    while time.time() < deadline:
        d = request(g.admin_port, "GET", "/admin/v1/sales/lot/draw",
                    headers={"Authorization": "Bearer " + g.token}).json
        if d["state"] == "drawn":
            break
        time.sleep(0.05)
    eq(d["state"], "drawn", "the lottery drew")
    for e in d["entries"]:
        r = call("GET", O, locs[e["order_id"]], 200 if e["outcome"] == "won" else 410, token=None)
        if r.status == 410:
            eq((r.json["error"], r.json["draw_position"]), ("sold_out", e["position"]),
               "the loser reads sold_out with its position")
    SP = "/v1/sales/{sale_id}"
    call("GET", SP, "/v1/sales/s1", 200, token=None)
    call("GET", SP, "/v1/sales/bad%21", 400, token=None)
    call("GET", SP, "/v1/sales/nosale", 404, token=None)
    call("GET", "/healthz", "/healthz", 200, token=None)
    call("GET", "/readyz", "/readyz", 200, token=None)
    # The HTTP/1.1 layer answers before any route: a request line over the 8 KiB read buffer
    # is 414, request line and headers over it 431, on every public route alike.
    for m, tpl, path, body in (("POST", B, "/v1/sales/s1/orders", {"user_id": "u1"}),
                               ("GET", O, "/v1/orders/0AAAAAAAAAAAA", None),
                               ("GET", SP, "/v1/sales/s1", None),
                               ("GET", Q, "/v1/sales/room/queue", None),
                               ("POST", RG, "/v1/sales/reg/registrations", None)):
        call(m, tpl, path + "?pad=" + "p" * 9000, 414, body, token=None)
        call(m, tpl, path, 431, body, token=None, headers={"X-Pad": "p" * 9000})

    # rules, stats, audit, rollback, degrade, config, whoami, metrics, dashboard
    for i in range(63):
        request(g.admin_port, "PUT", "/admin/v1/rules/r%d" % i, body=json.dumps({"sale_rps": 1}),
                headers={"Authorization": "Bearer " + g.token, "Content-Type": "application/json"})
    call("PUT", RU, "/admin/v1/rules/r99", 409, {"sale_rps": 1})
    call("GET", "/admin/v1/rules", "/admin/v1/rules", 200)
    call("DELETE", RU, "/admin/v1/rules/r0", 200)
    call("DELETE", RU, "/admin/v1/rules/r0", 404)
    call("GET", "/admin/v1/stats", "/admin/v1/stats", 200)
    call("GET", "/admin/v1/audit", "/admin/v1/audit?since=1&limit=5", 200)
    call("GET", "/admin/v1/audit", "/admin/v1/audit?since=-1", 400)
    call("GET", "/admin/v1/history", "/admin/v1/history", 200)
    call("GET", "/admin/v1/history", "/admin/v1/history?since=x", 400)
    call("GET", "/admin/v1/fleet", "/admin/v1/fleet", 200)
    RB = "/admin/v1/config/rollback"
    entries = g.admin("GET", "/admin/v1/audit?limit=10000").json["entries"]
    start = [e["version"] for e in entries if e["what"] == "start"]
    eq(start, [3], "the start line continues after the log's versions 1 and 2")
    call("POST", RB, RB, 200, {"version": 3})
    call("POST", RB, RB, 400, {"version": "1"})
    call("POST", RB, RB, 404, {"version": 10 ** 9})
    # a set this build cannot use: 409, and nothing changes
    before = [g.admin("GET", u).json for u in ("/admin/v1/limits", "/admin/v1/rules",
                                               "/admin/v1/audit?since=0&limit=1")]
    r = call("POST", RB, RB, 409, {"version": 1})
    check("version 1 holds no usable limits" in r.json.get("message", ""),
          "409 says why: %r" % r.json)
    r = call("POST", RB, RB, 409, {"version": 2})
    check("version 2 holds an unusable rule" in r.json.get("message", ""),
          "409 says why: %r" % r.json)
    after = [g.admin("GET", u).json for u in ("/admin/v1/limits", "/admin/v1/rules",
                                              "/admin/v1/audit?since=0&limit=1")]
    for b, a in zip(before, after):  # the rules' counters do not move: no buys meanwhile
        eq(a, b, "a rollback refused 409 changes nothing")
    D = "/admin/v1/degrade"
    call("PUT", D, D, 200, {"level": 1})
    call("PUT", D, D, 400, {"level": 7})
    call("GET", D, D, 200)
    call("PUT", D, D, 200, {"level": "auto"})
    RT = "/admin/v1/routes"
    call("GET", RT, RT, 200)
    call("PATCH", RT, RT, 200, {"prefix": "/v1/recs/", "latency_target_ms": None})
    call("PATCH", RT, RT, 200, {"prefix": "/v1/recs/", "latency_target_ms": 50})
    call("PATCH", RT, RT, 400, {"prefix": "/v1/recs/", "latency_target_ms": 301})
    call("PATCH", RT, RT, 404, {"prefix": "/v1/nope/", "latency_target_ms": 50})
    call("GET", "/admin/v1/config", "/admin/v1/config", 200)
    call("GET", "/admin/v1/whoami", "/admin/v1/whoami", 200, token=READ)
    call("GET", "/metrics", "/metrics", 200, token=READ)
    call("GET", "/admin/", "/admin/", 200, token=None)
    call("GET", "/admin/assets/{file}", "/admin/assets/app.js", 200, token=None)
    call("GET", "/admin/assets/{file}", "/admin/assets/uPlot.min.css", 200, token=None)
    call("GET", "/admin/assets/{file}", "/admin/assets/uPlot.LICENSE", 200, token=None)
    call("GET", "/admin/assets/{file}", "/admin/assets/nope", 404, token=None)
    BR = "/admin/v1/debug/broker"
    call("PUT", BR, BR, 400, {"down": "yes"})
    if no_kafka:
        call("PUT", BR, BR, 409, {"down": True})
    else:
        call("PUT", BR, BR, 200, {"down": False})
    CK = "/admin/v1/debug/clock"
    call("PUT", CK, CK, 400, {"wall_offset_ms": "x"})
    call("PUT", CK, CK, 200, {"wall_offset_ms": 0})
    OV = "/admin/v1/debug/overload"
    call("PUT", OV, OV, 400, {"user_cut": 129})
    call("PUT", OV, OV, 200, {"user_cut": -1})
    ST = "/admin/v1/debug/stall"
    call("PUT", ST, ST, 400, {"worker": 99, "ms": 1})
    call("PUT", ST, ST, 200, {"worker": 0, "ms": 1})
    C = "/admin/v1/orders/{order_id}/cancel"
    call("POST", C, "/admin/v1/orders/%s/cancel" % order_id, 400, raw="{nope",
         headers={"Content-Type": "application/json"})
    call("POST", C, "/admin/v1/orders/%s/cancel" % order_id, 202, {"reason": "test"})
    call("POST", C, "/admin/v1/orders/0AAAAAAAAAAAA/cancel", 404, {})
    if no_kafka:  # without Kafka a cancel completes at once: the second is already final
        call("POST", C, "/admin/v1/orders/%s/cancel" % order_id, 200, {})

    # Every route that takes a body: over 64 KiB is 413 (payload_too_large), and nothing
    # changes (no new version, the sales, limits, rules and level as they were).
    big = json.dumps({"pad": "x" * (64 * 1024)})
    state = ("/admin/v1/audit?since=0&limit=1", "/admin/v1/sales", "/admin/v1/limits",
             "/admin/v1/rules", "/admin/v1/degrade", "/admin/v1/routes")

    def snapshot(u):
        j = g.admin("GET", u).json
        # the level's `reason` is the controller's live reading, not state a PUT sets
        return {k: j[k] for k in ("level", "mode")} if u == "/admin/v1/degrade" else j
    before = [snapshot(u) for u in state]
    for m, tpl, path in (("PUT", S, "/admin/v1/sales/s1"),
                         ("POST", R, "/admin/v1/sales/s1/restock"),
                         ("PATCH", "/admin/v1/limits", "/admin/v1/limits"),
                         ("PUT", RU, "/admin/v1/rules/s1"),
                         ("PUT", D, D),
                         ("PATCH", RT, RT),
                         ("POST", RB, RB),
                         ("PUT", BR, BR),
                         ("PUT", CK, CK),
                         ("PUT", OV, OV),
                         ("PUT", ST, ST),
                         ("POST", C, "/admin/v1/orders/%s/cancel" % order_id)):
        r = call(m, tpl, path, 413, raw=big, headers={"Content-Type": "application/json"})
        eq(r.json and r.json.get("error"), "payload_too_large", "%s %s: 413's code" % (m, path))
    after = [snapshot(u) for u in state]
    for u, b, a in zip(state, before, after):
        eq(a, b, "bodies over 64 KiB changed nothing: %s" % u)

    # Documented answers that need a broken or stopping server, and where they are tested.
    elsewhere = {
        ("POST", B, "503"): "overload or a full spool: 38-spool-full, bench/overload.py",
        ("GET", "/readyz", "503"): "while starting or draining: 10-http-api (drain)",
        ("GET", "/healthz", "503"): "a worker's loop stuck (admin listener): 114-liveness",
        ("PUT", ST, "409"): "while the workers are not serving (starting, draining)",
        ("PUT", BR, "409"): "only without an embedded broker (the TSan stage's gateways)",
        ("PUT", BR, "200"): "only with an embedded broker",
        ("POST", C, "200"): "an already final order: 33-compensation",
        ("PUT", S, "409"): "a memory sale deleted with orders held, after its end: 11-admin",
        ("GET", "/admin/v1/audit", "500"): "the audit log's disk fails: 27-audit-read-error",
        ("POST", RB, "500"): "the audit log's disk fails: 27-audit-read-error",
        ("PATCH", "/admin/v1/limits", "409"): "fleet mode, over a version not yet read: "
                                              "59-fleet-config-cas",
    }
    elsewhere[("POST", RG, "401")] = "identity.mode=jwt (this gateway: none): 100-registration"
    elsewhere[("POST", RG, "409")] = "sales.max_registrations reached: 100-registration"
    elsewhere[("POST", RG, "503")] = "the registration log's write fails or the fleet's Redis is down"
    elsewhere[("GET", RX, "503")] = "the fleet's Redis is down"
    elsewhere[("GET", RP, "503")] = "the fleet's Redis is down: 103-room-fleet"
    for tpl, m in ((B, "POST"), (O, "GET"), (SP, "GET"), (Q, "GET")):
        elsewhere[(m, tpl, "505")] = "an HTTP/2 request line, raw socket: 14-http1"
    elsewhere[("GET", O, "400")] = "bad framing (e.g. two Content-Lengths), raw socket: 14-http1"
    elsewhere[("POST", B, "401")] = "identity.mode=jwt or header (this gateway: none): 39-identity"
    elsewhere[("GET", Q, "401")] = "identity.mode=jwt or header: 43-identity-bind"
    elsewhere[("GET", Q, "403")] = "identity.mode=jwt or header: 43-identity-bind"
    elsewhere[("GET", Q, "503")] = ("no_keys: jwt mode without a key set, which start refuses "
                                    "to begin in; unit.identity test_id_fetch/test_id_cache")
    for (m, tpl), op in sorted(documented.items()):
        for st in op["responses"]:
            if (m, tpl, st) not in covered and (m, tpl, st) not in elsewhere:
                check(False, "documented %s %s -> %s was not exercised" % (m, tpl, st))
finally:
    g.cleanup()
finish()
