"""The Lua scripts of the Redis engine: every state change of a message, each atomic.

A script touches only the keys it is given in KEYS (their names come from
`redis_keys`); key names that depend on a record (its app, batch, idempotency
key) are derived by the caller from the record's immutable fields. Each script
documents its KEYS and ARGV. Every ARGV value is a string: times are Python
`repr(float)`s (exact), compared with `tonumber`; msgids stay decimal strings.

The `#!lua` line makes Redis (7.0+) refuse a script before it runs when memory
is full, so a script is never cut off half way by an out-of-memory error.

A record's two long values, its payload and its events, are kept in chunks of at most
CHUNK bytes (`write_long`), so that every value of the hash stays within Redis's
`hash-max-listpack-value` (64 by default) and the hash in its compact listpack
encoding: one long field would turn the whole hash into a hashtable, about twice the
memory (docs/design.md, "Redis memory"). Records stored before keep their `payload` and
`events` fields; every script reads both shapes and rewrites the events in chunks.
Fields have short names (SHORT_NAMES); a record stored before them keeps its long
names, and each script takes the names of the record it touches (`names`).

"Book" is the block of ten keys a status change updates: the counters of
everyone, of the app and of the batch (the message key itself stands in when
there is no batch; it is then never touched), and the seven status indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from wxgate.backends.base import (
    MAX_EVENTS,
    RECORD_FIELDS,
    REPLAYABLE,
    SETTLED,
    EventKind,
    Status,
)
from wxgate.backends.redis_keys import GROUP, HOOKS_GROUP

BOOK_SIZE: Final = 3 + len(Status)

_STATUSES = ", ".join(f"'{status.value}'" for status in Status)
_SETTLED = ", ".join(f"{status.value} = true" for status in sorted(SETTLED))
_REPLAYABLE = ", ".join(f"{status.value} = true" for status in sorted(REPLAYABLE))
# A lease hands back the record's fields (events apart) in base.RECORD_FIELDS order,
# the payload put together from its chunks.
_PAYLOAD_AT = RECORD_FIELDS.index("payload") + 1  # its place in HMGET's answer (Lua: from 1)
CHUNK: Final = 64  # bytes per chunk of a long value: Redis's default hash-max-listpack-value
# A long value's fields: `<name>` holds how many chunks, `<name>1`.. the chunks.
PAYLOAD_CHUNKS: Final = "p"
EVENTS_CHUNKS: Final = "e"
# A record's field names. A record written by this version has these short names and
# keeps neither its id (its key has it), its ref (made from id, app and batch), its
# recipient and template id (its payload has them), its count of events (its lines
# are counted) nor its kind when it is a template message (the default); its
# `updated_at` and `next_attempt_at` are written only when they first differ from its
# `created_at` (read as it until then). A record stored before has the
# long names (it has a `status` field), and every script and read keeps to the names
# the record has (`names` below, `_record` in redis.py).
SHORT_NAMES: Final = {
    "id": "id",  # never stored: read from the key
    "app": "a",
    "touser": "u",  # never stored: read from the payload
    "template_id": "template_id",  # never stored: read from the payload
    "payload": "payload",  # in chunks (`p`, `p1`, ...), as in a record stored before
    "status": "s",
    "attempts": "n",
    "next_attempt_at": "nt",
    "idempotency_key": "k",
    "msgid": "m",
    "last_errcode": "ec",
    "last_errmsg": "em",
    "last_category": "lc",
    "report_status": "rs",
    "trace_id": "tr",
    "batch_id": "b",
    "batch_position": "bp",
    "created_at": "ct",
    "updated_at": "ut",
    "sent_at": "st",
    "delivered_at": "dt",
    "kind": "kd",
    "urgent": "ur",
    "send_at": "sa",
    "notify": "nf",
    "callback_url": "cb",
    "n_events": "ne",  # never stored: the event lines are counted
    "lease_owner": "lo",
    "lease_token": "lt",
    "lease_deadline": "ld",
    "lease_entry": "le",
}
LONG_NAMES: Final = {name: name for name in SHORT_NAMES} | {"ref": "ref"}
# A status no status index keeps: listing it walks the app indexes (redis.py), as
# nearly every message ends in it and an index entry costs ~120 bytes.
UNINDEXED: Final = frozenset({Status.DELIVERED})
_LEASED_LONG = ", ".join(f"'{name}'" for name in RECORD_FIELDS)
_LEASED_SHORT = ", ".join(f"'{SHORT_NAMES[name]}'" for name in RECORD_FIELDS)


def either(*names: str) -> list[str]:
    """HMGET's fields for record fields `names` in both namings (short, long): a record
    has one of the two; `picked` reads the answer."""
    return [name for field in names for name in (SHORT_NAMES[field], field)]


def long_value(fields: dict[str, str], name: str, old: str) -> str | None:
    """A long value of a record (HGETALL), put together from its chunks (`write_long`);
    from its one field `old` in a record stored before values were chunked."""
    count = fields.get(name)
    if count is None:
        return fields.get(old)
    return "".join(fields.get(f"{name}{n}", "") for n in range(1, int(count) + 1))


def picked(values: Sequence[str | None]) -> list[str | None]:
    """One value per field of an HMGET of `either`."""
    pairs = zip(values[::2], values[1::2], strict=True)
    return [short if short is not None else long for short, long in pairs]


_UNINDEXED = ", ".join(f"{status.value} = true" for status in sorted(UNINDEXED))
_SHORT = ", ".join(f"{k} = '{v}'" for k, v in SHORT_NAMES.items())
_LONG = ", ".join(f"{k} = '{v}'" for k, v in LONG_NAMES.items())

_PRELUDE = f"""#!lua
local STATUSES = {{{_STATUSES}}}
local UNINDEXED = {{{_UNINDEXED}}}
local SHORT, LONG = {{{_SHORT}}}, {{{_LONG}}}
local LEASED_SHORT, LEASED_LONG = {{{_LEASED_SHORT}}}, {{{_LEASED_LONG}}}
local SETTLED = {{{_SETTLED}}}
local REPLAYABLE = {{{_REPLAYABLE}}}
local GROUP = '{GROUP}'
local HOOKS_GROUP = '{HOOKS_GROUP}'
local MAX_EVENTS = {MAX_EVENTS}
local LEASE_EXPIRED, REPORT = '{EventKind.LEASE_EXPIRED}', '{EventKind.REPORT}'
local CHUNK = {CHUNK}

-- The field names of a record: long in one stored before short names (it has `status`).
-- A record that does not exist gets the short ones (every read of it is nil).
local function names(msg)
  if redis.call('HEXISTS', msg, 'status') == 1 then return LONG end
  return SHORT
end

-- A long value in chunks of at most CHUNK bytes, cut between UTF-8 characters.
local function chunks(value)
  local out, i, n = {{}}, 1, #value
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    while j < n and j > i do
      local next_byte = string.byte(value, j + 1)
      if next_byte < 128 or next_byte >= 192 then break end
      j = j - 1
    end
    out[#out + 1] = string.sub(value, i, j)
    i = j + 1
  end
  return out
end

-- A long value (payload: name 'p', old field 'payload'; events: 'e', 'events'), or nil.
local function read_long(msg, name, old)
  local k = redis.call('HGET', msg, name)
  if not k then
    local value = redis.call('HGET', msg, old)
    return value or nil
  end
  local names = {{}}
  for i = 1, tonumber(k) do names[i] = name .. i end
  if #names == 0 then return '' end
  return table.concat(redis.call('HMGET', msg, unpack(names)))
end

-- Writes a long value in chunks (what a longer one left behind, and the old field, go).
local function write_long(msg, name, old, value)
  local before = tonumber(redis.call('HGET', msg, name) or '0')
  local parts = chunks(value)
  local args = {{name, #parts}}
  for i, part in ipairs(parts) do
    args[#args + 1] = name .. i
    args[#args + 1] = part
  end
  redis.call('HSET', msg, unpack(args))
  for i = #parts + 1, before do redis.call('HDEL', msg, name .. i) end
  if before == 0 then redis.call('HDEL', msg, old) end
end

local function book(first, has_batch)
  local b = {{counts = KEYS[first], app = KEYS[first + 1], idx = {{}}}}
  if has_batch then b.batch = KEYS[first + 2] end
  for i, status in ipairs(STATUSES) do b.idx[status] = KEYS[first + 2 + i] end
  return b
end

local function count(b, status, by)
  redis.call('HINCRBY', b.counts, status, by)
  redis.call('HINCRBY', b.app, status, by)
  if b.batch then redis.call('HINCRBY', b.batch, status, by) end
end

local function move(b, id, from, to)
  if from then
    count(b, from, -1)
    redis.call('ZREM', b.idx[from], id)
  end
  if to then
    count(b, to, 1)
    if not UNINDEXED[to] then redis.call('ZADD', b.idx[to], 0, id) end
  end
end

local function has_batch(msg, N)
  return redis.call('HEXISTS', msg, N.batch_id) == 1
end

-- Events are lines; past MAX_EVENTS the oldest line is dropped. `n` is how many there
-- are (nil: counted here; a record with short names keeps no count).
local function appended(events, n, line)
  if not n then
    n = 0
    if events and events ~= '' then n = select(2, string.gsub(events, '\\n', '')) + 1 end
  end
  n = tonumber(n) + 1
  if events and events ~= '' then events = events .. '\\n' .. line else events = line end
  while n > MAX_EVENTS do
    events = string.sub(events, string.find(events, '\\n', 1, true) + 1)
    n = n - 1
  end
  return events, n
end

local function add_event(msg, N, line)
  local events, n = appended(read_long(msg, 'e', 'events'), redis.call('HGET', msg, N.n_events),
    line)
  write_long(msg, 'e', 'events', events)
  if N == LONG then redis.call('HSET', msg, N.n_events, n) end
end

-- An event whose note is known only here, as redis.py's _line writes it: `<at> <kind>`,
-- a tab and the note; JSON when the note has a line break (`at` is a JSON number).
local function event(at, kind, note)
  if string.find(note, '\\n', 1, true) then
    return '{{"at":' .. at .. ',"kind":"' .. kind .. '","note":' .. cjson.encode(note) .. '}}'
  end
  if note == '' then return at .. ' ' .. kind end
  return at .. ' ' .. kind .. '\\t' .. note
end

local function set_or_clear(msg, field, value)
  if value == '' then redis.call('HDEL', msg, field) else redis.call('HSET', msg, field, value) end
end

-- What purge needs when the record itself has expired. A record stored before short
-- names: [ref, status, key, msgid] (its stored ref); else [id, app, batch, status, key,
-- msgid], which does not quote a ref inside a string (about 30 bytes less).
local function member(N, id, ref, app, batch, status, key, msgid)
  if N == LONG then return cjson.encode({{ref, status, key or '', msgid or ''}}) end
  return cjson.encode({{id, app, batch or '', status, key or '', msgid or ''}})
end

local function settled_member(msg, N, id, status)
  local f = redis.call('HMGET', msg, N.ref or N.app, N.app, N.batch_id, N.idempotency_key, N.msgid)
  return member(N, id, f[1], f[2], f[3], status, f[4], f[5])
end

local function settle_record(msg, N, id, settled, status, now, retention)
  redis.call('EXPIRE', msg, retention)
  redis.call('ZADD', settled, now, settled_member(msg, N, id, status))
end

-- An app's stream and its consumer group exist from its first message on (a lease
-- call reads the stream of every app it knows).
local function ensure_stream(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
end

local function push(stream, ref)
  ensure_stream(stream)
  redis.call('XADD', stream, '*', 'ref', ref)
end

-- The webhook outbox entry of a move into a settled status, if the message asked for
-- one: a snapshot of the record as just written, in the same script as the move.
local function notify(msg, N, hooks, id, status, now)
  if redis.call('HGET', msg, N.notify) ~= '1' then return end
  if redis.call('EXISTS', hooks) == 0 then
    redis.call('XGROUP', 'CREATE', hooks, HOOKS_GROUP, '0', 'MKSTREAM')
  end
  local f = redis.call('HMGET', msg, N.last_errcode, N.last_errmsg, N.msgid)
  redis.call('XADD', hooks, '*', 'message_id', id, 'status', status, 'at', now,
    'errcode', f[1] or '', 'errmsg', f[2] or '', 'msgid', f[3] or '')
end

local function ack(stream, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, GROUP, entry)
    redis.call('XDEL', stream, entry)
  end
end

-- A dedupe key holds "<id>\\31<digest>" (a bare id, from before digests were kept).
local function owned_by(key, id)
  local value = redis.call('GET', key)
  return value == id or (value and string.sub(value, 1, #id + 1) == id .. '\\31')
end

local function end_lease(msg, N)
  redis.call('HDEL', msg, N.lease_owner, N.lease_token, N.lease_deadline, N.lease_entry)
end
"""

# KEYS: counts, apps, the batch's hash (any key when the call names no batch), settled,
#   then the status indexes (in Status order); then per message 10
#   keys: message, dedupe key (the idempotency key, or the batch-position key of a
#   keyed batch's member; the message key when none), ready(app), retry(app),
#   app_counts, index_app, batch, index_batch (the message key when no batch),
#   hooks(app), idempotency bucket (the message key when none).
# ARGV: now, dedupe ttl, retention, the batch's digest ('' for none); then per message
#   PER values: id, app, touser, template_id (not stored: the payload has it), payload,
#   idempotency_key, trace_id, batch_id, ref, dedupe ('1' when the message has a dedupe
#   key; 'h' when it has an idempotency key, kept as a field of its bucket (and looked
#   up also in the dedupe key, where a version before buckets kept it); 'x' when its key
#   was claimed before, in a slot of its own: the message is then stored unless its
#   record exists, and answered as a repeat if it does), digest, batch_position, status
#   (queued, scheduled, or a settled verdict), next_attempt_at, events (lines), event
#   count (not stored), kind, urgent ('1'/''), send_at, errcode, errmsg, notify
#   ('1'/''), callback_url ('' for an absent optional value), the bucket's field.
# Every key is checked before anything is written. Returns per message '' (stored) or
# the id of the first message with its dedupe key; or {'!', n}: the n-th message's key
# (n = 0: the batch) was stored for a request with another digest, and nothing was
# written. A dedupe key holds "<id>\\31<digest>" (a bare id from before digests).
# A queued message joins its app's stream, a scheduled one its retry set (due at
# send_at); a settled one (a verdict) joins no queue and expires after retention.
ENQUEUE: Final = (
    _PRELUDE
    + f"""
local now, ttl, retention, batch_digest = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local PER = 24
local FIRST = 4 + {len(Status)}
local count = (#ARGV - 4) / PER
local INDEX = {{}}
for i, status in ipairs(STATUSES) do INDEX[status] = KEYS[4 + i] end
"""
    + """
local function split(value)
  local cut = string.find(value, '\\31', 1, true)
  if not cut then return value, '' end
  return string.sub(value, 1, cut - 1), string.sub(value, cut + 1)
end

if batch_digest ~= '' then
  local stored = redis.call('HGET', KEYS[3], 'digest')
  if stored and stored ~= batch_digest then return {'!', 0} end
end
local firsts, pending = {}, {}
for i = 0, count - 1 do
  local a = 4 + i * PER
  local dedupe = ARGV[a + 10]
  if dedupe == '1' or dedupe == 'h' then
    local idem, digest = KEYS[FIRST + i * 10 + 2], ARGV[a + 11]
    local slot, value = idem, nil
    if dedupe == 'h' then  -- the bucket's field, or the key of a version before buckets
      slot = KEYS[FIRST + i * 10 + 10] .. '\\0' .. ARGV[a + 24]
      value = pending[slot] or redis.call('HGET', KEYS[FIRST + i * 10 + 10], ARGV[a + 24])
    end
    value = value or pending[slot] or redis.call('GET', idem)
    if value then
      local first, stored = split(value)
      if stored ~= '' and digest ~= '' and stored ~= digest then return {'!', i + 1} end
      firsts[i + 1] = first
    else
      pending[slot] = ARGV[a + 1] .. '\\31' .. digest
    end
  elseif dedupe == 'x' then
    local msg = KEYS[FIRST + i * 10 + 1]
    if pending[msg] or redis.call('EXISTS', msg) == 1 then
      firsts[i + 1] = ARGV[a + 1]
    else
      pending[msg] = true
    end
  end
end

local function put(msg, field, value)
  if value ~= '' then redis.call('HSET', msg, field, value) end
end

local answers = {}
for i = 0, count - 1 do
  local k, a = FIRST + i * 10, 4 + i * PER
  local msg, idem, stream, retry = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local id, app, batch_id, ref, status = ARGV[a + 1], ARGV[a + 2], ARGV[a + 8], ARGV[a + 9],
    ARGV[a + 13]
  if firsts[i + 1] then
    answers[i + 1] = firsts[i + 1]
  else
    if ARGV[a + 10] == '1' then
      redis.call('SET', idem, id .. '\\31' .. ARGV[a + 11], 'EX', ttl)
    elseif ARGV[a + 10] == 'h' then
      redis.call('HSET', KEYS[k + 10], ARGV[a + 24], id .. '\\31' .. ARGV[a + 11])
    end
    local N = SHORT  -- no id (the key has it), ref, touser or template id (the payload)
    -- updated_at, and next_attempt_at unless it is send_at, are created_at until written.
    redis.call('HSET', msg, N.app, app, N.status, status, N.attempts, 0, N.created_at, now)
    if ARGV[a + 14] ~= now then redis.call('HSET', msg, N.next_attempt_at, ARGV[a + 14]) end
    write_long(msg, 'p', 'payload', ARGV[a + 5])
    write_long(msg, 'e', 'events', ARGV[a + 15])
    if ARGV[a + 17] ~= 'template' then put(msg, N.kind, ARGV[a + 17]) end  -- the default
    put(msg, N.idempotency_key, ARGV[a + 6])
    put(msg, N.trace_id, ARGV[a + 7])
    put(msg, N.batch_id, batch_id)
    put(msg, N.batch_position, ARGV[a + 12])
    put(msg, N.urgent, ARGV[a + 18])
    put(msg, N.send_at, ARGV[a + 19])
    put(msg, N.last_errcode, ARGV[a + 20])
    put(msg, N.last_errmsg, ARGV[a + 21])
    put(msg, N.notify, ARGV[a + 22])
    put(msg, N.callback_url, ARGV[a + 23])
    ensure_stream(stream)
    if status == 'queued' then
      push(stream, ref)
    elseif status == 'scheduled' then
      redis.call('ZADD', retry, ARGV[a + 14], ref)
    else
      settle_record(msg, N, id, KEYS[4], status, now, retention)
      notify(msg, N, KEYS[k + 9], id, status, now)
    end
    redis.call('SADD', KEYS[2], app)
    redis.call('HINCRBY', KEYS[1], status, 1)
    redis.call('HINCRBY', KEYS[k + 5], status, 1)
    if not UNINDEXED[status] then redis.call('ZADD', INDEX[status], 0, id) end
    redis.call('ZADD', KEYS[k + 6], 0, id)
    if batch_id ~= '' then
      redis.call('HINCRBY', KEYS[k + 7], status, 1)
      redis.call('HINCRBY', KEYS[k + 7], 'total', 1)
      redis.call('ZADD', KEYS[k + 8], 0, id)
    end
    answers[i + 1] = ''
  end
  -- Every batch named exists, even one whose messages all repeated known keys.
  if batch_id ~= '' then redis.call('HSETNX', KEYS[k + 7], 'created_at', now) end
end
if batch_digest ~= '' then redis.call('HSETNX', KEYS[3], 'digest', batch_digest) end
return answers
"""
)

# Retry times that have come: one app's retry set back to its ready stream.
# KEYS: retry(app), ready(app). ARGV: now, most to move. Returns how many moved.
PROMOTE: Final = (
    _PRELUDE
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, ref in ipairs(due) do
  push(KEYS[2], ref)
end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return #due
"""
)

# Lease one message, found as a stream entry (read or claimed) or as an expired lease.
# KEYS: message, ready(app), retry(app), leases, then the book (5..14).
# ARGV: id, ref, entry ('' for an expired lease), now, deadline, token, owner,
#   mode ('lease', or 'park': back to the retry set at requeue_at), requeue_at.
# Returns the record's RECORD_FIELDS when leased (its id from ARGV), else false. An
# entry whose message is not leasable is never lost: settled or gone -> acknowledged; not yet due or
# parked -> acknowledged and put in the retry set; live lease -> left alone.
LEASE: Final = (
    _PRELUDE
    + f"""
local msg, stream, retry, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, ref, entry, now, deadline, token, owner, mode, requeue_at = unpack(ARGV)
local N = names(msg)
local f = redis.call('HMGET', msg, N.status, N.batch_id, N.next_attempt_at, N.lease_entry,
  N.lease_deadline, N.lease_owner, N.created_at)
local status, stored = f[1], f[4]
if not status or SETTLED[status] then
  ack(stream, entry)
  redis.call('ZREM', leases, ref)
  return false
end
local b = book(5, f[2])
if status == 'queued' or status == 'scheduled' then
  if entry == '' then
    redis.call('ZREM', leases, ref)
    return false
  end
  local due = f[3] or f[7]  -- a new record's next_attempt_at is its created_at until written
  if mode == 'park' or tonumber(due) > tonumber(now) then
    if mode == 'park' and tonumber(requeue_at) > tonumber(due) then due = requeue_at end
    ack(stream, entry)
    redis.call('ZADD', retry, due, ref)
    return false
  end
  move(b, id, status, 'sending')
else
  if entry ~= '' and stored and entry ~= stored then
    ack(stream, entry)
    return false
  end
  if tonumber(f[5]) > tonumber(now) then return false end
  redis.call('HINCRBY', msg, N.attempts, 1)
  add_event(msg, N, event(now, LEASE_EXPIRED, 'lease of ' .. (f[6] or '?') .. ' expired'))
  if mode == 'park' then
    ack(stream, stored or entry)
    redis.call('ZREM', leases, ref)
    redis.call('ZADD', retry, requeue_at, ref)
    end_lease(msg, N)
    redis.call('HSET', msg, N.status, 'queued', N.updated_at, now)
    move(b, id, 'sending', 'queued')
    return false
  end
  if entry == '' then entry = stored end
end
redis.call('HSET', msg, N.status, 'sending', N.lease_owner, owner, N.lease_token, token,
  N.lease_deadline, deadline, N.next_attempt_at, deadline, N.updated_at, now,
  N.lease_entry, entry or '')
redis.call('ZADD', leases, deadline, ref)
local leased = redis.call('HMGET', msg, unpack(N == LONG and LEASED_LONG or LEASED_SHORT))
leased[1] = id
leased[{_PAYLOAD_AT}] = read_long(msg, 'p', 'payload')
return leased
"""
)

# Settle one lease, if its token still holds it.
# KEYS: message, ready(app), retry(app), leases, dead, settled, dedupe key (the
#   message key when none), msgid bucket (the message key when none), pending report
#   (likewise), hooks(app), recent_sends(app, touser), pause(app), then the book
#   (13..), then the bucket of the msgid the record has (the message key when none).
# ARGV: id, token, now, target status, counted (0/1), next_attempt_at ('' none),
#   msgid ('' none), answered ('1'/''), errcode, errmsg, category, event line,
#   retention seconds, recent_sends window seconds, while_paused ('1'/''): a release
#   because the app is paused is due now when no pause is in force any more; ref (a
#   record stored before short names has its own).
# Returns 1 when written, 0 when the lease was lost (nothing written).
SETTLE: Final = (
    _PRELUDE
    + """
local msg, stream, retry, leases, dead, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local id, token, now, target, counted, next_at, msgid, answered, errcode, errmsg, category, line,
  retention, recent, while_paused, given_ref = unpack(ARGV)
local N = names(msg)
local f = redis.call('HMGET', msg, N.status, N.lease_token, N.lease_entry, N.ref or N.app,
  N.batch_id, N.idempotency_key, N.msgid, N.app, N.n_events, N.attempts)
if f[1] ~= 'sending' or f[2] ~= token then return 0 end
local ref, key, stored_msgid = given_ref, f[6], f[7]
if N == LONG then ref = f[4] end
if while_paused == '1' then
  local pause = redis.call('GET', KEYS[12])
  local ends = pause and cjson.decode(pause)['until']
  if not pause or (type(ends) == 'number' and ends <= tonumber(now)) then next_at = now end
end
local set = {N.status, target, N.updated_at, now, N.attempts, tonumber(f[10]) + counted}
local clear = {N.lease_owner, N.lease_token, N.lease_deadline, N.lease_entry}
local function put(field, value)
  if value == '' then
    clear[#clear + 1] = field
  else
    set[#set + 1] = field
    set[#set + 1] = value
  end
end
if next_at ~= '' then put(N.next_attempt_at, next_at) end
if answered == '1' then
  put(N.last_errcode, errcode)
  put(N.last_errmsg, errmsg)
  put(N.last_category, category)
end
local events, n = appended(read_long(msg, 'e', 'events'), f[9], line)
local final = target
if target == 'queued' then
  redis.call('ZADD', retry, next_at, ref)
elseif target == 'sent' then
  put(N.sent_at, now)
  if msgid ~= '' then
    put(N.msgid, msgid)
    -- A msgid is a field of its bucket; one this message was sent with before (it was
    -- replayed) goes, as purge will only know the new one.
    local before = stored_msgid
    if before and before ~= msgid and redis.call('HGET', KEYS[#KEYS], before) == id then
      redis.call('HDEL', KEYS[#KEYS], before)
    end
    stored_msgid = msgid
    redis.call('HSET', KEYS[8], msgid, id)
    -- The report may have beaten this settle; it waits under the msgid.
    local kept = redis.call('GET', KEYS[9])
    if kept then
      local report = cjson.decode(kept)
      redis.call('DEL', KEYS[9])
      final = report.target
      set[2] = final
      put(N.report_status, report.status)
      put(N.delivered_at, report.received_at)
      events, n = appended(events, n, event(now, REPORT, report.status))
    end
  end
elseif target == 'dead' then
  redis.call('ZADD', dead, now, ref)
end
write_long(msg, 'e', 'events', events)
if N == LONG then put(N.n_events, n) end
-- The new state is written before the stream entry is acknowledged, in this one script.
redis.call('HDEL', msg, unpack(clear))
redis.call('HSET', msg, unpack(set))
ack(stream, f[3])
redis.call('ZREM', leases, ref)
move(book(13, f[5]), id, 'sending', final)
if target == 'sent' or target == 'unknown' then
  redis.call('ZADD', KEYS[11], now, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', '(' .. (tonumber(now) - tonumber(recent)))
  redis.call('EXPIRE', KEYS[11], recent)
end
if SETTLED[target] then notify(msg, N, KEYS[10], id, target, now) end
if final ~= target then notify(msg, N, KEYS[10], id, final, now) end
if SETTLED[final] then
  redis.call('EXPIRE', msg, retention)
  redis.call('ZADD', settled, now, member(N, id, ref, f[8], f[5], final, key, stored_msgid))
  if KEYS[7] ~= msg and owned_by(KEYS[7], id) then redis.call('EXPIRE', KEYS[7], retention) end
end
return 1
"""
)

# A delivery report whose msgid is not stored yet is kept a while (the first one wins).
# KEYS: msgid (a version before buckets kept it there), pending report, msgid bucket.
# ARGV: report JSON, ttl seconds, msgid.
# Returns the message id when the msgid is stored (nothing kept), else false.
KEEP_REPORT: Final = """#!lua
local id = redis.call('HGET', KEYS[3], ARGV[3]) or redis.call('GET', KEYS[1])
if id then return id end
redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2])
return false
"""

# sent -> delivered/rejected (a report); sent or unknown -> delivered/failed (a subscribe
# sent event, with also_unknown "1").
# KEYS: message, settled, hooks(app), then the book (4..).
# ARGV: id, report status, target status, now, retention seconds[, also_unknown].
# Returns {status, changed (0/1)}, or false when the record is gone.
REPORT: Final = (
    _PRELUDE
    + """
local msg, settled = KEYS[1], KEYS[2]
local id, report, target, now, retention, also_unknown = unpack(ARGV)
local N = names(msg)
local status = redis.call('HGET', msg, N.status)
if not status then return false end
if status ~= 'sent' and not (also_unknown == '1' and status == 'unknown') then
  return {status, 0}
end
redis.call('ZREM', settled, settled_member(msg, N, id, status))
redis.call('HSET', msg, N.status, target, N.report_status, report, N.delivered_at, now,
  N.updated_at, now)
add_event(msg, N, event(now, REPORT, report))
move(book(4, has_batch(msg, N)), id, status, target)
notify(msg, N, KEYS[3], id, target, now)
settle_record(msg, N, id, settled, target, now, retention)
return {target, 1}
"""
)

# scheduled or queued -> cancelled. A stream entry it may have is skipped when read
# (LEASE acknowledges entries of settled messages).
# KEYS: message, retry(app), settled, hooks(app), then the book (5..). ARGV: id, now,
# event line, retention seconds, ref (a record stored before has its own). Returns
# {status after, 1 if this call cancelled it}, or false.
CANCEL: Final = (
    _PRELUDE
    + """
local msg, retry, settled = KEYS[1], KEYS[2], KEYS[3]
local id, now, line, retention, ref = unpack(ARGV)
local N = names(msg)
local f = redis.call('HMGET', msg, N.status, N.ref or N.app, N.batch_id)
local status = f[1]
if not status then return false end
if status ~= 'queued' and status ~= 'scheduled' then return {status, 0} end
if N == LONG then ref = f[2] end
redis.call('ZREM', retry, ref)
redis.call('HSET', msg, N.status, 'cancelled', N.updated_at, now)
add_event(msg, N, line)
move(book(5, f[3]), id, status, 'cancelled')
settle_record(msg, N, id, settled, 'cancelled', now, retention)
notify(msg, N, KEYS[4], id, 'cancelled', now)
return {'cancelled', 1}
"""
)

# A replayable message (dead, failed, unknown, ...) -> queued, attempts reset, ready at once.
# KEYS: message, ready(app), settled, dead, dedupe key (the message key when none),
#   then the book (6..15).
# ARGV: id, now, event line, idempotency ttl, ref (a record stored before has its own).
# Returns 1 when moved, else 0.
REPLAY: Final = (
    _PRELUDE
    + """
local msg, stream, settled, dead, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, now, line, ttl, ref = unpack(ARGV)
local N = names(msg)
local status = redis.call('HGET', msg, N.status)
if not REPLAYABLE[status] then return 0 end
if N == LONG then ref = redis.call('HGET', msg, 'ref') end
redis.call('ZREM', settled, settled_member(msg, N, id, status))
redis.call('ZREM', dead, ref)
end_lease(msg, N)
redis.call('HSET', msg, N.status, 'queued', N.attempts, 0, N.next_attempt_at, now,
  N.updated_at, now)
add_event(msg, N, line)
redis.call('PERSIST', msg)
if idem ~= msg and owned_by(idem, id) then redis.call('EXPIRE', idem, ttl) end
push(stream, ref)
move(book(6, has_batch(msg, N)), id, status, 'queued')
return 1
"""
)

# An app's pause was lifted early: what it held back in the retry set becomes due now.
# KEYS: retry(app), then one message key per ref. ARGV: now, then the refs.
# Returns how many were made due (messages no longer queued are left alone).
MAKE_DUE: Final = (
    _PRELUDE
    + """
local retry, now, moved = KEYS[1], ARGV[1], 0
for i = 2, #ARGV do
  local ref, msg = ARGV[i], KEYS[i]
  local N = names(msg)
  if redis.call('HGET', msg, N.status) == 'queued' and redis.call('ZSCORE', retry, ref) then
    redis.call('HSET', msg, N.next_attempt_at, now, N.updated_at, now)
    redis.call('ZADD', retry, now, ref)
    moved = moved + 1
  end
end
return moved
"""
)

# Delete one settled record (or clean up after one that expired), by its settled member.
# KEYS: message, settled, dead, idempotency (its key of a version before buckets),
#   msgid (the message key when none of either), index_all (written only by versions
#   before it was dropped: purge still cleans up their entries), index_app, index_batch
#   (the message key when no batch), then the book (9..18), then the idempotency
#   bucket and the msgid bucket (each the message key when none).
# ARGV: member, id, status, ref, has batch ('1'/''), the idempotency key and the msgid
#   (their fields in the buckets).
# Returns 1 when purged, 0 when the member was gone already.
PURGE: Final = (
    _PRELUDE
    + """
local msg, settled, dead, idem, msgid = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local member, id, status, ref, batched = unpack(ARGV)
if redis.call('ZREM', settled, member) == 0 then return 0 end
redis.call('DEL', msg)
redis.call('ZREM', dead, ref)
local b = book(9, batched == '1')
move(b, id, status, nil)
redis.call('ZREM', KEYS[6], id)
redis.call('ZREM', KEYS[7], id)
if b.batch then
  redis.call('ZREM', KEYS[8], id)
  if redis.call('HINCRBY', b.batch, 'total', -1) <= 0 then redis.call('DEL', b.batch) end
end
for _, key in ipairs({idem, msgid}) do
  if key ~= msg and owned_by(key, id) then redis.call('DEL', key) end
end
local bucket, field = KEYS[#KEYS - 1], ARGV[6]
if bucket ~= msg then
  local held = redis.call('HGET', bucket, field)
  if held and (held == id or string.sub(held, 1, #id + 1) == id .. '\\31') then
    redis.call('HDEL', bucket, field)
  end
end
if KEYS[#KEYS] ~= msg and redis.call('HGET', KEYS[#KEYS], ARGV[7]) == id then
  redis.call('HDEL', KEYS[#KEYS], ARGV[7])
end
return 1
"""
)

# A dedupe key of a partitioned queue, claimed before its message is stored
# (docs/design.md, "Redis Cluster"). KEYS: the key. ARGV: value ("<id>\\31<digest>",
# or a batch's digest), ttl seconds. Returns the value held already (nothing written),
# or false once stored.
CLAIM: Final = """#!lua
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

# A claimed dedupe key follows its message (what SETTLE, REPLAY and PURGE do to a key
# in the message's slot): KEYS: the key. ARGV: id, ttl seconds ('' deletes it).
# Touches the key only while it names that id. Returns 1 if touched.
TOUCH_CLAIM: Final = (
    _PRELUDE
    + """
if not owned_by(KEYS[1], ARGV[1]) then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
)

# KEYS: nonce. ARGV: now, expires_at, ttl seconds (whole, for Redis to forget it).
# The stored expiry decides, so `now` is the caller's clock. Returns 1 if fresh.
REMEMBER_NONCE: Final = """#!lua
local until_at = redis.call('GET', KEYS[1])
if until_at and tonumber(until_at) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

# The token bucket of `wxgate.tokenbucket.TokenBucket`, shared by every worker.
# KEYS: bucket. ARGV: rate, capacity, want, now, idle ttl seconds. Returns the grant.
TAKE_BUDGET: Final = """#!lua
local rate, capacity, want, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if not tokens then
  tokens, updated = capacity, now
elseif now > updated then
  tokens, updated = math.min(capacity, tokens + (now - updated) * rate), now
end
tokens = math.min(tokens, capacity)
local granted = math.min(want, math.floor(tokens + 1e-3))  -- tokenbucket.WHOLE_EPSILON
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', updated))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return granted
"""

# -- access tokens (RedisTokenStore) ---------------------------------------------------

# KEYS: token. ARGV: token, expires_at, fetched_at, fence, forced_at, forced_count,
# forced_day. Returns 1 if stored.
SAVE_TOKEN: Final = """#!lua
local stored = redis.call('HGET', KEYS[1], 'fence')
if stored and tonumber(stored) > tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'expires_at', ARGV[2], 'fetched_at', ARGV[3],
  'fence', ARGV[4], 'forced_at', ARGV[5], 'forced_count', ARGV[6], 'forced_day', ARGV[7])
return 1
"""

# KEYS: token. ARGV: token. Expires it (fence kept) if it is still the stored one.
INVALIDATE_TOKEN: Final = """#!lua
local stored = redis.call('HMGET', KEYS[1], 'token', 'expires_at')
if stored[1] ~= ARGV[1] or tonumber(stored[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'expires_at', '0')
return 1
"""

# KEYS: lock, fence. ARGV: owner, ttl milliseconds. Returns the new fence, or false.
TRY_LOCK: Final = """#!lua
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# KEYS: lock. ARGV: owner. Releases the lock only for its holder.
UNLOCK: Final = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# -- the suppression list (redis_suppressions.py) ----------------------------------------

# KEYS: the bucket hash of each entry. ARGV: the permanent reasons joined by ",", then
# openid, value for each key in order. An entry whose stored reason is permanent stays.
# Returns how many openids were not suppressed before.
ADD_SUPPRESSIONS: Final = """#!lua
local permanent = {}
for reason in string.gmatch(ARGV[1], '[^,]+') do permanent[reason] = true end
local added = 0
for i, key in ipairs(KEYS) do
  local openid, value = ARGV[2 * i], ARGV[2 * i + 1]
  local old = redis.call('HGET', key, openid)
  if not old then
    added = added + 1
    redis.call('HSET', key, openid, value)
  elseif not permanent[string.match(old, '^[^|]*')] then
    redis.call('HSET', key, openid, value)
  end
end
return added
"""

# KEYS: the bucket hash. ARGV: openid, then the reasons that may be lifted ("" for
# any). Returns 1 if the entry was removed.
LIFT_SUPPRESSION: Final = """#!lua
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
if #ARGV > 1 then
  local reason = string.match(old, '^[^|]*')
  local allowed = false
  for i = 2, #ARGV do if ARGV[i] == reason then allowed = true end end
  if not allowed then return 0 end
end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# -- the grant ledger of subscribe messages (redis_grants.py) --------------------------
# A grant is the hash field template_id of grants(app, touser): "one_time long_term
# updated_at" (long_term 0 or 1).

# KEYS: grants(app, touser). ARGV: template_id, long_term (0/1), now. Returns the grant.
ACCEPT_GRANT: Final = """#!lua
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local one_time, long_term = 0, 0
if raw then
  local a, b = string.match(raw, '^(%d+) (%d)')
  one_time, long_term = tonumber(a), tonumber(b)
end
if ARGV[2] == '1' then long_term = 1 else one_time = one_time + 1 end
local value = one_time .. ' ' .. long_term .. ' ' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], value)
return value
"""

# KEYS: grants(app, touser). ARGV: template_id, now. Returns "one-time", "long-term"
# or "none" (backends.grants.GrantUse).
USE_GRANT: Final = """#!lua
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'none' end
local a, b = string.match(raw, '^(%d+) (%d)')
local one_time, long_term = tonumber(a), tonumber(b)
if long_term == 1 then return 'long-term' end
if one_time <= 0 then return 'none' end
if one_time == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], (one_time - 1) .. ' 0 ' .. ARGV[2])
end
return 'one-time'
"""

# -- per-recipient send caps (redis_caps.py) ----------------------------------------------
# Take a slot of every limit for a message, or none. KEYS: one sorted set per limit
# (members: message ids, scores: when the slot frees). ARGV: message id, now, then
# count and period per limit. Returns false when taken (or already held), else the
# time (as text) when the fullest limit frees a slot.
TAKE_CAP: Final = """#!lua
local id, now = ARGV[1], tonumber(ARGV[2])
local free = nil
local wanted = {}
for i, key in ipairs(KEYS) do
  local count, period = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, id) then
    local live = redis.call('ZCARD', key)
    if live >= count then
      local nth = redis.call('ZRANGE', key, live - count, live - count, 'WITHSCORES')
      local at = tonumber(nth[2])
      if free == nil or at > free then free = at end
    end
    wanted[#wanted + 1] = {key, period}
  end
end
if free ~= nil then return tostring(free) end
for _, item in ipairs(wanted) do
  local until_ = now + item[2]
  redis.call('ZADD', item[1], until_, id)
  local ttl = redis.call('PTTL', item[1])
  local want = math.ceil(item[2] * 1000)
  if ttl < want then redis.call('PEXPIRE', item[1], want) end
end
return false
"""

# -- the dedupe window (redis_dedupe.py) ---------------------------------------------------
# KEYS: the (app, digest) string, holding "<first id> <window end>". ARGV: message id,
# window in ms, now, window end. The end is compared with the caller's clock (the
# key's TTL only frees memory). Returns the first id while its window lasts, else false
# after storing this id as the first.
CLAIM_DEDUPE: Final = """#!lua
local held = redis.call('GET', KEYS[1])
if held then
  local cut = string.find(held, ' ', 1, true)
  if tonumber(string.sub(held, cut + 1)) > tonumber(ARGV[3]) then
    return string.sub(held, 1, cut - 1)
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[4], 'PX', ARGV[2])
return false
"""
# KEYS: the (app, digest) string. ARGV: message id. Deletes the claim if it is that id's.
FORGET_DEDUPE: Final = """#!lua
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
end
return 0
"""

# -- the webhook outbox (redis_webhooks.py) ------------------------------------------
# Each event is a JSON object in hook_events(app) (message_id, status, at, errcode,
# errmsg, msgid as written by `notify`; state, attempts, next, token, error), its stream
# id its seq. Every script here takes the same KEYS: hooks(app), hook_events,
# hook_chains, hook_due, hook_pending, hook_dead (six in all, in that order).

_HOOK_PRELUDE: Final = """#!lua
-- The event leaves its message's chain; the chain's new head (if any) becomes due.
local function unchain(chains, due, message_id, seq, now)
  local rest = {}
  for other in string.gmatch(redis.call('HGET', chains, message_id) or '', '%S+') do
    if other ~= seq then table.insert(rest, other) end
  end
  if #rest == 0 then redis.call('HDEL', chains, message_id) return end
  redis.call('HSET', chains, message_id, table.concat(rest, ' '))
  redis.call('ZADD', due, now, rest[1])
end

-- The event joins the end of its message's chain; at its head, it is due now.
local function chain(chains, due, message_id, seq, now)
  local stored = redis.call('HGET', chains, message_id)
  if stored then
    redis.call('HSET', chains, message_id, stored .. ' ' .. seq)
  else
    redis.call('HSET', chains, message_id, seq)
    redis.call('ZADD', due, now, seq)
  end
end
"""

# ARGV: now, deadline, limit, adopt (entries taken from the stream at most), token.
# New stream entries are adopted first (each leaves the stream in the same step), then
# up to `limit` due events are claimed. Returns {seq, JSON, due} per claimed event, oldest
# due first (due: the score it was claimed at).
CLAIM_HOOKS: Final = (
    _HOOK_PRELUDE
    + """
local now, deadline, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[4])) do
  local seq, f, raw = entry[1], {}, entry[2]
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  local ev = {message_id = f.message_id, status = f.status, at = f.at, errcode = f.errcode,
    errmsg = f.errmsg, msgid = f.msgid, state = 'pending', attempts = 0, next = now,
    token = '', error = ''}
  redis.call('HSET', KEYS[2], seq, cjson.encode(ev))
  redis.call('ZADD', KEYS[5], f.at, seq)
  chain(KEYS[3], KEYS[4], f.message_id, seq, now)
  redis.call('XDEL', KEYS[1], seq)
end
local claimed = {}
if limit <= 0 then return claimed end
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  local seq = due[i]
  local ev = cjson.decode(redis.call('HGET', KEYS[2], seq))
  ev.state, ev.token, ev.next = 'sending', ARGV[5], deadline
  local text = cjson.encode(ev)
  redis.call('HSET', KEYS[2], seq, text)
  redis.call('ZADD', KEYS[4], deadline, seq)
  table.insert(claimed, {seq, text, due[i + 1]})
end
return claimed
"""
)

# ARGV: seq, token, outcome (delivered, retry, dead), now, next_attempt_at, error.
# Returns 1 if applied, 0 when the event is not claimed under that token.
FINISH_HOOK: Final = (
    _HOOK_PRELUDE
    + """
local seq, outcome, now = ARGV[1], ARGV[3], ARGV[4]
local text = redis.call('HGET', KEYS[2], seq)
if not text then return 0 end
local ev = cjson.decode(text)
if ev.state ~= 'sending' or ev.token ~= ARGV[2] then return 0 end
ev.attempts, ev.token = ev.attempts + 1, ''
if outcome == 'retry' then
  ev.state, ev.next, ev.error = 'pending', ARGV[5], ARGV[6]
  redis.call('HSET', KEYS[2], seq, cjson.encode(ev))
  redis.call('ZADD', KEYS[4], ARGV[5], seq)
  return 1
end
redis.call('ZREM', KEYS[4], seq)
redis.call('ZREM', KEYS[5], seq)
if outcome == 'dead' then
  ev.state, ev.next, ev.error = 'dead', now, ARGV[6]
  redis.call('HSET', KEYS[2], seq, cjson.encode(ev))
  redis.call('ZADD', KEYS[6], now, seq)
else
  redis.call('HDEL', KEYS[2], seq)
end
unchain(KEYS[3], KEYS[4], ev.message_id, seq, now)
return 1
"""
)

# ARGV: now, then the seqs of dead events to make pending again. Returns the count moved.
REPLAY_HOOKS: Final = (
    _HOOK_PRELUDE
    + """
local now, moved = ARGV[1], 0
for i = 2, #ARGV do
  local seq = ARGV[i]
  if redis.call('ZREM', KEYS[6], seq) == 1 then
    local ev = cjson.decode(redis.call('HGET', KEYS[2], seq))
    ev.state, ev.attempts, ev.next, ev.error, ev.token = 'pending', 0, now, '', ''
    redis.call('HSET', KEYS[2], seq, cjson.encode(ev))
    redis.call('ZADD', KEYS[5], ev.at, seq)
    chain(KEYS[3], KEYS[4], ev.message_id, seq, now)
    moved = moved + 1
  end
end
return moved
"""
)

# ARGV: older_than, at most this many. Forgets dead events that died before older_than.
PURGE_HOOKS: Final = """#!lua
local old = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, seq in ipairs(old) do
  redis.call('HDEL', KEYS[2], seq)
  redis.call('ZREM', KEYS[6], seq)
end
return #old
"""
