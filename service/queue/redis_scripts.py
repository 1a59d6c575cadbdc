"""The Lua scripts of the Redis broker, each one atomic step on its keys. Costs are integer thousandths
of a cost unit (`service.queue.admission`)."""

from __future__ import annotations

# KEYS: stream, depth, cost, queues, job marker. ARGV: n, cost, allowed cost, job, model, marker ttl (ms).
# Returns {entry id or false, cost queued before}. An empty queue takes any job (the API checks the cap).
# The marker (the entry's id, under the job's id) says the job is known: lost with the queue, it is not.
ADMIT = """
redis.call('SADD', KEYS[4], ARGV[5])
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], 0)
  redis.call('SET', KEYS[3], 0)
end
local queued = tonumber(redis.call('GET', KEYS[3]) or '0')
if queued > 0 and queued + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {false, queued} end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[1], 'job', ARGV[4])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('SET', KEYS[5], id, 'PX', ARGV[6])
return {id, queued}
"""

# KEYS: stream. ARGV: group, consumer, room (images), most entries looked at.
# Reads the next new entries whose images fit in `room` (always at least one): a worker takes what it can
# run next, and leaves the rest to the others. Returns XREADGROUP's answer, or an empty list.
RECEIVE = """
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
  if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
end
if last == nil then return redis.error_reply('NOGROUP no such group') end
local count, images, room = 0, 0, tonumber(ARGV[3])
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', ARGV[4])) do
  local n = 1
  for k = 1, #e[2], 2 do if e[2][k] == 'n' then n = tonumber(e[2][k + 1]) end end
  if count > 0 and images + n > room then break end
  count, images = count + 1, images + n
  if images >= room then break end
end
if count == 0 then return {} end
return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count, 'STREAMS', KEYS[1], '>')
"""

# Acknowledge and delete an entry, taking its images off the depth and its cost off the queue once.
_ACK = """
local function ack(stream, depth, cost, group, id, n, c)
  redis.call('XACK', stream, group, id)
  if redis.call('XDEL', stream, id) == 1 then
    redis.call('DECRBY', depth, n)
    redis.call('DECRBY', cost, c)
  end
end
"""

# KEYS: stream, depth, cost, done, reply. ARGV: group, entry, n, cost, ttl, then index, message pairs.
# Pushes each image not pushed before to whoever waits; acknowledges once all n are stored.
# Returns how many were pushed.
STORE = (
    _ACK
    + """
local pushed = 0
if redis.call('HEXISTS', KEYS[4], 'error') == 0 and redis.call('HEXISTS', KEYS[4], 'cancelled') == 0 then
  for k = 6, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[4], ARGV[k], '1') == 1 then
      redis.call('RPUSH', KEYS[5], ARGV[k + 1])
      pushed = pushed + 1
    end
  end
  if pushed > 0 then redis.call('EXPIRE', KEYS[5], ARGV[5]) end
end
redis.call('EXPIRE', KEYS[4], ARGV[5])
if redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[3]) then
  ack(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
end
return pushed
"""
)

# KEYS: stream, depth, cost, done, reply, dead. ARGV: group, entry, n, cost, ttl, message, and for the dead
# letters the job's id ('' for none) and its deliveries. The dead letters keep no payload and are capped.
# Returns 1 if the error was pushed, 0 if the job was answered or withdrawn already.
FAIL = (
    _ACK
    + """
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 1000, '*', 'job', ARGV[7], 'entry', ARGV[2],
    'deliveries', ARGV[8], 'error', ARGV[6])
end
local answered = 0
if redis.call('HLEN', KEYS[4]) < tonumber(ARGV[3]) and redis.call('HSETNX', KEYS[4], 'error', '1') == 1 then
  redis.call('RPUSH', KEYS[5], ARGV[6])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
  answered = 1
end
redis.call('EXPIRE', KEYS[4], ARGV[5])
ack(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return answered
"""
)

# KEYS: stream, depth, cost. ARGV: group, entry, n, cost. Drops an entry nobody waits for.
DROP = (
    _ACK
    + """
ack(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: stream. ARGV: group, entry, n, job. Gives a job back as a new entry, so that a worker that stops
# cleanly costs it no delivery; depth and cost stay as they are. Returns the new entry's id.
REQUEUE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[3], 'job', ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
"""
