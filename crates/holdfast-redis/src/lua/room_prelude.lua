-- Shared by every room script. KEYS: 1 meta hash, 2 members hash, 3 stream, 4 away zset,
-- 5 tombstones hash. ARGV: 1 room name as a JSON string, 2 epoch for a new stream, 3 history
-- length, 4 pub/sub channel, 5 now (ms), 6 room name, 7 key TTL (s); scripts' own from 8.
local META, MEMBERS, STREAM, AWAY, TOMB = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ROOMJ, NEWEPOCH, CAP, CHAN = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local NOW, ROOM, TTL = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local epoch = redis.call('HGET', META, 'epoch')

-- Creates the room's stream when it does not exist (or was lost): a new epoch, seq 0.
local function ensure_room()
  if not epoch then
    epoch = NEWEPOCH
    redis.call('DEL', MEMBERS, STREAM, TOMB)
    redis.call('HSET', META, 'epoch', epoch, 'seq', 0, 'auth', '', 'np', 0)
  end
end

local function touch()
  for _, k in ipairs({META, MEMBERS, STREAM, TOMB}) do
    redis.call('EXPIRE', k, TTL)
  end
end

-- Allocates the next seq, appends the frame to the bounded history and publishes it, in one
-- step. `kick` names a session that this message fences out (it lost its membership).
local function emit(ty, extra, kick)
  local seq = redis.call('HINCRBY', META, 'seq', 1)
  local f = '{"type":"' .. ty .. '","room":' .. ROOMJ .. ',"seq":' .. seq ..
    ',"epoch":"' .. epoch .. '"' .. extra .. '}'
  local k = kick
  if k == nil or k == '' then k = '-' end
  redis.call('XADD', STREAM, 'MAXLEN', CAP, seq .. '-1', 'f', f, 'k', k)
  redis.call('PUBLISH', CHAN, seq .. ' ' .. epoch .. ' ' .. k .. ' ' .. f)
  return seq
end

local function getm(p)
  local r = redis.call('HGET', MEMBERS, p)
  if r then return cjson.decode(r) end
  return nil
end

local function putm(p, m)
  redis.call('HSET', MEMBERS, p, cjson.encode(m))
end

local function authority()
  local a = redis.call('HGET', META, 'auth')
  if a == false or a == '' then return nil end
  return a
end

local function auth_json()
  local a = authority()
  if a then return '"' .. a .. '"' end
  return 'null'
end

local function emit_auth(kick)
  return emit('authority_changed', ',"authority":' .. auth_json(), kick)
end

local function member_extra(p, m)
  return ',"player_id":"' .. p .. '","user_id":' .. cjson.encode(m.u)
end

-- Members in join order, the longest-present first.
local function all_members()
  local raw = redis.call('HGETALL', MEMBERS)
  local list = {}
  for i = 1, #raw, 2 do
    local m = cjson.decode(raw[i + 1])
    m.p = raw[i]
    table.insert(list, m)
  end
  table.sort(list, function(a, b) return a.o < b.o end)
  return list
end

local function successor(except)
  for _, m in ipairs(all_members()) do
    if m.s ~= '' and m.p ~= except then return m.p end
  end
  return ''
end

local function members_json()
  local parts = {}
  for _, m in ipairs(all_members()) do
    local status = 'away'
    if m.s ~= '' then status = 'online' end
    table.insert(parts, '{"player_id":"' .. m.p .. '","user_id":' .. cjson.encode(m.u) ..
      ',"status":"' .. status .. '"}')
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function remove_member(p, m)
  redis.call('HDEL', MEMBERS, p)
  redis.call('ZREM', AWAY, ROOM .. '\n' .. p)
  redis.call('DEL', META .. ':d:' .. p, META .. ':dl:' .. p)
  local seq = emit('member_left', member_extra(p, m))
  if authority() == p then
    redis.call('HSET', META, 'auth', successor(p))
    seq = emit_auth()
  end
  if m.th ~= '' then
    if redis.call('HLEN', TOMB) >= 256 then redis.call('DEL', TOMB) end
    redis.call('HSET', TOMB, p, m.th)
  end
  return seq
end

-- Frees the room when nobody, connected or away, is left.
local function drop_if_empty()
  if redis.call('HLEN', MEMBERS) == 0 then
    redis.call('DEL', META, MEMBERS, STREAM, TOMB)
  end
end
