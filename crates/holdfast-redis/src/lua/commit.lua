-- Commits one room operation decided by the gateway's room rules: a compare-and-set on the
-- room's version, then the new state, the publish dedupe changes, the away index, and the
-- emitted messages appended to the history and published, in one atomic step. No room rule
-- lives here; frames arrive already serialised.
--
-- Every key is in the room's bucket (one hash tag), so on a Redis Cluster the script runs on
-- the shard of the room's slot and the channel is a shard channel of that slot.
-- KEYS 1 state hash (`v` version, `s` state, `r` run id of the Redis that wrote it), 2 dedupe
-- hash, 3 history stream, 4 the bucket's away index, 5 the bucket's room set; then the
-- bucket's room sets of the nodes that place members in the room with this commit (the room
-- is added to each with the time of the placement, so the node's liveness sweep finds it).
-- ARGV 1 expected version ('' when the room must not exist), 2 new version, 3 new state
-- ('' drops the room), 4 key TTL (s), 5 history length, 6 channel, 7 room name,
-- 8 next away deadline (ms, '' for none), 9 replay from, 10 replay to (0 for none), 11 epoch,
-- 12 the presence note ('' for none; published with seq 0, never kept), 13 the run id the
-- state was rebased for ('' when not rebased), 14 the seq the new epoch took over at,
-- 15 the publish command (`PUBLISH`, or `SPUBLISH` on a cluster), 16 number of dedupe
-- changes; then that many (player, window JSON or '' to delete) pairs;
-- then the emitted messages as (seq, frame) pairs.
--
-- A state written by another run of Redis was restored from a snapshot, an append-only file
-- or a replica, and may be older than what clients saw: the caller must start a new epoch
-- (answer 'rebase' with this run's id) before anything is appended to it.
local st = redis.call('HMGET', KEYS[1], 'v', 'r')
local cur = st[1] or ''
if cur ~= ARGV[1] then return {'conflict'} end
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
if cur ~= '' and st[2] ~= run then
  if ARGV[13] ~= run then return {'rebase', run} end
  -- Entries after the new epoch's start belong to the lost part of the old stream.
  local base = tonumber(ARGV[14])
  local stale = redis.call('XRANGE', KEYS[3], (base + 1) .. '-0', '+')
  for _, e in ipairs(stale) do redis.call('XDEL', KEYS[3], e[1]) end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('XSETID', KEYS[3], base .. '-1')
  end
end

local out = {'ok'}
local to = tonumber(ARGV[10])
if to > 0 then
  for _, e in ipairs(redis.call('XRANGE', KEYS[3], ARGV[9] .. '-1', to .. '-1')) do
    table.insert(out, e[1])
    table.insert(out, e[2][2])
  end
end

if ARGV[12] ~= '' then
  redis.call(ARGV[15], ARGV[6], '0 ' .. ARGV[11] .. ' - ' .. ARGV[12])
end

local n = tonumber(ARGV[16])
local i = 17
for _ = 1, n do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end

local cap = tonumber(ARGV[5])
while i + 1 <= #ARGV do
  local seq, f = ARGV[i], ARGV[i + 1]
  redis.call('XADD', KEYS[3], 'MAXLEN', cap, seq .. '-1', 'f', f)
  redis.call(ARGV[15], ARGV[6], seq .. ' ' .. ARGV[11] .. ' - ' .. f)
  i = i + 2
end

if ARGV[3] == '' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[7])
  redis.call('SREM', KEYS[5], ARGV[7])
  return out
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'r', run)
local ttl = tonumber(ARGV[4])
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ttl) end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[4], ARGV[7])
else
  redis.call('ZADD', KEYS[4], tonumber(ARGV[8]), ARGV[7])
end
redis.call('SADD', KEYS[5], ARGV[7])
if #KEYS > 5 then
  local t = redis.call('TIME')
  local placed = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for k = 6, #KEYS do
    redis.call('ZADD', KEYS[k], placed, ARGV[7])
    redis.call('EXPIRE', KEYS[k], ttl)
  end
end
return out
