-- KEYS 1 the user's ownership hash (`n` node, `s` session, `t` claim time, `ep` generation).
-- ARGV 1 node, 2 session, 3 node channel prefix, 4 user, 5 claim time (ms, on Redis's clock),
-- 6 deadline (ms, on Redis's clock).
-- Newest wins: the previous owner (any node) is told to close its session with `replaced`.
-- Fenced: a claim that reaches Redis after its deadline (its node gave up on it) changes
-- nothing (-1); a claim older than the current owner's (applied late) loses: its own session
-- is the one told to close (-2). Otherwise returns the user's new generation.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ms > tonumber(ARGV[6]) then return -1 end
local old = redis.call('HMGET', KEYS[1], 'n', 's', 't')
if old[2] == ARGV[2] then
  return tonumber(redis.call('HGET', KEYS[1], 'ep') or '0')
end
if old[3] and tonumber(old[3]) > tonumber(ARGV[5]) then
  redis.call('PUBLISH', ARGV[3] .. ARGV[1], 'kick ' .. ARGV[2] .. ' ' .. ARGV[4])
  return -2
end
redis.call('HSET', KEYS[1], 'n', ARGV[1], 's', ARGV[2], 't', ARGV[5])
local ep = redis.call('HINCRBY', KEYS[1], 'ep', 1)
redis.call('EXPIRE', KEYS[1], 86400)
if old[2] then
  redis.call('PUBLISH', ARGV[3] .. old[1], 'kick ' .. old[2] .. ' ' .. ARGV[4])
end
return ep
