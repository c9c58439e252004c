-- ARGV 8 player. Removes an away member whose window has passed.
local p = ARGV[8]
if not epoch then
  redis.call('ZREM', AWAY, ROOM .. '\n' .. p)
  return {'ok', 0}
end
local m = getm(p)
if not m or m.au == 0 then
  redis.call('ZREM', AWAY, ROOM .. '\n' .. p)
  return {'ok', 0}
end
if NOW < m.au then return {'ok', 0} end
local seq = remove_member(p, m)
drop_if_empty()
return {'ok', seq}
