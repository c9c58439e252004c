-- ARGV 8 player, 9 session, 10 client id ('' for none), 11 the event's fields after `epoch`,
-- 12 dedupe window.
if not epoch then return {'err', 'not_in_room'} end
local p, sess, id, suffix, window = ARGV[8], ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
local m = getm(p)
if not m or m.s ~= sess then return {'err', 'not_in_room'} end
local D, DL = META .. ':d:' .. p, META .. ':dl:' .. p
if id ~= '' then
  local prev = redis.call('HGET', D, id)
  if prev then return {'dup', tonumber(prev), epoch} end
end
local seq = emit('event', suffix)
if id ~= '' then
  redis.call('HSET', D, id, seq)
  redis.call('LPUSH', DL, id)
  if redis.call('LLEN', DL) > window then
    local old = redis.call('RPOP', DL)
    redis.call('HDEL', D, old)
  end
  redis.call('EXPIRE', D, TTL)
  redis.call('EXPIRE', DL, TTL)
end
touch()
return {'ok', seq, epoch}
