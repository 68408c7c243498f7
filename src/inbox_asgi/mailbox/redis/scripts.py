"""The Lua scripts that make every multi-key update of the Redis backend atomic.

Keys of one inbox (both carry the same hash tag, so they share a Cluster slot):

- ``KEYS[1]`` ``<prefix>:{<tag>}:m`` — a hash: ``pw`` (salt + digest of the
  password), ``ix`` (its index score, below), ``net`` (the key of the
  per-network index it counts in, if any), ``reader`` (token of the GET
  waiting on the inbox, if any),
  ``hand`` (set while the message at the head of the queue is being handed to
  that reader, so it does not count against the capacity) and, while a message
  is held (below), ``held`` (the token it is held for), ``hdl`` (until when,
  Redis time in ms) and ``hm`` (the message); ``id`` (the id of the last message
  accepted), and for WebSockets ``gen`` (the inbox's generation, drawn when a
  socket first opens it), ``sock`` (the token of the socket reading it, also its
  ``reader``), ``fl`` (how many messages at the front of the queue that socket
  holds unacknowledged), ``full`` (set while its window is full: it is not
  waiting, so a message for it is queued, against capacity) and ``mix`` (set
  when a put-back went behind them);
- ``KEYS[2]`` ``<prefix>:{<tag>}:q`` — a list, the queued messages, oldest first.

Both keys carry the inbox's TTL: Redis deletes an unread inbox by itself.

A message is stored as ``<id>:`` followed by its encoding (`codec`): SEND gives
it the next id of its inbox, and it keeps it when it is put back.

An open WebSocket is its inbox's reader (``reader`` and ``sock``, one token)
and reads without taking anything off the queue: TAKE hands it the messages
after the first ``fl`` and counts them in ``fl``, ACK pops the acknowledged
ones off the front. Its unacknowledged messages never leave the queue, so
nothing is lost whatever happens to its process: a newer GET or socket (ENTER)
or its own close (RELEASE) just forgets ``fl`` and they are queued again, at
the front and in order. A message put back (a GET's) while a socket holds
some goes right behind them (the socket reads it next, as in memory mode) and
sets ``mix``: when the socket lets go, the queue is sorted by id again.

A reader token is ``<wake channel>|<counter>``; scripts wake a reader by
publishing ``M<token>`` (a message may be there: claim it) or ``S<token>``
(superseded by a newer reader: answer 204) on the channel of the process
where it waits. On a Redis Cluster the token is ``|<process>:<counter>`` and
the wake-up goes to the inbox's shard channel ``<prefix>:{<tag>}:w`` (SPUBLISH:
heard on this slot's node only, not broadcast to the whole cluster). A waiting
reader only ever takes a message with CLAIM, which checks that it is still the
inbox's reader, so nothing is popped for a reader that is gone.

A message taken (by ENTER or CLAIM) leaves the queue but is *held* for its
GET until that GET's process, back from the round trip, has checked that the
client is still connected: SETTLE then either drops the hold (delivered) or
puts the message back at the front (the client left while Redis answered).
While a message is held, no other GET takes the next one — a newer GET waits
behind the hold and is woken when it is settled — so a message put back is
still the oldest and FIFO order holds. A hold nobody settles within
``HOLD_MS`` (its process died) is released by the next script that looks:
the message is delivered again rather than lost.

The global inbox index (for ``max-inboxes`` and the inbox count) is a sorted
set of names scored by a time (Redis ``TIME``, milliseconds) no earlier than
the inbox's expiry. It lives in its own slot, so scripts on an inbox cannot
update it: a script that moves an inbox's expiry past the score recorded in
the inbox (``ix``) records a new score half an inbox timeout later and returns
it, and the caller then sends TOUCH. An inbox therefore costs one index update
per half timeout, not one per request, and the index counts an inbox for at
most half an inbox timeout after it expired.

``-max-inboxes-per-ip`` counts the same way, in one more sorted set per client
network (``<prefix>:{net:<tag>}:inboxes``, its own slot): the network's set is
recorded in the inbox (``net``) when it is created, and every new score goes to
both indexes. Each index key expires with its latest entry, so a network that
stops coming leaves nothing behind.

Over Redis's ``maxmemory`` (policy ``noeviction``) Redis refuses the push of a
message that would wait in a queue, and a new inbox's index entry (the caller
answers 503); whatever drains the store goes on — GETs, hand-offs to a waiting
reader, put-backs, settles, TTL expiry (see ``over_maxmemory_too``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

#: How long a taken message stays held for a GET whose process does not settle it
#: (it died between the two round trips): then the message is queued again.
HOLD_MS = 10_000

_COMMON = (
    f"local HOLD_MS = {HOLD_MS}\n"
    + """
local function same(a, b)
  -- digests compared through a hash: the time taken says nothing about either
  return redis.sha1hex(a) == redis.sha1hex(b)
end
local function wake(token, kind)
  -- `<process channel>|n` (one Redis): PUBLISH there; `|<process>:n` (Cluster):
  -- SPUBLISH on the inbox's shard channel, heard only on this inbox's node
  local channel = string.match(token, '^(.*)|')
  if channel == '' then
    redis.call('SPUBLISH', string.sub(KEYS[1], 1, -2) .. 'w', kind .. token)
  elseif channel then
    redis.call('PUBLISH', channel, kind .. token)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire(ttl)
  -- → 0, or the new index score the caller must record with TOUCH
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  local deadline = now_ms() + tonumber(ttl)
  if deadline <= tonumber(redis.call('HGET', KEYS[1], 'ix') or '0') then return 0 end
  local score = deadline + math.floor(tonumber(ttl) / 2)
  redis.call('HSET', KEYS[1], 'ix', string.format('%.0f', score))
  return score
end
local function with_net(score)
  -- an index score for the caller to record (0: none), and the per-network
  -- index to record it in too ('' if the inbox counts in none)
  if score == 0 then return 0, '' end
  return score, redis.call('HGET', KEYS[1], 'net') or ''
end
local function put_back(message)
  -- at the front, but behind what an open socket holds unacknowledged
  local fl = tonumber(redis.call('HGET', KEYS[1], 'fl') or '0')
  if fl > 0 then
    redis.call('LINSERT', KEYS[2], 'AFTER', redis.call('LINDEX', KEYS[2], fl - 1), message)
    redis.call('HSET', KEYS[1], 'mix', '1')
  else
    redis.call('LPUSH', KEYS[2], message)
  end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local function holder()
  -- the token of the GET a taken message is held for, or false; a hold not
  -- settled in time (its process died) is released: the message comes again
  local held = redis.call('HMGET', KEYS[1], 'held', 'hdl', 'hm')
  if not held[1] then return false end
  if tonumber(held[2]) > now_ms() then return held[1] end
  redis.call('HDEL', KEYS[1], 'held', 'hdl', 'hm')
  if held[3] then put_back(held[3]) end
  return false
end
local function take(token)
  -- the oldest message, held for `token` until its process settles it
  local message = redis.call('LPOP', KEYS[2])
  if message then
    local deadline = string.format('%.0f', now_ms() + HOLD_MS)
    redis.call('HSET', KEYS[1], 'held', token, 'hdl', deadline, 'hm', message)
  end
  return message
end
local function message_id(message)
  return tonumber(string.match(message, '^(%d+):') or '0')
end
local function release()
  -- the open socket no longer reads: what it holds unacknowledged is simply
  -- queued again (it never left the front); after a put-back behind it, the
  -- queue is sorted by id again (stable: messages without an id keep their place)
  if not redis.call('HGET', KEYS[1], 'sock') then return end
  local mix = redis.call('HGET', KEYS[1], 'mix')
  redis.call('HDEL', KEYS[1], 'sock', 'fl', 'mix', 'full')
  if not mix then return end
  local all = redis.call('LRANGE', KEYS[2], 0, -1)
  local keyed = {}
  for i, m in ipairs(all) do keyed[i] = {message_id(m), i, m} end
  table.sort(keyed, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local ttl = redis.call('PTTL', KEYS[2])
  redis.call('DEL', KEYS[2])
  for i = 1, #keyed, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #keyed) do chunk[#chunk + 1] = keyed[j][3] end
    redis.call('RPUSH', KEYS[2], unpack(chunk))
  end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local function over_maxmemory_too()
  -- Redis refuses a script's first write that may grow memory (RPUSH, HSET...)
  -- while over maxmemory, but never stops a script that already wrote. This
  -- write changes nothing (no field is named '-'), and lets what follows
  -- through even then.
  redis.call('HDEL', KEYS[1], '-')
end
local function push(command, message, capacity)
  -- RPUSH (send) or LPUSH (put back); a message for a waiting reader that has
  -- none on its way yet is handed to it and does not count against capacity
  -- (a reader waiting behind a held message is woken when the hold is settled).
  -- Only a message that waits in the queue is refused when Redis is out of
  -- memory (maxmemory): not a hand-off, and never a put-back.
  -- A message sent gets the inbox's next id; a put-back keeps its own.
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
  local state = redis.call('HMGET', KEYS[1], 'reader', 'hand', 'fl', 'full')
  local reader, hand = state[1], state[2]
  -- (a socket whose window is full is not waiting: like a busy reader)
  local handing = reader and not hand and not state[4] and not holder()
  -- capacity is nil for a put-back (never refused); 0 is true in Lua, so
  -- -inbox-capacity 0 refuses everything but a hand-off, as intended. What an
  -- open socket holds unacknowledged is not queued.
  if capacity and not handing then
    local queued = redis.call('LLEN', KEYS[2]) - tonumber(state[3] or '0')
    if hand then queued = queued - 1 end
    if queued >= capacity then return 'full' end
  end
  if handing or not capacity then over_maxmemory_too() end
  if command == 'RPUSH' then
    local id = redis.call('HINCRBY', KEYS[1], 'id', 1)
    redis.call('RPUSH', KEYS[2], string.format('%.0f', id) .. ':' .. message)
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  else
    put_back(message)
  end
  if handing then
    redis.call('HSET', KEYS[1], 'hand', '1')
    wake(reader, 'M')
  end
  return 'ok'
end
"""
)

#: Open (create or check the password) and, unless ARGV[4] is "open", read.
#: ARGV: expected digest, digest to create with ("" = do not create), ttl ms,
#: mode: "open" (no touch, no read), "read" (read without waiting, unless the
#: oldest message is held for an earlier GET) or "wait" (read, or else register
#: as the waiting reader), index score reserved for a new inbox, the GET's token
#: (a message taken is held for it; see SETTLE), the per-network index a new
#: inbox counts in ("" for none), and for "socket" mode (an open WebSocket becomes
#: the reader, see TAKE) the generation to give an inbox that has none.
#: → {"missing"} | {"password", stored} | {"ok", 0, ttl ms}
#:   | {"message", score, m, net} | {"empty", score, net} | {"waiting", score, net}
#:   | {"socket", score, generation, net}
_ENTER_LUA = (
    _COMMON
    + """
local stored = redis.call('HGET', KEYS[1], 'pw')
if not stored then
  if ARGV[2] == '' then return {'missing'} end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'pw', ARGV[2], 'ix', ARGV[5])
  if ARGV[7] and ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'net', ARGV[7]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif not same(stored, ARGV[1]) then
  return {'password', stored}
end
local mode = ARGV[4]
if mode == 'open' then return {'ok', 0, redis.call('PTTL', KEYS[1])} end
-- a GET drains the store, so it goes on when Redis is out of memory: what it
-- writes (its token, a hold) is bounded by the readers, not by the senders
over_maxmemory_too()
local old = redis.call('HGET', KEYS[1], 'reader')
if old then
  -- newest reader wins: the older one, wherever it waits, answers 204 (a
  -- socket closes with 4409, its unacknowledged messages queued again)
  wake(old, 'S')
  redis.call('HDEL', KEYS[1], 'reader', 'hand')
end
release()
if mode == 'socket' then
  -- an open socket becomes the reader; the inbox's generation is drawn once
  redis.call('HSET', KEYS[1], 'reader', ARGV[6], 'sock', ARGV[6])
  redis.call('HSETNX', KEYS[1], 'gen', ARGV[8])
  local score, net = with_net(expire(ARGV[3]))
  return {'socket', score, redis.call('HGET', KEYS[1], 'gen'), net}
end
-- behind a held message (an earlier GET's, not settled yet) nothing is taken:
-- it may come back to the front; a waiting reader is woken once it is settled
-- (a GET that does not wait for messages waits for that one)
local message = false
local held = holder()
if not held then message = take(ARGV[6]) end
local waits = not message and (mode == 'wait' or held)
if waits then redis.call('HSET', KEYS[1], 'reader', ARGV[6]) end
local score, net = with_net(expire(ARGV[3]))
if message then return {'message', score, message, net} end
if waits then return {'waiting', score, net} end
return {'empty', score, net}
"""
)

#: Queue a message; wake the waiting reader if there is one.
#: ARGV: encoded message, capacity. → "ok" | "missing" | "full"
_SEND_LUA = (
    _COMMON
    + """
return push('RPUSH', ARGV[1], tonumber(ARGV[2]))
"""
)

#: A woken reader takes the oldest message, if it is still the inbox's reader
#: (and no earlier GET's message is held). The message is held for it: see SETTLE.
#: ARGV: token, ttl ms. → {"message", score, m, net} | {"waiting", 0} | {"superseded", 0}
_CLAIM_LUA = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'reader') ~= ARGV[1] then return {'superseded', 0} end
if holder() then return {'waiting', 0} end
local message = take(ARGV[1])
if not message then return {'waiting', 0} end
redis.call('HDEL', KEYS[1], 'reader', 'hand')
local score, net = with_net(expire(ARGV[2]))
return {'message', score, message, net}
"""
)

#: A reader stops waiting (timeout, client gone, superseded, shutdown): the GET
#: finished, so the inbox's clock restarts, unless a newer reader now waits.
#: ARGV: token, ttl ms. → {"left", score, net} | {"left", 0}
_LEAVE_LUA = (
    _COMMON
    + """
local reader = redis.call('HGET', KEYS[1], 'reader')
if reader == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'reader', 'hand')
  reader = false
end
if not reader and redis.call('EXISTS', KEYS[1]) == 1 then
  return {'left', with_net(expire(ARGV[2]))}
end
return {'left', 0}
"""
)

#: Keep the inbox of a waiting reader alive; also tells the reader what it missed.
#: ARGV: token, ttl ms. → {"ok" | "message", score, net} | {"superseded", 0}
_REFRESH_LUA = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'reader') ~= ARGV[1] then return {'superseded', 0} end
local score, net = with_net(expire(ARGV[2]))
local ahead = tonumber(redis.call('HGET', KEYS[1], 'fl') or '0')
if not holder() and redis.call('LLEN', KEYS[2]) > ahead then return {'message', score, net} end
return {'ok', score, net}
"""
)

#: The GET a message was held for is done with it: ARGV[2] "keep" (its client
#: was there: the message is delivered) or "back" (its client left: the message
#: goes back to the front of the queue). Then a reader waiting behind the hold
#: is woken if there is a message for it.
#: ARGV: token, "keep" | "back". → 1, or 0 if no message is held for this token
_SETTLE_LUA = (
    _COMMON
    + """
local held = redis.call('HMGET', KEYS[1], 'held', 'hm')
if held[1] ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'held', 'hdl', 'hm')
if ARGV[2] == 'back' then put_back(held[2]) end
local state = redis.call('HMGET', KEYS[1], 'reader', 'hand')
if state[1] and not state[2] and redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('HSET', KEYS[1], 'hand', '1')
  wake(state[1], 'M')
end
return 1
"""
)

#: Put back, at the front, a message whose delivery failed (no capacity check).
#: ARGV: encoded message. → "ok" | "missing"
_REQUEUE_LUA = (
    _COMMON
    + """
return push('LPUSH', ARGV[1], nil)
"""
)

#: An open socket takes up to ARGV[2] messages after those it holds (they stay
#: in the queue, counted in ``fl``, until ACK), unless a newer reader took over;
#: behind a message held for a GET it takes nothing (it is woken when that is settled).
#: ARGV: token, room. → {"messages", 0, {m...}} | {"waiting", 0} | {"superseded", 0}
_TAKE_LUA = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'sock') ~= ARGV[1] then return {'superseded', 0} end
over_maxmemory_too()
redis.call('HDEL', KEYS[1], 'hand')
if holder() then return {'waiting', 0} end
local fl = tonumber(redis.call('HGET', KEYS[1], 'fl') or '0')
local batch = redis.call('LRANGE', KEYS[2], fl, fl + tonumber(ARGV[2]) - 1)
if #batch == 0 then return {'waiting', 0} end
redis.call('HSET', KEYS[1], 'fl', fl + #batch)
if #batch == tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'full', '1') end
return {'messages', 0, batch}
"""
)

#: An open socket's client acknowledged its first ARGV[2] messages: off the queue.
#: ARGV: token, count. → 1, or 0 if the socket no longer reads (they come again)
_ACK_LUA = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'sock') ~= ARGV[1] then return 0 end
over_maxmemory_too()
local fl = tonumber(redis.call('HGET', KEYS[1], 'fl') or '0')
local done = math.min(fl, tonumber(ARGV[2]))
if done > 0 then
  redis.call('LTRIM', KEYS[2], done, -1)
  redis.call('HDEL', KEYS[1], 'full')
  if fl > done then
    redis.call('HSET', KEYS[1], 'fl', fl - done)
  else
    redis.call('HDEL', KEYS[1], 'fl', 'mix')
  end
end
return 1
"""
)

#: An open socket closes: what it holds unacknowledged is queued again (it is at
#: the front already), and its inbox's clock restarts (closing counts as a read).
#: ARGV: token, ttl ms. → {"left", score, net} | {"left", 0}
_RELEASE_LUA = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'sock') ~= ARGV[1] then return {'left', 0} end
over_maxmemory_too()
release()
redis.call('HDEL', KEYS[1], 'reader', 'hand')
return {'left', with_net(expire(ARGV[2]))}
"""
)

_KEEP_ALIVE = """
local function keep_alive()
  -- an index key lives as long as its latest entry: one nobody adds to vanishes
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(last[2]))) end
end
"""

_INDEX_COMMON = (
    """
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
    + _KEEP_ALIVE
)

#: Make room for a new inbox in an index, or refuse: the global one (max-inboxes) or
#: a network's (max-inboxes-per-ip).
#: KEYS: index. ARGV: name, most entries, ttl ms. → the entry's score, or 0 when full
_RESERVE_LUA = (
    _INDEX_COMMON
    + """
prune()
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and live() >= tonumber(ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[3])
local score = now + ttl + math.floor(ttl / 2)
redis.call('ZADD', KEYS[1], ms(score), ARGV[1])
keep_alive()
return score
"""
)

#: Record a later score for an indexed inbox (the score an inbox script returned).
#: KEYS: index. ARGV: name, score. → 0 | 1
_TOUCH_LUA = (
    _KEEP_ALIVE
    + """
local changed = redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', ARGV[2], ARGV[1])
if changed == 1 then keep_alive() end
return changed
"""
)

#: How many inboxes live. KEYS: index. → count
_COUNT_LUA = (
    _INDEX_COMMON
    + """
prune()
return live()
"""
)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1, run with EVALSHA (loaded again if Redis lost it)."""

    source: bytes
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        raw = source.encode()
        return cls(raw, hashlib.sha1(raw).hexdigest())


ENTER = Script.of(_ENTER_LUA)
SEND = Script.of(_SEND_LUA)
CLAIM = Script.of(_CLAIM_LUA)
LEAVE = Script.of(_LEAVE_LUA)
REFRESH = Script.of(_REFRESH_LUA)
REQUEUE = Script.of(_REQUEUE_LUA)
SETTLE = Script.of(_SETTLE_LUA)
RESERVE = Script.of(_RESERVE_LUA)
TOUCH = Script.of(_TOUCH_LUA)
COUNT = Script.of(_COUNT_LUA)
TAKE = Script.of(_TAKE_LUA)
ACK = Script.of(_ACK_LUA)
RELEASE = Script.of(_RELEASE_LUA)
SCRIPTS = (ENTER, SEND, CLAIM, LEAVE, REFRESH, REQUEUE, SETTLE, RESERVE, TOUCH, COUNT, TAKE, ACK, RELEASE)

#: (script, keys, arguments)
Call = tuple[Script, Sequence[bytes], Sequence[bytes | int]]
