/*
 * Private to inventory/: the Lua scripts of the Redis backend, as string
 * macros so that tests can load the very same text (redis-benchmark runs the
 * reserve script by its SHA1).
 *
 * Every script touches only the keys of one sale, which share the hash tag
 * {sale:ID}, so a sale lives on one Redis Cluster slot:
 *   KEYS[1] {sale:ID}:meta    hash: id total left limit starts ends version
 *   KEYS[2] {sale:ID}:users   hash: user -> units held (the user is the person: inv.h)
 *   KEYS[3] {sale:ID}:orders  hash: order -> "user qty idem"
 *   KEYS[4] {sale:ID}:idem    hash: "user\nkey" -> "order qty"; also the restock keys,
 *                              the claim marks and the lottery's marks (INV_REDIS_CLAIM,
 *                              INV_REDIS_FAIR: fields no user id can start)
 * Invariants: units = total - left = sum(users) = sum of order qty, left >= 0;
 * orders = HLEN of the orders hash. The accepted units and orders are derived
 * (INV_REDIS_LUA_STATE), not counted: the two HINCRBYs per reserve and per
 * release were 15% of redis-server's CPU per reserve, the resource that bounds
 * orders/s when Redis shares the gateway's cores (python3 bench/script_steps.py).
 * Sales written before that change keep stale `units` and `orders` fields in
 * meta, which nothing reads.
 * Numbers that Lua computes are written with string.format('%d') (Lua's own
 * number-to-string keeps only 14 digits).
 */
#ifndef INV_REDIS_LUA_H
#define INV_REDIS_LUA_H

/* The channel every admin change and every sell-out is announced on; the message is the sale id. */
#define INV_REDIS_CHANNEL "flashgate:sales"
/* A plain set of every sale id (one key outside the sale's slot, written outside the scripts). */
#define INV_REDIS_INDEX "flashgate:sale-ids"

/*
 * The claim mark of an order: the field INV_REDIS_CLAIM .. order id of the
 * idem hash (byte 2 first, which no user id can start with, as the restock
 * keys' byte 1). A gateway sets it before it spools and answers 202 for an
 * order another gateway (or an earlier life of itself) reserved: one a keyed
 * retry found. A give-back (the release of a reserve whose client was not told
 * 202: it answered after its timeout, its connection was lost, its spool write
 * failed) leaves a claimed order held, since a 202 may be out for it; an
 * operator's cancel or a settlement failure releases it all the same.
 * Without the mark, gateway A's give-back of a reserve that timed out on A
 * could undo an order that gateway B, asked again with the key, had already
 * answered 202 for: an oversell, and the user past the limit.
 * The mark goes with the order's release.
 */
#define INV_REDIS_CLAIM "\\2claim\\n"

/*
 * Reserve. ARGV: user, qty, idem key ("" = none), order id. The sale id, needed only for
 * the sell-out's PUBLISH, is cut out of KEYS[1] ("{sale:ID}:meta") instead of sent: one
 * argument less for every call, -2% of redis-server's instructions per reservation
 * (CALLGRIND=1 N=20000 ROUNDS=1 python3 bench/script_steps.py bench/lua/reserve_args.py).
 * Handing Lua the order record ready-made as an argument instead of concatenating it cost
 * more than it saved there. Returns {code, left, user_units[, order, qty, claimed]}: code
 * 0 reserved, 1 sold out, 2 limit reached, 3 duplicate (with the original order, its qty
 * and 1 if a gateway claimed it, INV_REDIS_LUA_CLAIM), 4 unknown sale. Order of checks:
 * unknown sale, duplicate key, per-user limit, stock. With the stock there, the user's
 * count is bumped first and the bump undone (within the script: atomic, never visible) if
 * it passes the limit, instead of an HGET before the HINCRBY: one redis.call less per
 * reservation, -0.85 us of redis-server CPU (9%; RESERVE=bench/lua/reserve_169d8da.lua
 * python3 bench/script_steps.py bench/lua/reserve_steps.py). A limit refusal pays a write
 * and its undo instead. A reservation (code 0) whose left < 2^32 and user_units < 2^20 is
 * one integer instead, left * 2^INV_REDIS_RESERVED_SHIFT + user_units (exact in Lua's
 * doubles: < 2^52): Redis builds a Lua table's reply with a deferred array length, ~0.8
 * us of redis-server CPU per reserve (9% of it) that an integer does not cost, and at c64
 * redis-server's CPU is what bounds orders/s when it shares a core with the clients
 * (python3 bench/script_steps.py). A gateway reads only the replies of the script text it
 * loaded itself (by its SHA), so gateways of both formats can share a Redis.
 */
#define INV_REDIS_RESERVED_SHIFT 20
#define INV_REDIS_LUA_RESERVE                                                                      \
    "local m = redis.call('HMGET', KEYS[1], 'left', 'limit')\n"                                    \
    "if not m[1] then return {4, -1, 0} end\n"                                                     \
    "local left = tonumber(m[1])\n"                                                                \
    "local limit = tonumber(m[2])\n"                                                               \
    "local qty = tonumber(ARGV[2])\n"                                                              \
    "local ik = nil\n"                                                                             \
    "if ARGV[3] ~= '' then\n"                                                                      \
    "  ik = ARGV[1] .. '\\n' .. ARGV[3]\n"                                                         \
    "  local prev = redis.call('HGET', KEYS[4], ik)\n"                                             \
    "  if prev then\n"                                                                             \
    "    local o, q = string.match(prev, '^(%S+) (%d+)$')\n"                                       \
    "    local h = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n"                         \
    "    local c = redis.call('HEXISTS', KEYS[4], '" INV_REDIS_CLAIM "' .. o)\n"                   \
    "    return {3, left, h, o, tonumber(q), c}\n"                                                 \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "if left < qty then\n"                                                                         \
    "  local have = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n"                        \
    "  if have + qty > limit then return {2, left, have} end\n"                                    \
    "  return {1, left, have}\n"                                                                   \
    "end\n"                                                                                        \
    "local have = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)\n"                                  \
    "if have > limit then\n"                                                                       \
    "  if have == qty then redis.call('HDEL', KEYS[2], ARGV[1])\n"                                 \
    "  else redis.call('HINCRBY', KEYS[2], ARGV[1], -qty) end\n"                                   \
    "  return {2, left, have - qty}\n"                                                             \
    "end\n"                                                                                        \
    "left = redis.call('HINCRBY', KEYS[1], 'left', -qty)\n"                                        \
    "redis.call('HSET', KEYS[3], ARGV[4], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])\n"          \
    "if ik then redis.call('HSET', KEYS[4], ik, ARGV[4] .. ' ' .. ARGV[2]) end\n"                  \
    "if left == 0 then redis.call('PUBLISH', '" INV_REDIS_CHANNEL "', string.sub(KEYS[1], 7, -7)) "  \
    "end\n"                                                                                        \
    "if left < 4294967296 and have < 1048576 then return left * 1048576 + have end\n"              \
    "return {0, left, have}\n"

/*
 * The lottery mark of an order: the field INV_REDIS_FAIR .. order id of the
 * idem hash (byte 3 first, which no user id can start with, as the restock's
 * byte 1 and the claim's byte 2), set by INV_REDIS_LUA_RESERVE_ONCE in the
 * same script as the reservation. No release deletes it (it goes with the
 * sale): a fleet draw that resumes after its drawer died between a winner's
 * reserve and its :won record tells "reserved before, released since" (the
 * order failed or was cancelled meanwhile, and its idempotency key went with
 * the release) from "never reserved", and does not reserve that entrant again.
 */
#define INV_REDIS_FAIR "\\3fair\\n"

/*
 * Reserve once per order id (the fleet draw's winners, gw_fair_fleet.c): as
 * INV_REDIS_LUA_RESERVE, with the same ARGV and answers, plus code 6
 * (INV_RESERVED_BEFORE) {6, left, 0} when this order id was reserved by this
 * script before and is no longer held. A reservation sets the order's mark
 * (INV_REDIS_FAIR) in the same script. Only the lottery thread's blocking
 * calls run it; the buy path's script is unchanged.
 */
#define INV_REDIS_LUA_RESERVE_ONCE                                                                 \
    "local fk = '" INV_REDIS_FAIR "' .. ARGV[4]\n"                                                \
    "if redis.call('HEXISTS', KEYS[4], fk) == 1 and redis.call('HEXISTS', KEYS[3], ARGV[4]) == 0 " \
    "then\n"                                                                                      \
    "  return {6, tonumber(redis.call('HGET', KEYS[1], 'left') or '-1'), 0}\n"                    \
    "end\n"                                                                                       \
    "local r = (function()\n" INV_REDIS_LUA_RESERVE "end)()\n"                                   \
    "if type(r) == 'number' or r[1] == 0 then redis.call('HSET', KEYS[4], fk, '1') end\n"         \
    "return r\n"

/*
 * Reserve, a batch: the reserves of one sale that a worker queued in one loop
 * iteration (inv_redis_batch.c inv__redis_queue_send), run in one call. ARGV: 4 per reserve,
 * as INV_REDIS_LUA_RESERVE's (user, qty, idem key, order id), in the order
 * they were queued. Returns an array with one element per reserve, each
 * exactly what INV_REDIS_LUA_RESERVE would have returned for it had the calls
 * run one after the other: the same checks in the same order, against the
 * stock the earlier reserves of the batch left.
 * Why: redis-server's CPU per reserve is what bounds a fleet's orders/s (one
 * Redis for every gateway), and a third of it was the call, not the work:
 * parsing a command, building KEYS and ARGV, entering Lua, and the HMGET and
 * HINCRBY of meta that every reserve repeated. One call for 32 reserves cost
 * redis-server 4.6-5.2 us a reserve against 7.5-8.4 us for 32 pipelined calls
 * (python3 bench/redis_ab.py, VARIANTS with
 * --inventory-redis-batch 1 and 32). `left` is read once and moved once, by the
 * batch's total (HINCRBY: exact where Lua's doubles are not, past 2^53).
 * A batch holds at most a worker's `batch` reserves (inv_redis_batch.c), so
 * redis-server is held for that many reserves at once (~5 us each).
 */
#define INV_REDIS_LUA_RESERVE_BATCH                                                                \
    "local m = redis.call('HMGET', KEYS[1], 'left', 'limit')\n"                                    \
    "local n = #ARGV / 4\n"                                                                        \
    "local out = {}\n"                                                                             \
    "if not m[1] then\n"                                                                           \
    "  for i = 1, n do out[i] = {4, -1, 0} end\n"                                                  \
    "  return out\n"                                                                               \
    "end\n"                                                                                        \
    "local left0 = tonumber(m[1])\n"                                                               \
    "local left = left0\n"                                                                         \
    "local limit = tonumber(m[2])\n"                                                               \
    "for i = 1, n do\n"                                                                            \
    "  local b = i * 4 - 3\n"                                                                      \
    "  local user, q, key, order = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]\n"               \
    "  local qty = tonumber(q)\n"                                                                  \
    "  local ik = nil\n"                                                                           \
    "  local r = nil\n"                                                                            \
    "  if key ~= '' then\n"                                                                        \
    "    ik = user .. '\\n' .. key\n"                                                              \
    "    local prev = redis.call('HGET', KEYS[4], ik)\n"                                           \
    "    if prev then\n"                                                                           \
    "      local o, pq = string.match(prev, '^(%S+) (%d+)$')\n"                                    \
    "      local h = tonumber(redis.call('HGET', KEYS[2], user) or '0')\n"                         \
    "      local c = redis.call('HEXISTS', KEYS[4], '" INV_REDIS_CLAIM "' .. o)\n"                 \
    "      r = {3, left, h, o, tonumber(pq), c}\n"                                                 \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  if not r and left < qty then\n"                                                             \
    "    local have = tonumber(redis.call('HGET', KEYS[2], user) or '0')\n"                        \
    "    if have + qty > limit then r = {2, left, have} else r = {1, left, have} end\n"            \
    "  end\n"                                                                                      \
    "  if not r then\n"                                                                            \
    "    local have = redis.call('HINCRBY', KEYS[2], user, qty)\n"                                 \
    "    if have > limit then\n"                                                                   \
    "      if have == qty then redis.call('HDEL', KEYS[2], user)\n"                                \
    "      else redis.call('HINCRBY', KEYS[2], user, -qty) end\n"                                  \
    "      r = {2, left, have - qty}\n"                                                            \
    "    else\n"                                                                                   \
    "      left = left - qty\n"                                                                    \
    "      redis.call('HSET', KEYS[3], order, user .. ' ' .. q .. ' ' .. key)\n"                   \
    "      if ik then redis.call('HSET', KEYS[4], ik, order .. ' ' .. q) end\n"                    \
    "      if left < 4294967296 and have < 1048576 then r = left * 1048576 + have\n"               \
    "      else r = {0, left, have} end\n"                                                         \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  out[i] = r\n"                                                                               \
    "end\n"                                                                                        \
    "if left ~= left0 then\n"                                                                      \
    "  local now = redis.call('HINCRBY', KEYS[1], 'left', string.format('%d', left - left0))\n"    \
    "  if now == 0 then redis.call('PUBLISH', '" INV_REDIS_CHANNEL "', "                           \
    "string.sub(KEYS[1], 7, -7)) end\n"                                                            \
    "end\n"                                                                                        \
    "return out\n"

/*
 * The state every admin script returns, in inv_sale_info_t order: total,
 * left, units, orders, limit, starts, ends, version (all nil for a sale
 * without meta). Needs KEYS[1] and KEYS[3]. A Lua expression (a function
 * called at once), so that scripts can `return` it.
 */
#define INV_REDIS_LUA_STATE                                                                        \
    "(function()\n"                                                                                \
    "  local s = redis.call('HMGET', KEYS[1], 'total', 'left', 'limit', 'starts', 'ends', "        \
    "'version')\n"                                                                                 \
    "  if not s[1] then return {false, false, false, false, false, false, false, false} end\n"     \
    "  local units = string.format('%d', tonumber(s[1]) - tonumber(s[2] or '0'))\n"               \
    "  return {s[1], s[2], units, redis.call('HLEN', KEYS[3]), s[3], s[4], s[5], s[6]}\n"          \
    "end)()"

/* A sale's state alone (KEYS: meta, users, orders), read-only: the admin reads and the sync
 * thread's re-reads. */
#define INV_REDIS_LUA_READ "return " INV_REDIS_LUA_STATE "\n"

/*
 * Claim (see INV_REDIS_CLAIM). ARGV: order id, user ("" = whoever holds it),
 * sale id. Returns 0 with the order held and marked, or -7 (CM_ENOTFOUND) if
 * the order is no longer held (given back: the caller must not answer 202).
 */
#define INV_REDIS_LUA_CLAIM                                                                        \
    "local rec = redis.call('HGET', KEYS[3], ARGV[1])\n"                                           \
    "if not rec then return -7 end\n"                                                              \
    "if ARGV[2] ~= '' and string.match(rec, '^(%S+) ') ~= ARGV[2] then return -7 end\n"           \
    "redis.call('HSET', KEYS[4], '" INV_REDIS_CLAIM "' .. ARGV[1], '1')\n"                        \
    "return 0\n"

/*
 * Release exactly once. ARGV: order id, user ("" = whoever holds it), sale
 * id, give-back ('1': refuse a claimed order, INV_REDIS_CLAIM). The HDEL of
 * the order decides: returns -7 (CM_ENOTFOUND) if the order is unknown,
 * released already, or belongs to another user; -11 (CM_ECONFLICT) for a
 * give-back of a claimed order (nothing changes); else the stock left after
 * giving the recorded units back. The order's idempotency key and claim mark
 * go with it (as in the memory backend): a later request with that key is a
 * new purchase.
 */
#define INV_REDIS_LUA_RELEASE                                                                      \
    "local rec = redis.call('HGET', KEYS[3], ARGV[1])\n"                                           \
    "if not rec then return -7 end\n"                                                              \
    "local u, q = string.match(rec, '^(%S+) (%d+)')\n"                                             \
    "if ARGV[2] ~= '' and u ~= ARGV[2] then return -7 end\n"                                       \
    "local ck = '" INV_REDIS_CLAIM "' .. ARGV[1]\n"                                                \
    "if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[4], ck) == 1 then return -11 end\n"          \
    "redis.call('HDEL', KEYS[4], ck)\n"                                                            \
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"                                                       \
    "q = tonumber(q)\n"                                                                            \
    "local left = redis.call('HINCRBY', KEYS[1], 'left', q)\n"                                     \
    "if redis.call('HINCRBY', KEYS[2], u, -q) <= 0 then redis.call('HDEL', KEYS[2], u) end\n"      \
    "local k = string.match(rec, '^%S+ %d+ (%S+)$')\n"                                             \
    "if k then redis.call('HDEL', KEYS[4], u .. '\\n' .. k) end\n"                                  \
    "if left == q then redis.call('PUBLISH', '" INV_REDIS_CHANNEL "', ARGV[3]) end\n"              \
    "return left\n"

/*
 * Create or update a sale. KEYS: meta, users, orders. ARGV: sale id, stock, per_user_limit,
 * starts, ends.
 * Refuses (returns the accepted units as {-2, units}) a stock below the units
 * already accepted; else keeps the accepted units and orders, sets the rest,
 * bumps the version, announces the change and returns the state.
 */
#define INV_REDIS_LUA_PUT                                                                          \
    "local m = redis.call('HMGET', KEYS[1], 'total', 'left')\n"                                    \
    "local units = m[1] and (tonumber(m[1]) - tonumber(m[2] or '0')) or 0\n"                       \
    "local stock = tonumber(ARGV[2])\n"                                                            \
    "if stock < units then return {-2, units} end\n"                                               \
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'total', ARGV[2], 'left', "                        \
    "string.format('%d', stock - units), 'limit', ARGV[3], 'starts', ARGV[4], 'ends', ARGV[5])\n"   \
    "redis.call('HINCRBY', KEYS[1], 'version', 1)\n"                                               \
    "redis.call('PUBLISH', '" INV_REDIS_CHANNEL "', ARGV[1])\n"                                    \
    "return " INV_REDIS_LUA_STATE "\n"

/* Restock. ARGV: sale id, units to add (>= 1). Returns -7 if unknown, -2 if the total
 * would overflow (nothing changed), else the state. */
/* KEYS: meta, users, orders, idem. ARGV: sale id, add, restock key ('' = none).
 * A keyed restock records its key in the idem hash under a field that starts
 * with byte 1, which no user id can: a retry with the same key returns -8. */
#define INV_REDIS_LUA_RESTOCK                                                                      \
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -7 end\n"                                   \
    "local rk = ARGV[3] and ARGV[3] ~= '' and ('\\1restock\\n' .. ARGV[3]) or nil\n"             \
    "if rk and redis.call('HEXISTS', KEYS[4], rk) == 1 then return -8 end\n"                       \
    "local t = redis.pcall('HINCRBY', KEYS[1], 'total', ARGV[2])\n"                                \
    "if type(t) == 'table' then return -2 end\n"                                                   \
    "if rk then redis.call('HSET', KEYS[4], rk, ARGV[2]) end\n"                                    \
    "redis.call('HINCRBY', KEYS[1], 'left', ARGV[2])\n"                                            \
    "redis.call('HINCRBY', KEYS[1], 'version', 1)\n"                                               \
    "redis.call('PUBLISH', '" INV_REDIS_CHANNEL "', ARGV[1])\n"                                    \
    "return " INV_REDIS_LUA_STATE "\n"

#endif
