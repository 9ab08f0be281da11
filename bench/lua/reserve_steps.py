"""Variants of 169d8da's reserve script (bench/lua/reserve_169d8da.lua) for bench/script_steps.py."""
F = FULL
def rep(a, b):
    assert a in F, a
    return F.replace(a, b)
v("no HMGET meta (left/limit constants)", rep("local m = redis.call('HMGET', KEYS[1], 'left', 'limit')\n", "local m = {'1000000000000', '5'}\n"))
v("no HGET users (have = 0)", rep("local have = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n", "local have = 0\n"))
v("no HINCRBY left", rep("left = redis.call('HINCRBY', KEYS[1], 'left', -qty)\n", "left = left - qty\n"))
v("no HINCRBY users", rep("have = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)\n", "have = have + qty\n"))
v("no HSET orders (order record)", rep("redis.call('HSET', KEYS[3], ARGV[4], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])\n", ""))
v("order record without concatenation (value = user)", rep("ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])", "ARGV[1])"))
v("no tonumber (3 conversions)", rep("local left = tonumber(m[1])\nlocal limit = tonumber(m[2])\nlocal qty = tonumber(ARGV[2])\n", "local left = 1000000000000\nlocal limit = 5\nlocal qty = 1\n"))
v("HINCRBY users first, undo over the limit (no HGET)", rep(
"local have = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n"
"if have + qty > limit then return {2, left, have} end\n"
"if left < qty then return {1, left, have} end\n"
"left = redis.call('HINCRBY', KEYS[1], 'left', -qty)\n"
"have = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)\n",
"if left < qty then return {1, left, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')} end\n"
"local have = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)\n"
"if have > limit then\n"
"  if have == qty then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HINCRBY', KEYS[2], ARGV[1], -qty) end\n"
"  return {2, left, have - qty}\n"
"end\n"
"left = redis.call('HINCRBY', KEYS[1], 'left', -qty)\n"))
v("only HMGET+HGET+return (reads)", "local m = redis.call('HMGET', KEYS[1], 'left', 'limit')\nlocal h = redis.call('HGET', KEYS[2], ARGV[1])\nreturn 1\n")
v("empty script, same 4 keys + 5 args", "return 1\n")
v("empty script, 4 keys + 4 args (no sale id)", "return 1\n", ["4", "{sale:c}:meta", "{sale:c}:users", "{sale:c}:orders", "{sale:c}:idem", "u__rand_int__", "1", "", "o__rand_int__"])
v("empty script, 3 keys + 4 args", "return 1\n", ["3", "{sale:c}:meta", "{sale:c}:users", "{sale:c}:orders", "u__rand_int__", "1", "", "o__rand_int__"])
v("one redis.call: HINCRBY users", "redis.call('HINCRBY', KEYS[2], ARGV[1], 1)\nreturn 1\n")
