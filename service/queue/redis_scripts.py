"""The Lua scripts of the Redis broker (`service.queue.redis_broker`), each one atomic step on its keys."""

from __future__ import annotations

# KEYS: stream, depth, queues. ARGV: n, max depth, job JSON, model. Returns {entry id or false, depth}.
ADMIT = """
redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('SET', KEYS[2], 0) end
local depth = tonumber(redis.call('GET', KEYS[2]) or '0')
local n = tonumber(ARGV[1])
if depth + n > tonumber(ARGV[2]) then return {false, depth} end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
return {id, redis.call('INCRBY', KEYS[2], n)}
"""

# Acknowledge and delete an entry, and take its images off the depth once.
_ACK = """
local function ack(stream, depth, group, id, n)
  redis.call('XACK', stream, group, id)
  if redis.call('XDEL', stream, id) == 1 then redis.call('DECRBY', depth, n) end
end
"""

# KEYS: stream, depth, done, result. ARGV: group, entry id, n, ttl, then index, message pairs.
# Returns how many images were pushed (those not pushed before).
STORE = (
    _ACK
    + """
local pushed = 0
if redis.call('HEXISTS', KEYS[3], 'error') == 0 then
  for k = 5, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[3], ARGV[k], '1') == 1 then
      redis.call('RPUSH', KEYS[4], ARGV[k + 1])
      pushed = pushed + 1
    end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[4])
if pushed > 0 then redis.call('EXPIRE', KEYS[4], ARGV[4]) end
if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[3]) then ack(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]) end
return pushed
"""
)

# KEYS: stream, depth, done, result, dead. ARGV: group, entry id, n, ttl, error message,
# job JSON for the dead letters ('' for none). Returns 1 if the error was pushed, 0 if already answered.
FAIL = (
    _ACK
    + """
if ARGV[6] ~= '' then redis.call('XADD', KEYS[5], '*', 'job', ARGV[6], 'entry', ARGV[2], 'error', ARGV[5]) end
local answered = 0
if redis.call('HLEN', KEYS[3]) < tonumber(ARGV[3]) and redis.call('HSETNX', KEYS[3], 'error', '1') == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  answered = 1
end
redis.call('EXPIRE', KEYS[3], ARGV[4])
ack(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return answered
"""
)
