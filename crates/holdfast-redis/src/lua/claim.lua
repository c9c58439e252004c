-- ARGV 8 player, 9 session.
if not epoch then return {'err', 'not_in_room'} end
local p, sess = ARGV[8], ARGV[9]
local m = getm(p)
if not m or m.s ~= sess then return {'err', 'not_in_room'} end
local a = authority()
if a == p then return {'ok', 0} end
if a then
  local h = getm(a)
  if h and h.s ~= '' then return {'err', 'authority_taken'} end
  if h then h.ha = 0; putm(a, h) end
end
redis.call('HSET', META, 'auth', p)
local seq = emit_auth()
touch()
return {'ok', seq}
