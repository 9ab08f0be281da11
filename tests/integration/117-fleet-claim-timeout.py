"""An admission token's claim in a fleet room that times out, with an
Idempotency-Key (gateway/buy/gw_room.c gw_fair_admission_claim,
gateway/buy/gw_fair_redis.c LUA_ROOM_CLAIM): a token admits at most one
order, and a claim that timed out is given back.

One gateway on a redis:// inventory (a fleet of one: the room is Redis'),
inventory.redis_timeout=300ms, a sale with a waiting room. Redis is held by
DEBUG SLEEP while a keyed buy claims its token: the claim times out (503) and
Redis runs it when it wakes.

- B (first below): the keyed buy that timed out is retried with its key once
  Redis is back: the retry passes the claim (the key's own) and gets its
  order (202). The first claim's give-back then leaves the token held by the
  retry: a buy with the token and another key stays 403 admission_spent, and
  the sale holds one order for the token.
- A: the keyed buy that timed out is never retried. Its claim is given back
  (the lottery thread's give-back of a claim sent and not answered): a buy
  with the token and another key is 202 within a few seconds (before, the
  token read admission_spent until it expired).
Bounded: ~20 requests, two 1.2 s sleeps (~10 s)."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import check, eq, finish, need_binary  # noqa: E402
from fleet import NO_LIMITS, Redis, need_redis, start_fleet, wait_for  # noqa: E402

need_binary("flashgate")
need_redis()


def admitted_token(g, user):
    deadline = time.time() + 10
    while time.time() < deadline:
        tok = g.get("/v1/sales/wr/queue?user_id=" + user).json.get("admission_token")
        if tok:
            return tok
        time.sleep(0.05)
    raise AssertionError("%s was not admitted within 10 s" % user)


def buy(g, user, tok, key):
    return g.buy("wr", user, key=key, headers={"X-Admission-Token": tok})


def timed_out_claim(g, red, user, tok, key):
    """A keyed buy whose claim is sent while Redis sleeps: 503, the claim runs later."""
    sleeper = socket.create_connection(("127.0.0.1", red.port), timeout=10)
    # a join just before: the worker loops' pooled connection was used within the
    # idle PING's interval (inventory/inv_cluster.c PING_IDLE_MS, 100 ms), so the
    # claim is sent on it, not held back behind a PING that times out
    g.get("/v1/sales/wr/queue?user_id=%s-warm-%d" % (user, time.time_ns()))
    sleeper.sendall(b"DEBUG SLEEP 1.2\r\n")
    time.sleep(0.01)  # the sleep has begun
    r = buy(g, user, tok, key)
    eq(r.status, 503, "%s's keyed buy while Redis sleeps: 503 (%r)" % (user, r))
    sleeper.recv(16)  # +OK: Redis is awake and has run the claim
    sleeper.close()
    return jti_key(tok)


def jti_key(tok):
    return "{flashgate:fair:wr}:wrjti:" + tok.split(".")[1]


red = Redis(aof=False, extra=["--enable-debug-command", "local"]).start()
g = None
try:
    g = start_fleet(red, 1, threads=1,
                    extra=NO_LIMITS + ("--set", "inventory.redis_timeout=300ms"))[0]
    r = g.admin("PUT", "/admin/v1/sales/wr", body={
        "stock": 10, "per_user_limit": 5, "waiting_room_rate": 1000})
    eq(r.status, 201, "a sale with a waiting room")

    # --- B: the key's retry holds the token; the first claim's give-back leaves it held ---
    tok_b = admitted_token(g, "ub")
    timed_out_claim(g, red, "ub", tok_b, "kb-1")
    ok, secs = wait_for(lambda: buy(g, "ub", tok_b, "kb-1").status == 202, 5, step=0.2)
    check(ok, "the retry with the key gets its order once Redis is back (%.1f s)" % secs)
    oid = buy(g, "ub", tok_b, "kb-1").json.get("order_id")
    time.sleep(2.5)  # the lottery thread's give-back of the first claim has run
    for i in range(3):
        r = buy(g, "ub", tok_b, "kb-other-%d" % i)
        eq((r.status, r.json.get("reason")), (403, "admission_spent"),
           "another key with the token after the give-back: spent (%r)" % r)
        time.sleep(0.3)
    units = red.cmd("HGET", "{sale:wr}:users", "ub")
    eq(units, "1", "ub holds one unit: the token admitted one order (%s)" % oid)

    # --- A: a timed-out keyed claim, never retried, is given back ---
    tok_a = admitted_token(g, "ua")
    timed_out_claim(g, red, "ua", tok_a, "ka-1")
    ok, secs = wait_for(lambda: buy(g, "ua", tok_a, "ka-2").status == 202, 8, step=0.2)
    check(ok, "the timed-out claim is given back: the token buys with another key (%.1f s)"
          % secs)
    r = buy(g, "ua", tok_a, "ka-3")
    eq((r.status, r.json.get("reason")), (403, "admission_spent"),
       "then the token is spent by that order")

    rc, g = g.stop(), None
    eq(rc, 0, "the gateway stops cleanly")
except Exception:
    if g:
        print(g.logs())
    raise
finally:
    if g:
        g.stop()
    red.cleanup()
finish()
