-- ARGV 8 player, 9 user, 10 hash of the presented token, 11 hash of the next token,
-- 12 session, 13 node, 14 last sequence, 15 restore authority '1'/'0'.
-- Token hashes (not tokens) are compared here; the tokens themselves never reach Redis.
if not epoch then return {'err', 'reconnection_failed'} end
local p, user, presented = ARGV[8], ARGV[9], ARGV[10]
local m = getm(p)
if not m then
  local t = redis.call('HGET', TOMB, p)
  if t and t == presented then return {'err', 'reconnection_expired'} end
  return {'err', 'reconnection_token_invalid'}
end
local cur = (m.th ~= '' and m.th == presented)
local prev = (m.pth ~= '' and m.pth == presented)
if (not (cur or prev)) or m.u ~= user then return {'err', 'reconnection_token_invalid'} end
if m.au > 0 and NOW >= m.au then return {'err', 'reconnection_expired'} end
if m.s == ARGV[12] then return {'err', 'reconnection_failed'} end
local kick = m.s
local restore = (m.ha == 1 and ARGV[15] == '1')
local used = m.pth
if cur then used = m.th end
m.s = ARGV[12]; m.n = ARGV[13]; m.au = 0; m.ha = 0; m.th = ARGV[11]; m.pth = used
putm(p, m)
redis.call('ZREM', AWAY, ROOM .. '\n' .. p)
-- The replay is read before this resume's own messages are emitted.
local current = tonumber(redis.call('HGET', META, 'seq'))
local last = tonumber(ARGV[14])
local frames = {}
local first = 0
if last < current then
  local entries = redis.call('XRANGE', STREAM, (last + 1) .. '-1', current .. '-1')
  for i, e in ipairs(entries) do
    if i == 1 then first = tonumber(string.match(e[1], '^(%d+)')) end
    table.insert(frames, e[2][2])
  end
end
local seq = emit('member_reconnected', member_extra(p, m), kick)
if restore and not authority() then
  redis.call('HSET', META, 'auth', p)
  seq = emit_auth()
end
touch()
local out = {'ok', seq, epoch, members_json(), auth_json(), current, first}
for _, f in ipairs(frames) do table.insert(out, f) end
return out
