"""The Lua scripts that make every multi-key update of the Redis backend atomic.

Keys of one inbox (both carry the same hash tag, so they share a Cluster slot):

- ``KEYS[1]`` ``<prefix>:{<tag>}:m`` — a hash: ``pw`` (salt + digest of the
  password), ``reader`` (token of the GET waiting on the inbox, if any) and
  ``hand`` (set while the message at the head of the queue is being handed to
  that reader, so it does not count against the capacity);
- ``KEYS[2]`` ``<prefix>:{<tag>}:q`` — a list, the queued messages, oldest first.

Both keys carry the inbox's TTL: Redis deletes an unread inbox by itself.

A reader token is ``<wake channel>|<counter>``; scripts wake a reader by
publishing ``M<token>`` (a message may be there: claim it) or ``S<token>``
(superseded by a newer reader: answer 204) on the channel of the process
where it waits. A waiting reader only ever takes a message with CLAIM, which
checks that it is still the inbox's reader, so nothing is popped for a reader
that is gone.

The global inbox index (for ``max-inboxes`` and the inbox count) is a sorted
set of names scored by a time (Redis ``TIME``, milliseconds) no earlier than
the inbox's expiry. It lives in its own slot, so scripts on an inbox cannot
update it: a script that moves an inbox's expiry past the score recorded in
the inbox (``ix``) records a new score half an inbox timeout later and returns
it, and the caller then sends TOUCH. An inbox therefore costs one index update
per half timeout, not one per request, and the index counts an inbox for at
most half an inbox timeout after it expired.
"""

from __future__ import annotations

_COMMON = """
local function same(a, b)
  -- digests compared through a hash: the time taken says nothing about either
  return redis.sha1hex(a) == redis.sha1hex(b)
end
local function wake(token, kind)
  local channel = string.match(token, '^(.*)|')
  if channel then redis.call('PUBLISH', channel, kind .. token) end
end
local function expire(ttl)
  -- → 0, or the new index score the caller must record with TOUCH
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  local t = redis.call('TIME')
  local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ttl)
  if deadline <= tonumber(redis.call('HGET', KEYS[1], 'ix') or '0') then return 0 end
  local score = deadline + math.floor(tonumber(ttl) / 2)
  redis.call('HSET', KEYS[1], 'ix', string.format('%.0f', score))
  return score
end
local function push(command, message, capacity)
  -- RPUSH (send) or LPUSH (put back); a message for a waiting reader that has
  -- none on its way yet is handed to it and does not count against capacity
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
  local state = redis.call('HMGET', KEYS[1], 'reader', 'hand')
  local reader, hand = state[1], state[2]
  local handing = reader and not hand
  if capacity and not handing then
    local queued = redis.call('LLEN', KEYS[2])
    if hand then queued = queued - 1 end
    if queued >= capacity then return 'full' end
  end
  redis.call(command, KEYS[2], message)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  if handing then
    redis.call('HSET', KEYS[1], 'hand', '1')
    wake(reader, 'M')
  end
  return 'ok'
end
"""

#: Open (create or check the password) and, unless ARGV[4] is "open", read.
#: ARGV: expected digest, digest to create with ("" = do not create), ttl ms,
#: mode: "open" (no touch, no read), "" (read without waiting) or a reader token,
#: index score reserved for a new inbox.
#: → {"missing"} | {"password", stored} | {"ok", 0}
#:   | {"message", score, m} | {"empty", score} | {"waiting", score}
ENTER = (
    _COMMON
    + """
local stored = redis.call('HGET', KEYS[1], 'pw')
if not stored then
  if ARGV[2] == '' then return {'missing'} end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'pw', ARGV[2], 'ix', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif not same(stored, ARGV[1]) then
  return {'password', stored}
end
local mode = ARGV[4]
if mode == 'open' then return {'ok', 0} end
local old = redis.call('HGET', KEYS[1], 'reader')
if old then
  -- newest reader wins: the older one, wherever it waits, answers 204
  wake(old, 'S')
  redis.call('HDEL', KEYS[1], 'reader', 'hand')
end
local message = redis.call('LPOP', KEYS[2])
if not message and mode ~= '' then redis.call('HSET', KEYS[1], 'reader', mode) end
local score = expire(ARGV[3])
if message then return {'message', score, message} end
if mode == '' then return {'empty', score} end
return {'waiting', score}
"""
)

#: Queue a message; wake the waiting reader if there is one.
#: ARGV: encoded message, capacity. → "ok" | "missing" | "full"
SEND = (
    _COMMON
    + """
return push('RPUSH', ARGV[1], tonumber(ARGV[2]))
"""
)

#: A woken reader takes the oldest message, if it is still the inbox's reader.
#: ARGV: token, ttl ms. → {"message", score, m} | {"waiting", 0} | {"superseded", 0}
CLAIM = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'reader') ~= ARGV[1] then return {'superseded', 0} end
local message = redis.call('LPOP', KEYS[2])
if not message then return {'waiting', 0} end
redis.call('HDEL', KEYS[1], 'reader', 'hand')
return {'message', expire(ARGV[2]), message}
"""
)

#: A reader stops waiting (timeout, client gone, superseded, shutdown): the GET
#: finished, so the inbox's clock restarts, unless a newer reader now waits.
#: ARGV: token, ttl ms. → index score or 0
LEAVE = (
    _COMMON
    + """
local reader = redis.call('HGET', KEYS[1], 'reader')
if reader == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'reader', 'hand')
  reader = false
end
if not reader and redis.call('EXISTS', KEYS[1]) == 1 then return expire(ARGV[2]) end
return 0
"""
)

#: Keep the inbox of a waiting reader alive; also tells the reader what it missed.
#: ARGV: token, ttl ms. → {"ok" | "message" | "superseded", index score or 0}
REFRESH = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'reader') ~= ARGV[1] then return {'superseded', 0} end
local score = expire(ARGV[2])
if redis.call('LLEN', KEYS[2]) > 0 then return {'message', score} end
return {'ok', score}
"""
)

#: Put back, at the front, a message whose delivery failed (no capacity check).
#: ARGV: encoded message. → "ok" | "missing"
REQUEUE = (
    _COMMON
    + """
return push('LPUSH', ARGV[1], nil)
"""
)

_INDEX_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function ms(value) return string.format('%.0f', value) end
local function prune()
  -- at most 1000 per call, so one call never stalls Redis after a mass expiry
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, 1000)
  if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
end
local function live()
  return redis.call('ZCOUNT', KEYS[1], '(' .. ms(now), '+inf')
end
"""

#: Make room for a new inbox in the global index, or refuse (max-inboxes).
#: KEYS: index. ARGV: name, max inboxes, ttl ms. → the entry's score, or 0 when full
RESERVE = (
    _INDEX_COMMON
    + """
prune()
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and live() >= tonumber(ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[3])
local score = now + ttl + math.floor(ttl / 2)
redis.call('ZADD', KEYS[1], ms(score), ARGV[1])
return score
"""
)

#: Record a later score for an indexed inbox (the score an inbox script returned).
#: KEYS: index. ARGV: name, score. → 0 | 1
TOUCH = """
return redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', ARGV[2], ARGV[1])
"""

#: How many inboxes live. KEYS: index. → count
COUNT = (
    _INDEX_COMMON
    + """
prune()
return live()
"""
)
