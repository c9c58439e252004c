-- KEYS 1 the user's ownership hash. ARGV 1 node, 2 session, 3 node channel prefix, 4 user.
-- Newest wins: the previous owner (any node) is told to close its session with `replaced`.
local old = redis.call('HMGET', KEYS[1], 'n', 's')
redis.call('HSET', KEYS[1], 'n', ARGV[1], 's', ARGV[2])
local ep = redis.call('HINCRBY', KEYS[1], 'ep', 1)
redis.call('EXPIRE', KEYS[1], 86400)
if old[2] and old[2] ~= ARGV[2] then
  redis.call('PUBLISH', ARGV[3] .. old[1], 'kick ' .. old[2] .. ' ' .. ARGV[4])
end
return ep
