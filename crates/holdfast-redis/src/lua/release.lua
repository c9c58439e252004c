-- ARGV 8 player, 9 session.
if not epoch then return {'err', 'not_in_room'} end
local p, sess = ARGV[8], ARGV[9]
local m = getm(p)
if not m or m.s ~= sess then return {'err', 'not_in_room'} end
if authority() ~= p then return {'err', 'not_authority'} end
redis.call('HSET', META, 'auth', successor(p))
local seq = emit_auth()
touch()
return {'ok', seq}
