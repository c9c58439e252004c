-- ARGV 8 user, 9 session, 10 node, 11 max members, 12 token hash ('' without reconnection).
local user, sess, node, maxm, th = ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11]), ARGV[12]
ensure_room()
for _, m in ipairs(all_members()) do
  if m.s == sess then return {'err', 'already_in_room'} end
end
-- A fresh join replaces an away membership of the same user.
for _, m in ipairs(all_members()) do
  if m.s == '' and m.u == user then remove_member(m.p, m) end
end
if redis.call('HLEN', MEMBERS) >= maxm then
  drop_if_empty()
  return {'err', 'room_full'}
end
local np = redis.call('HINCRBY', META, 'np', 1)
local p = 'p' .. np
putm(p, {u = user, s = sess, n = node, o = np, th = th, pth = '', au = 0, ha = 0})
if not authority() then redis.call('HSET', META, 'auth', p) end
local seq = emit('member_joined', ',"player_id":"' .. p .. '","user_id":' .. cjson.encode(user))
touch()
return {'ok', seq, epoch, p, members_json(), auth_json()}
