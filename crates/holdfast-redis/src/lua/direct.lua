-- KEYS 1 the user's ownership hash. ARGV 1 node channel prefix, 2 user, 3 frame.
local n = redis.call('HGET', KEYS[1], 'n')
if not n then return 0 end
return redis.call('PUBLISH', ARGV[1] .. n, 'direct ' .. string.len(ARGV[2]) .. ' ' .. ARGV[2] .. ARGV[3])
