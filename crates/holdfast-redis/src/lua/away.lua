-- ARGV 8 player, 9 session, 10 away until (ms), 11 restore authority '1'/'0',
-- 12 reconnection enabled '1'/'0'.
if not epoch then return {'ok', 0} end
local p, sess = ARGV[8], ARGV[9]
local m = getm(p)
if not m or m.s ~= sess then return {'ok', 0} end
if ARGV[12] == '0' then
  local seq = remove_member(p, m)
  drop_if_empty()
  return {'ok', seq}
end
m.s = ''
m.au = tonumber(ARGV[10])
m.ha = 0
if authority() == p then m.ha = 1 end
putm(p, m)
redis.call('ZADD', AWAY, m.au, ROOM .. '\n' .. p)
local seq = emit('member_disconnected', member_extra(p, m))
if m.ha == 1 and ARGV[11] == '0' then
  redis.call('HSET', META, 'auth', successor(p))
  seq = emit_auth()
end
touch()
return {'ok', seq}
