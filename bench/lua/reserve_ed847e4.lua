local m = redis.call('HMGET', KEYS[1], 'left', 'limit')
if not m[1] then return {4, -1, 0} end
local left = tonumber(m[1])
local limit = tonumber(m[2])
local qty = tonumber(ARGV[2])
local ik = nil
if ARGV[3] ~= '' then
  ik = ARGV[1] .. '\n' .. ARGV[3]
  local prev = redis.call('HGET', KEYS[4], ik)
  if prev then
    local o, q = string.match(prev, '^(%S+) (%d+)$')
    local h = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
    return {3, left, h, o, tonumber(q)}
  end
end
if left < qty then
  local have = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if have + qty > limit then return {2, left, have} end
  return {1, left, have}
end
local have = redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
if have > limit then
  if have == qty then redis.call('HDEL', KEYS[2], ARGV[1])
  else redis.call('HINCRBY', KEYS[2], ARGV[1], -qty) end
  return {2, left, have - qty}
end
left = redis.call('HINCRBY', KEYS[1], 'left', -qty)
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
if ik then redis.call('HSET', KEYS[4], ik, ARGV[4] .. ' ' .. ARGV[2]) end
if left == 0 then redis.call('PUBLISH', 'flashgate:sales', ARGV[5]) end
if left < 4294967296 and have < 1048576 then return left * 1048576 + have end
return {0, left, have}
