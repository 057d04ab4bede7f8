"""The cluster view's Lua scripts: each change and each read is one atomic step in Redis.

Keys (prefix `notify:cluster:`): `procs` (zset process -> deadline, ms of Redis's clock),
`proc:<p>` (a process's counters), `psids:<p>` (its sids), `sessions` (sid -> JSON),
`seen` (zset sid -> last event, seconds), `user:<u>` (zset sid -> admission order),
`online` (user -> sessions), `rooms` (room -> sessions), `transports`, `evicted:<p>` (sids
another process took from this one: "sid reason"). Every script first reaps the processes
whose deadline passed, so what it reads never counts a crashed process's sessions.
Keys are built inside the scripts: standalone Redis (or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

PREFIX = "notify:cluster:"

_PRELUDE = (
    f"local P = '{PREFIX}'\n"
    + """local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function decr(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end
-- Server-Sent Events streams have a cap of their own, per process: they never count against
-- (or displace) a user's sockets, so they are kept in a set of their own.
local function user_key(s)
  if s.transport == 'sse' then return P .. 'user-sse:' .. s.user_id end
  return P .. 'user:' .. s.user_id
end
local function remove_session(sid)
  local raw = redis.call('HGET', P .. 'sessions', sid)
  if not raw then return nil end
  local s = cjson.decode(raw)
  redis.call('HDEL', P .. 'sessions', sid)
  redis.call('ZREM', P .. 'seen', sid)
  redis.call('SREM', P .. 'psids:' .. s.process, sid)
  redis.call('ZREM', user_key(s), sid)
  decr(P .. 'online', s.user_id)
  for _, room in ipairs(s.rooms) do decr(P .. 'rooms', room) end
  decr(P .. 'transports', s.transport)
  return s
end
local function add_session(raw, order)
  local s = cjson.decode(raw)
  if redis.call('HEXISTS', P .. 'sessions', s.sid) == 1 then remove_session(s.sid) end
  redis.call('HSET', P .. 'sessions', s.sid, raw)
  redis.call('ZADD', P .. 'seen', s.last_heartbeat, s.sid)
  redis.call('SADD', P .. 'psids:' .. s.process, s.sid)
  if not order then order = redis.call('INCR', P .. 'order') end
  redis.call('ZADD', user_key(s), order, s.sid)
  redis.call('HINCRBY', P .. 'online', s.user_id, 1)
  for _, room in ipairs(s.rooms) do redis.call('HINCRBY', P .. 'rooms', room, 1) end
  redis.call('HINCRBY', P .. 'transports', s.transport, 1)
  return s
end
local function drop_process(pid)
  local sids = redis.call('SMEMBERS', P .. 'psids:' .. pid)
  for _, sid in ipairs(sids) do remove_session(sid) end
  redis.call('DEL', P .. 'psids:' .. pid, P .. 'proc:' .. pid, P .. 'evicted:' .. pid)
  redis.call('ZREM', P .. 'procs', pid)
end
local function reap()
  for _, pid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'procs', '-inf', now_ms())) do
    drop_process(pid)
  end
end
"""
)

# ARGV: ttl_ms, limit, session JSON. Returns [sid, process, ...] of the sessions displaced,
# oldest first, each also queued on its process's `evicted` list.
ADMIT = (
    _PRELUDE
    + """
reap()
local s = cjson.decode(ARGV[3])
redis.call('ZADD', P .. 'procs', 'NX', now_ms() + tonumber(ARGV[1]), s.process)
add_session(ARGV[3])
local key = user_key(s)
local over = redis.call('ZCARD', key) - tonumber(ARGV[2])
if s.transport == 'sse' then over = 0 end
local out = {}
if over > 0 then
  for _, victim in ipairs(redis.call('ZRANGE', key, 0, over - 1)) do
    local v = remove_session(victim)
    if v then
      redis.call('RPUSH', P .. 'evicted:' .. v.process, victim .. ' cap')
      table.insert(out, victim)
      table.insert(out, v.process)
    end
  end
end
return out
"""
)

# ARGV: sid.
REMOVE = _PRELUDE + "\nif remove_session(ARGV[1]) then return 1 end\nreturn 0\n"

# ARGV: session JSON (rooms or transport changed); keeps the admission order.
REPLACE = (
    _PRELUDE
    + """
local s = cjson.decode(ARGV[1])
local raw = redis.call('HGET', P .. 'sessions', s.sid)
if not raw then return 0 end
local order = redis.call('ZSCORE', user_key(s), s.sid)
add_session(ARGV[1], order)
return 1
"""
)

# ARGV: sid, reason. Takes the session out of the view and queues it for its process.
EVICT = (
    _PRELUDE
    + """
local v = remove_session(ARGV[1])
if not v then return false end
redis.call('RPUSH', P .. 'evicted:' .. v.process, ARGV[1] .. ' ' .. ARGV[2])
return v.process
"""
)

# ARGV: process, ttl_ms, counters JSON, then sid, last event pairs. Returns
# [known, evicted]: known 0 means this process's entries are gone (Redis restarted, or the
# process was paused past its deadline and reaped) and must be written again.
HEARTBEAT = (
    _PRELUDE
    + """
reap()
local pid = ARGV[1]
local known = redis.call('EXISTS', P .. 'proc:' .. pid)
redis.call('ZADD', P .. 'procs', now_ms() + tonumber(ARGV[2]), pid)
redis.call('HSET', P .. 'proc:' .. pid, 'stats', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('ZADD', P .. 'seen', 'XX', ARGV[i + 1], ARGV[i]) end
local evicted = redis.call('LRANGE', P .. 'evicted:' .. pid, 0, -1)
redis.call('DEL', P .. 'evicted:' .. pid)
return {known, evicted}
"""
)

# ARGV: process, ttl_ms, counters JSON, clear (1 for the first chunk), session JSONs.
RESYNC = (
    _PRELUDE
    + """
reap()
local pid = ARGV[1]
if ARGV[4] == '1' then drop_process(pid) end
redis.call('ZADD', P .. 'procs', now_ms() + tonumber(ARGV[2]), pid)
redis.call('HSET', P .. 'proc:' .. pid, 'stats', ARGV[3])
for i = 5, #ARGV do add_session(ARGV[i]) end
return 1
"""
)

# ARGV: process. A clean shutdown leaves at once rather than at its deadline.
LEAVE = _PRELUDE + "\ndrop_process(ARGV[1])\nreturn 1\n"

# Returns [connections, online users, rooms (flat), transports (flat), process, counters, ...].
STATS = (
    _PRELUDE
    + """
reap()
local out = {
  redis.call('HLEN', P .. 'sessions'),
  redis.call('HLEN', P .. 'online'),
  redis.call('HGETALL', P .. 'rooms'),
  redis.call('HGETALL', P .. 'transports'),
}
for _, pid in ipairs(redis.call('ZRANGE', P .. 'procs', 0, -1)) do
  table.insert(out, pid)
  table.insert(out, redis.call('HGET', P .. 'proc:' .. pid, 'stats') or '{}')
end
return out
"""
)

# ARGV: user. Returns [session JSON, last event, ...] in admission order.
USER = (
    _PRELUDE
    + """
reap()
local out = {}
local sids = redis.call('ZRANGE', P .. 'user:' .. ARGV[1], 0, -1)
for _, sid in ipairs(redis.call('ZRANGE', P .. 'user-sse:' .. ARGV[1], 0, -1)) do
  table.insert(sids, sid)
end
for _, sid in ipairs(sids) do
  local raw = redis.call('HGET', P .. 'sessions', sid)
  if raw then
    table.insert(out, raw)
    table.insert(out, redis.call('ZSCORE', P .. 'seen', sid))
  end
end
return out
"""
)

# ARGV: cutoff (seconds). Returns [sid, process, ...] of sessions silent since before it.
STALE = (
    _PRELUDE
    + """
reap()
local out = {}
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'seen', '-inf', '(' .. ARGV[1])) do
  local raw = redis.call('HGET', P .. 'sessions', sid)
  if raw then
    table.insert(out, sid)
    table.insert(out, cjson.decode(raw).process)
  end
end
return out
"""
)
