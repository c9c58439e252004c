-- KEYS 1 the user's ownership hash. ARGV 1 session.
if redis.call('HGET', KEYS[1], 's') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
