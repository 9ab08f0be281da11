"""Admin API: nobody gets in without the token; a generated token lands in
<data-dir>/admin.token with mode 0600 and is never logged; sales and limits
are validated and refused requests change nothing."""
import os
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")

g = Gateway(token=None).start()
try:
    path = os.path.join(g.data_dir, "admin.token")
    check(os.path.exists(path), "admin.token generated")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    eq(mode, 0o600, "admin.token mode")
    tok = open(path).read().strip()
    check(len(tok) >= 32, "token is long")
    check(tok not in g.logs(), "token never logged")
    check(path in g.logs(), "token path logged")

    paths = [("GET", "/admin/v1/sales/s1"), ("PUT", "/admin/v1/sales/s1"),
             ("GET", "/admin/v1/limits"), ("PATCH", "/admin/v1/limits"),
             ("GET", "/admin/v1/stats"), ("POST", "/admin/v1/sales/s1/restock"),
             ("GET", "/admin/v1/config"), ("GET", "/admin/v1/nope")]
    for method, p in paths:
        for hdr in (None, "Bearer wrong", "Bearer " + tok[:-1], "Bearer " + tok + "x",
                    "Basic " + tok, tok, "Bearer ", "bearer"):
            h = {"Authorization": hdr} if hdr is not None else {}
            r = request(g.admin_port, method, p, body='{"stock":5}', headers=h)
            if r.status != 401:
                check(False, "%s %s with %r: %d" % (method, p, hdr, r.status))
                break
        else:
            check(True, "401s")
    r = request(g.admin_port, "GET", "/admin/v1/limits")
    eq(r.json["error"], "unauthorized", "401 body")
    check("bearer" in r.headers.get("www-authenticate", "").lower(), "WWW-Authenticate")
    eq(g.admin("GET", "/admin/v1/sales/s1", token=tok).status, 404, "refused PUT created nothing")
    eq(g.admin("GET", "/admin/v1/limits", token=tok).status, 200, "right token works")
finally:
    g.stop()

# restart with the same data dir reuses the token
g2 = Gateway(token=None, data_dir=g.data_dir).start()
try:
    eq(g2.admin("GET", "/admin/v1/limits", token=tok).status, 200, "token reused across restart")
finally:
    g2.cleanup()
g.cleanup()

g = Gateway().start()
try:
    A = g.admin
    r = A("PUT", "/admin/v1/sales/s1", body={"stock": 10, "per_user_limit": 2})
    eq(r.status, 201, "create sale")
    r = A("PUT", "/admin/v1/sales/s1", body={"stock": 12, "per_user_limit": 2})
    eq((r.status, r.json["stock_total"], r.json["stock_left"]), (200, 12, 12), "update sale")
    bad = [
        {"per_user_limit": 1},
        {"stock": -1},
        {"stock": "10"},
        {"stock": 10, "per_user_limit": 0},
        {"stock": 10, "starts_at": "tomorrow"},
        {"stock": 10, "starts_at": "2026-13-01T00:00:00Z"},
        {"stock": 10, "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"},
        {"stock": 10, "colour": "red"},
    ]
    for b in bad:
        r = A("PUT", "/admin/v1/sales/s1", body=b)
        check(r.status == 400 and r.json["error"] == "bad_request" and r.json["message"],
              "PUT %r refused: %r" % (b, r))
    r = A("PUT", "/admin/v1/sales/s1", body="{nope")
    eq(r.status, 400, "malformed PUT")
    r = A("GET", "/admin/v1/sales/s1")
    eq((r.json["stock_total"], r.json["per_user_limit"], r.json["version"]), (12, 2, 2),
       "refused PUTs changed nothing")
    # below accepted units
    for u in ("a", "b", "c"):
        eq(g.buy("s1", u).status, 202, "buy " + u)
    r = A("PUT", "/admin/v1/sales/s1", body={"stock": 2})
    eq(r.status, 400, "stock below accepted refused")
    # restock
    r = A("POST", "/admin/v1/sales/s1/restock", body={"add": 5})
    eq((r.status, r.json["stock_total"], r.json["stock_left"]), (200, 17, 14), "restock")
    for b in ({"add": 0}, {"add": -2}, {"add": "1"}, {}, {"add": 1, "x": 1}):
        eq(A("POST", "/admin/v1/sales/s1/restock", body=b).status, 400, "restock %r refused" % b)
    eq(A("POST", "/admin/v1/sales/none/restock", body={"add": 1}).status, 404, "restock unknown")
    # a keyed restock is idempotent: the retry answers the same and adds nothing
    r = A("POST", "/admin/v1/sales/s1/restock", body={"add": 3}, headers={"Idempotency-Key": "rs-1"})
    eq((r.status, r.json["stock_total"]), (200, 20), "keyed restock")
    r = A("POST", "/admin/v1/sales/s1/restock", body={"add": 3}, headers={"Idempotency-Key": "rs-1"})
    eq((r.status, r.json["stock_total"], r.headers.get("idempotent-replayed")), (200, 20, "true"),
       "keyed restock retried: nothing added")
    r = A("POST", "/admin/v1/sales/s1/restock", body={"add": 3}, headers={"Idempotency-Key": "bad key"})
    eq(r.status, 400, "bad restock key")
    A("PUT", "/admin/v1/sales/s1", body={"stock": 17, "per_user_limit": 2})
    eq(A("GET", "/admin/v1/sales/s1").json["stock_total"], 17, "refused restocks changed nothing")
    # sold out then restock clears the flag
    A("PUT", "/admin/v1/sales/t", body={"stock": 1})
    eq(g.buy("t", "x").status, 202, "last unit")
    eq(g.buy("t", "y").status, 410, "sold out")
    A("POST", "/admin/v1/sales/t/restock", body={"add": 1})
    eq(g.buy("t", "y").status, 202, "restock clears sold out")
    # listing, stats, config, methods
    r = A("GET", "/admin/v1/sales")
    eq(sorted(s["sale_id"] for s in r.json["sales"]), ["s1", "t"], "list sales")
    r = A("GET", "/admin/v1/stats")
    check(r.status == 200 and r.json["accepted_units"] >= 5, "stats: %r" % r.json)
    r = A("GET", "/admin/v1/config")
    eq(r.json["server.admin_token"]["value"], "<set>", "config hides the token")
    eq(r.json["server.admin_token"]["source"], "flag", "config shows sources")
    eq(A("DELETE", "/admin/v1/limits").status, 405, "405")
    eq(A("GET", "/admin/v1/nope").status, 404, "404")
    eq(A("PUT", "/admin/v1/sales/bad%20id", body={"stock": 1}).status, 400, "bad sale id")

    # DELETE: ended sales only; live, upcoming and open-ended ones are refused (409)
    A("PUT", "/admin/v1/sales/old", body={"stock": 3, "starts_at": "2020-01-01T00:00:00Z",
                                          "ends_at": "2021-01-01T00:00:00Z"})
    A("PUT", "/admin/v1/sales/soon", body={"stock": 3, "starts_at": "2099-01-01T00:00:00Z",
                                           "ends_at": "2099-02-01T00:00:00Z"})
    A("PUT", "/admin/v1/sales/open", body={"stock": 3, "ends_at": "2099-02-01T00:00:00Z"})
    for sale, word in (("s1", "no end"), ("soon", "upcoming"), ("open", "live")):
        r = A("DELETE", "/admin/v1/sales/" + sale)
        eq((r.status, (r.json or {}).get("error")), (409, "conflict"), "DELETE %s refused" % sale)
        check(word in (r.json or {}).get("message", ""), "the 409 says %r: %r" % (word, r.json))
        eq(A("GET", "/admin/v1/sales/" + sale).status, 200, "refused DELETE kept %s" % sale)
    eq(g.buy("old", "z").status, 410, "an ended sale refuses buys")
    r = A("DELETE", "/admin/v1/sales/old")
    eq((r.status, r.json), (200, {"deleted": True}), "DELETE of an ended sale")
    eq(A("GET", "/admin/v1/sales/old").status, 404, "deleted sale is gone")
    eq(g.get("/v1/sales/old").status, 404, "and gone from the public API")
    eq(A("DELETE", "/admin/v1/sales/old").status, 404, "a second DELETE: 404")
    # A sale deleted with orders held: the spool replays them at every start
    # into the sale of their id, so the memory inventory keeps the id unused.
    ends = int(time.time()) + 2
    end_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ends))
    A("PUT", "/admin/v1/sales/sold", body={"stock": 5, "per_user_limit": 5, "ends_at": end_at})
    eq(g.buy("sold", "u1", qty=3).status, 202, "a buy before the end")
    time.sleep(max(0.0, ends - time.time()) + 0.2)
    eq(A("DELETE", "/admin/v1/sales/sold").status, 200, "DELETE of an ended sale with orders")
    r = A("PUT", "/admin/v1/sales/sold", body={"stock": 5, "per_user_limit": 5})
    eq((r.status, (r.json or {}).get("error")), (409, "conflict"),
       "the id of a sale deleted with orders is not defined again")
    eq(A("GET", "/admin/v1/sales/sold").status, 404, "the refused PUT created nothing")
    eq(A("DELETE", "/admin/v1/sales/bad%20id").status, 400, "DELETE of a bad id: 400")
    check("old" not in [s["sale_id"] for s in A("GET", "/admin/v1/sales").json["sales"]],
          "not listed")
    audit = A("GET", "/admin/v1/audit").json
    check("sale.delete" in str(audit), "the delete is audited")
    g.stop()
    # persisted: a restart on the same data dir does not bring it back
    g2 = Gateway(data_dir=g.data_dir).start()
    try:
        eq(g2.admin("GET", "/admin/v1/sales/old").status, 404, "still gone after a restart")
        eq(g2.admin("GET", "/admin/v1/sales/soon").status, 200, "the others are kept")
        eq(g2.admin("PUT", "/admin/v1/sales/old", body={"stock": 1}).status, 201,
           "the id can be used again")
        eq(g2.admin("PUT", "/admin/v1/sales/sold", body={"stock": 5}).status, 409,
           "not the id of a sale deleted with orders, after a restart too")
    finally:
        g2.cleanup()
finally:
    g.cleanup()

# The admin listener refuses a non-loopback address without a token an operator chose
# (a generated one is only for loopback), and starts with one.
g = Gateway(token=None)
try:
    g.args += ["--admin-listen", "0.0.0.0:%d" % g.admin_port]
    g.start(wait=False)
    rc = g.proc.wait(20)
    check(rc != 0, "flashgate refuses to start: admin on 0.0.0.0 without a token (rc %s)" % rc)
    check("not on loopback" in g.logs() and "server.admin_token" in g.logs(),
          "and says why: %s" % g.logs()[-300:])
finally:
    g.cleanup()
g = Gateway("--admin-listen", "0.0.0.0:0")
try:
    g.start(wait=True)
    check(g.alive(), "with --admin-token it starts on 0.0.0.0")
finally:
    g.cleanup()
finish()
