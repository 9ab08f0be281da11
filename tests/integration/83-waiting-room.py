"""Waiting room on one gateway: a sale with waiting_room_rate
refuses a buy without an admission token (403 admission_required, nothing
taken); GET /v1/sales/{id}/queue?user_id= hands out positions in arrival
order with a signed ticket (the same position when the ticket comes back, a
forged one refused), admission tokens for positions the front has passed, at
about the configured rate; the token buys for its user only, not tampered, once (a second buy with it is
403 admission_spent), and the cacheable queue page says how far admission got. The front follows the
overload controller: a pinned level 3 stops it."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary, request  # noqa: E402

need_binary("flashgate")

g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set", "limits.subnet_rps=0", "--kafka-brokers", "none")
try:
    g.start()
    r = g.admin("PUT", "/admin/v1/sales/wr", body={"stock": 100, "waiting_room_rate": -1})
    eq(r.status, 400, "a negative rate is refused")
    # level 0 pinned: the front moves at the configured rate, whatever the
    # controller would make of a loaded test machine (level 3 is tried below)
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 0}).status, 200, "level 0 pinned")
    t_created = time.monotonic()
    r = g.admin("PUT", "/admin/v1/sales/wr", body={"stock": 100, "waiting_room_rate": 10})
    t_in = time.monotonic()
    eq((r.status, r.json.get("waiting_room_rate")), (201, 10), "sale with a waiting room")
    eq(g.get("/v1/sales/wr/queue?user_id=bad%20id").status, 400, "bad user id")
    eq(g.get("/v1/sales/wr/queue?user_id=u1%00x").status, 400,
       "a user id with %00 is refused, not read as the part before it")
    eq(g.get("/v1/sales/nope/queue").status, 404, "unknown sale")

    r = g.buy("wr", "alice")
    eq((r.status, r.json["error"]), (403, "admission_required"), "no token, no buy")
    eq(g.admin("GET", "/admin/v1/sales/wr").json["stock_left"], 100, "a refusal takes nothing")

    q = {}
    for i in range(40):
        u = "u%02d" % i
        r = g.get("/v1/sales/wr/queue?user_id=" + u)
        eq(r.status, 200, "join %s" % u)
        eq(r.headers.get("cache-control"), "no-store", "a personal answer is not cached")
        q[u] = r.json
    eq(sorted(x["position"] for x in q.values()), list(range(1, 41)), "positions in arrival order")
    r = g.get("/v1/sales/wr/queue?user_id=u05")
    eq((r.status, r.json["position"]), (200, q["u05"]["position"]),
       "a user who joins again gets the place they hold, not a new one at the back")
    r = request(g.port, "HEAD", "/v1/sales/wr/queue?user_id=u40")
    eq(r.status, 200, "HEAD of a join")
    eq(g.get("/v1/sales/wr/queue").json["queued"], 40, "HEAD and a second join take no place")
    again = g.get("/v1/sales/wr/queue?user_id=u05&ticket=" + q["u05"]["ticket"]).json
    eq(again["position"], q["u05"]["position"], "the ticket keeps the place")
    pos, mac = q["u05"]["ticket"].split(".")
    r = g.get("/v1/sales/wr/queue?user_id=u05&ticket=1." + mac)
    eq(r.status, 400, "a ticket with another position is refused")
    r = g.get("/v1/sales/wr/queue?user_id=u06&ticket=" + q["u05"]["ticket"])
    eq(r.status, 400, "another user's ticket is refused")
    # The position as given out, and no other spelling of it (the MAC is over the number).
    for spelling in ("+" + pos, "0" + pos, "%20" + pos, "%2B" + pos, pos + "%20"):
        r = g.get("/v1/sales/wr/queue?user_id=u05&ticket=%s.%s" % (spelling, mac))
        eq(r.status, 400, "a ticket's position spelled %r is refused" % spelling)

    # admission advances at 10 per second from the sale's creation. Bounded by
    # the time the test saw pass, not by a fixed guess, so a slow machine
    # cannot fail it: at most 10/s over all of it (+1: the first tick), at
    # least 10/s over what surely passed, less 1 s for the fair tick's period
    # and its lateness on a loaded machine.
    time.sleep(1.5)
    t_ask = time.monotonic()
    page = g.get("/v1/sales/wr/queue")
    t_out = time.monotonic()
    eq(page.headers.get("cache-control"), "public, max-age=1", "the queue page is cacheable")
    front = page.json["admitting_through"]
    lo, hi = int(10 * (t_ask - t_in - 1.0)), int(10 * (t_out - t_created)) + 1
    check(max(lo, 1) <= front <= hi,
          "10 admissions per second: %d after %.2f-%.2f s (want %d..%d)"
          % (front, t_ask - t_in, t_out - t_created, max(lo, 1), hi))
    first = g.get("/v1/sales/wr/queue?user_id=u00&ticket=" + q["u00"]["ticket"]).json
    last = g.get("/v1/sales/wr/queue?user_id=u39&ticket=" + q["u39"]["ticket"]).json
    check("admission_token" in first, "position 1 is admitted: %r" % first)
    check("admission_token" not in last and last.get("eta_s", 0) > 0,
          "position 40 waits with an ETA: %r" % last)
    tok = first["admission_token"]
    r = g.buy("wr", "u01", headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("error")), (403, "admission_required"), "a token buys for its user only")
    exp, jti, mac = tok.split(".")
    eq(len(jti), 16, "the token carries a 16-hex-digit replay id: %r" % tok)
    r = g.buy("wr", "u00", headers={"X-Admission-Token": "%d.%s.%s" % (int(exp) + 100, jti, mac)})
    eq(r.status, 403, "a token with a moved expiry is refused")
    other = "%016x" % (int(jti, 16) ^ 1)
    r = g.buy("wr", "u00", headers={"X-Admission-Token": "%s.%s.%s" % (exp, other, mac)})
    eq((r.status, r.json.get("reason")), (403, "not_this_buyer"), "a token with another jti is refused")
    for spelling in ("+" + exp, "0" + exp):
        r = g.buy("wr", "u00", headers={"X-Admission-Token": "%s.%s.%s" % (spelling, jti, mac)})
        eq((r.status, r.json["error"]), (403, "admission_required"),
           "an admission token's expiry spelled %r is refused" % spelling)
    again = g.get("/v1/sales/wr/queue?user_id=u00").json
    eq(again.get("admission_token"), tok, "asking again gives the same token (one per place)")
    r = g.buy("wr", "u00", headers={"X-Admission-Token": tok})
    eq((r.status, r.json["status"]), (202, "queued"), "the admitted user buys")
    r = g.buy("wr", "u00", headers={"X-Admission-Token": tok})
    eq((r.status, r.json.get("reason")), (403, "admission_spent"),
       "the token is spent by the order it admitted")

    # overload level 3 (pinned): admissions stop
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": 3}).status, 200, "level 3 pinned")
    time.sleep(0.3)
    f1 = g.get("/v1/sales/wr/queue").json
    time.sleep(1.0)
    f2 = g.get("/v1/sales/wr/queue").json
    eq((f2["admitting_through"], f2["rate_per_s"]), (f1["admitting_through"], 0),
       "no admissions at level 3")
    eq(g.admin("PUT", "/admin/v1/degrade", body={"level": "auto"}).status, 200, "level auto")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()

# A join takes a place every later buyer waits behind: it goes through the
# buy's limiters (here per IP: burst 10), and a refusal takes no place.
g = Gateway("--set", "limits.user_rps=0", "--set", "limits.ip_rps=1", "--set",
            "limits.ip_burst=10", "--kafka-brokers", "none")
try:
    g.start()
    r = g.admin("PUT", "/admin/v1/sales/wr", body={"stock": 100, "waiting_room_rate": 1})
    eq(r.status, 201, "sale with a waiting room")
    codes = [g.get("/v1/sales/wr/queue?user_id=bot%d" % i).status for i in range(30)]
    check(codes.count(200) <= 12 and codes.count(429) >= 18,
          "joins are rate-limited per IP: %r" % codes)
    queued = g.get("/v1/sales/wr/queue").json["queued"]
    eq(queued, codes.count(200), "a refused join takes no place")
except Exception:
    print(g.logs())
    raise
finally:
    g.cleanup()
finish()
