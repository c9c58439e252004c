-- ARGV 8 player, 9 session.
if not epoch then return {'err', 'not_in_room'} end
local p, sess = ARGV[8], ARGV[9]
local m = getm(p)
if not m or m.s ~= sess then return {'err', 'not_in_room'} end
local seq = remove_member(p, m)
drop_if_empty()
touch()
return {'ok', seq, epoch}
