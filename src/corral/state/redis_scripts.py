"""The Lua scripts behind RedisCounters: each operation is one script, run atomically.

Conventions every script shares:

- Amounts are integers that travel as decimal strings and are written with HINCRBY or
  `ints()`, never `tostring()` (which prints 1e+15); Lua's doubles compare them exactly
  up to 2^53 (9e15 micro-USD).
- Seconds are floats written with `%.17g`, so what Python sent reads back bit for bit;
  floats are returned as strings (Redis would truncate a Lua number to an integer).
- `now` (windows, buckets, breakers) comes from the client's clock in ARGV; leases are
  kept on the server's clock (`TIME`), the one clock every node shares.
- `P` is the key prefix with its hash tag, `{corral}:`; the lease sweep and renewal touch
  counter and reservation keys they do not declare in KEYS, which Redis Cluster allows
  only because every key of the prefix lives in the same slot.

Keys under P: `c:<key>` a counter (hash u used, h held, and for a window e ends at, t its
seconds), `r:<id>` a reservation (JSON: keys, amounts, windows; x once its lease expired),
`leases` the lease deadlines of open reservations (sorted set), `t:<key>` a token bucket
(hash n tokens, a at), `b:<key>` a breaker (hash) with `br:<key>` its ring of outcomes (a
string, one digit per outcome), `breakers` the breaker keys recorded (set).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Seconds a windowed key outlives twice its window in Redis (PEXPIRE), so keys of windows
# nobody touches again disappear; the window itself ends at the explicit `e` field.
KEY_GRACE_SECONDS = 3600.0
# Seconds a bucket outlives its refill to full: a missing bucket is a full one.
BUCKET_GRACE_SECONDS = 60.0
# Seconds a reservation settled by its lease's expiry is remembered, so a late commit
# of the call that held it records only usage past the hold, and counts nothing twice.
TOMBSTONE_SECONDS = 86_400.0
# Expired leases settled per reserve or read, at most: a bounded sweep keeps each call
# O(1). Settling moves a hold from held to used on its keys, so used + held, which is
# all admission looks at, is the same before and after: a lease left for the next
# sweep changes what a read reports, never what a reserve admits.
SWEEP = 16


@dataclass(frozen=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_COMMON = f"""
local GRACE, TOMBSTONE_MS, SWEEP = {KEY_GRACE_SECONDS}, {int(TOMBSTONE_SECONDS * 1000)}, {SWEEP}
local function fmt(x) return string.format('%.17g', x) end
local function ints(x) return string.format('%.0f', x) end
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function expire(k, t)
  redis.call('PEXPIRE', k, math.ceil((2 * t + GRACE) * 1000))
end
-- The counter at k in the window current at now: used, held; nil when there is none.
-- A window that ended is dropped if nothing is held on it, else rolled over (holds carry).
local function load(k, now)
  local v = redis.call('HMGET', k, 'u', 'h', 'e', 't')
  if not v[1] then return nil end
  local u, h, e = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if e and now >= e then
    if h == 0 then
      redis.call('DEL', k)
      return nil
    end
    local t = tonumber(v[4])
    redis.call('HSET', k, 'u', 0, 'e', fmt(now + t))
    expire(k, t)
    u = 0
  end
  return u, h
end
local function create(k, ttl, now, used, held)
  if ttl > 0 then
    redis.call('HSET', k, 'u', ints(used), 'h', ints(held), 'e', fmt(now + ttl), 't', fmt(ttl))
    expire(k, ttl)
  else
    redis.call('HSET', k, 'u', ints(used), 'h', ints(held))
  end
end
-- Settle one hold: held -= held_amount, used += used_amount, in the window current now.
local function settle(k, held_amount, used_amount, ttl, now)
  if used_amount == nil then  -- a release: no usage, so no window to roll
    local h = redis.call('HGET', k, 'h')
    if h then redis.call('HSET', k, 'h', ints(math.max(0, tonumber(h) - held_amount))) end
    return
  end
  local u, h = load(k, now)
  if u == nil then
    if used_amount > 0 then create(k, ttl, now, used_amount, 0) end
    return
  end
  redis.call('HSET', k, 'u', ints(u + used_amount), 'h', ints(math.max(0, h - held_amount)))
end
-- A lease ran out: charge every hold at its worst case and keep a tombstone.
local function expire_lease(P, leases, rid, rec, now)
  for j, k in ipairs(rec.k) do
    local a = tonumber(rec.a[j])
    settle(k, a, a, tonumber(rec.t[j]), now)
  end
  rec.x = 1
  redis.call('SET', P .. 'r:' .. rid, cjson.encode(rec), 'PX', TOMBSTONE_MS)
  redis.call('ZREM', leases, rid)
end
local function sweep(P, leases, clock, now)
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', fmt(clock), 'LIMIT', 0, SWEEP)
  for _, rid in ipairs(due) do
    local raw = redis.call('GET', P .. 'r:' .. rid)
    if raw then
      expire_lease(P, leases, rid, cjson.decode(raw), now)
    else
      redis.call('ZREM', leases, rid)
    end
  end
end
local function prefix(leases) return string.sub(leases, 1, #leases - #'leases') end
"""

# KEYS: leases, reservation, counter keys. ARGV: now, lease seconds, id, then per hold
# amount, limit, window seconds (0: none). {0} admitted, or {i, used, held} refused at i.
RESERVE = Script(
    _COMMON
    + """
local leases, rkey = KEYS[1], KEYS[2]
if redis.call('EXISTS', rkey) == 1 then return {0} end  -- a retried reserve, admitted before
local now, lease, rid = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local clock = server_now()
sweep(prefix(leases), leases, clock, now)
local n, found = #KEYS - 2, {}
for i = 1, n do
  local u, h = load(KEYS[2 + i], now)
  found[i] = u ~= nil
  if u == nil then u, h = 0, 0 end
  if u + h + tonumber(ARGV[1 + 3 * i]) > tonumber(ARGV[2 + 3 * i]) then return {i, u, h} end
end
local rec = {k = {}, a = {}, t = {}}
for i = 1, n do
  local k, a, t = KEYS[2 + i], ARGV[1 + 3 * i], ARGV[3 + 3 * i]
  if not found[i] then
    create(k, tonumber(t), now, 0, tonumber(a))
  elseif a ~= '0' then
    redis.call('HINCRBY', k, 'h', a)
  end
  rec.k[i], rec.a[i], rec.t[i] = k, a, t
end
redis.call('SET', rkey, cjson.encode(rec))
redis.call('ZADD', leases, fmt(clock + lease), rid)
return {0}
"""
)

# KEYS: leases, reservation, its counter keys. ARGV: now, id, 1 commit / 0 release, then
# the actual amounts. A lease past its deadline is settled at its worst case first; then
# a commit records only usage past the hold. 1 if settled here, 0 if unknown or done.
SETTLE = Script(
    _COMMON
    + """
local leases, rkey = KEYS[1], KEYS[2]
local raw = redis.call('GET', rkey)
if not raw then return 0 end
local now, rid, commit = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1'
local rec = cjson.decode(raw)
if not rec.x then
  local deadline = redis.call('ZSCORE', leases, rid)
  if deadline and tonumber(deadline) <= server_now() then
    expire_lease(prefix(leases), leases, rid, rec, now)
  end
end
for j, k in ipairs(rec.k) do
  local held, ttl = tonumber(rec.a[j]), tonumber(rec.t[j])
  local actual = commit and tonumber(ARGV[3 + j] or '0') or nil
  if rec.x then
    if actual and actual > held then settle(k, 0, actual - held, ttl, now) end
  else
    settle(k, held, actual, ttl, now)
  end
end
redis.call('DEL', rkey)
redis.call('ZREM', leases, rid)
return 1
"""
)

# KEYS: leases, counter keys. ARGV: now. {used1, held1, used2, held2, ...}
GET_MANY = Script(
    _COMMON
    + """
local leases, now = KEYS[1], tonumber(ARGV[1])
sweep(prefix(leases), leases, server_now(), now)
local out = {}
for i = 2, #KEYS do
  local u, h = load(KEYS[i], now)
  out[#out + 1] = u or 0
  out[#out + 1] = h or 0
end
return out
"""
)

# KEYS: a counter. ARGV: now, amount, window seconds (0: none). The new used.
ADD = Script(
    _COMMON
    + """
local k, now = KEYS[1], tonumber(ARGV[1])
if load(k, now) == nil then create(k, tonumber(ARGV[3]), now, 0, 0) end
return redis.call('HINCRBY', k, 'u', ARGV[2])
"""
)

# KEYS: counters. Those with nothing held are deleted.
DROP = Script(
    """
for _, k in ipairs(KEYS) do
  local h = redis.call('HGET', k, 'h')
  if not h or tonumber(h) == 0 then redis.call('DEL', k) end
end
return 0
"""
)

# KEYS: leases, reservations. ARGV: now, lease seconds, their ids. Extends each live
# lease (and the Redis expiry of its windowed keys); a lease already past its deadline
# is settled at its worst case instead, never revived. The ids no longer open.
RENEW = Script(
    _COMMON
    + """
local leases, now, lease = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local P, clock, gone = prefix(leases), server_now(), {}
for i = 2, #KEYS do
  local rid = ARGV[1 + i]
  local deadline = redis.call('ZSCORE', leases, rid)
  local raw = redis.call('GET', KEYS[i])
  if not deadline or not raw then
    gone[#gone + 1] = rid
  else
    local rec = cjson.decode(raw)
    if tonumber(deadline) <= clock then
      expire_lease(P, leases, rid, rec, now)
      gone[#gone + 1] = rid
    else
      redis.call('ZADD', leases, fmt(clock + lease), rid)
      for j, k in ipairs(rec.k) do
        local t = tonumber(rec.t[j])
        if t > 0 then expire(k, t) end
      end
    end
  end
end
return gone
"""
)

# KEYS: a bucket. ARGV: now, amount, rate, capacity. The seconds to wait ('0': taken).
TAKE = Script(
    f"""
local k = KEYS[1]
local now, amount, rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local v = redis.call('HMGET', k, 'n', 'a')
local tokens = cap
if v[1] then tokens = math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * rate) end
local wait = 0
if tokens >= amount then tokens = tokens - amount else wait = (amount - tokens) / rate end
redis.call('HSET', k, 'n', string.format('%.17g', tokens), 'a', string.format('%.17g', now))
redis.call('PEXPIRE', k, math.ceil(((cap - tokens) / rate + {BUCKET_GRACE_SECONDS}) * 1000))
return string.format('%.17g', wait)
"""
)

# KEYS: a bucket. ARGV: amount, capacity.
GIVE = Script(
    """
local v = redis.call('HGET', KEYS[1], 'n')
if v then
  local tokens = math.min(tonumber(ARGV[2]), tonumber(v) + tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'n', string.format('%.17g', tokens))
end
return 0
"""
)

_BREAKER = """
local FIELDS = {'st', 'g', 'w', 'hd', 'c', 'f', 's', 'po', 'lp', 'oa', 'ou'}
local function fmt(x) return string.format('%.17g', x) end
local function read(k)
  local v = redis.call('HMGET', k, unpack(FIELDS))
  if not v[1] then return nil end
  local b = {st = v[1]}
  for i = 2, #FIELDS do b[FIELDS[i]] = tonumber(v[i]) end
  return b
end
local function write(k, b)
  redis.call('HSET', k, 'st', b.st, 'g', b.g, 'w', b.w, 'hd', b.hd, 'c', b.c, 'f', b.f,
    's', b.s, 'po', b.po, 'lp', fmt(b.lp), 'oa', fmt(b.oa), 'ou', fmt(b.ou))
end
local function open(b, now, open_for)
  b.st, b.g, b.po, b.oa, b.ou = 'open', b.g + 1, 0, now, now + open_for
end
local function snapshot(b)
  return {b.st, b.g, b.c, b.f, b.s, b.po, fmt(b.oa), fmt(b.ou)}
end
"""

# KEYS: breaker. ARGV: now, open_for, probe_silence, half_open_probes.
# {admitted, state, generation, retry_in, changed}
BREAKER_ADMIT = Script(
    _BREAKER
    + """
local k = KEYS[1]
local b = read(k)
if not b then return {1, 'closed', 0, '0', 0} end
local now, open_for = tonumber(ARGV[1]), tonumber(ARGV[2])
local silence, probes = tonumber(ARGV[3]), tonumber(ARGV[4])
local changed = 0
if b.st == 'open' and now >= b.ou then
  b.st, b.g, b.c, b.f, b.s, b.po, b.lp = 'half_open', b.g + 1, 0, 0, 0, 0, now
  changed = 1
elseif b.st == 'half_open' and b.po > 0 and now - b.lp >= silence then
  open(b, now, open_for)
  changed = 1
end
if b.st == 'closed' then return {1, b.st, b.g, '0', 0} end
local admitted, retry_in = 0, '0'
if b.st == 'open' then
  retry_in = fmt(b.ou - now)
elseif b.po + b.c < probes then
  b.po, b.lp = b.po + 1, now
  admitted = 1
end
if changed == 1 or admitted == 1 then write(k, b) end
return {admitted, b.st, b.g, retry_in, changed}
"""
)

# KEYS: breaker, its ring, the breaker index. ARGV: name, generation, admitted, flags
# (1 failed + 2 slow), now, window, min_calls, failure_rate, slow_rate, open_for,
# half_open_probes. The snapshot if the state changed, else nil.
BREAKER_RECORD = Script(
    _BREAKER
    + """
local k, ring = KEYS[1], KEYS[2]
local generation, admitted, flags = tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local now, window, min_calls = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local failure_rate, slow_rate = tonumber(ARGV[8]), tonumber(ARGV[9])
local open_for, probes = tonumber(ARGV[10]), tonumber(ARGV[11])
local b = read(k)
if not b then
  if generation ~= 0 then return nil end
  b = {st = 'closed', g = 0, w = window, hd = 0, c = 0, f = 0, s = 0, po = 0, lp = 0, oa = 0,
    ou = 0}
  redis.call('DEL', ring)
  redis.call('SADD', KEYS[3], ARGV[1])
  write(k, b)
end
if not admitted or generation ~= b.g then return nil end
local failed, slow = flags % 2, math.floor(flags / 2)
local function tripped()
  return b.f / b.c >= failure_rate or b.s / b.c >= slow_rate
end
local function empty()
  redis.call('DEL', ring)
  b.w, b.hd, b.c, b.f, b.s = window, 0, 0, 0, 0
end
local out = nil
if b.st == 'closed' then
  if b.w ~= window then empty() end
  if b.c == b.w then
    local old = tonumber(redis.call('GETRANGE', ring, b.hd, b.hd))
    b.c, b.f, b.s = b.c - 1, b.f - old % 2, b.s - math.floor(old / 2)
  end
  redis.call('SETRANGE', ring, b.hd, tostring(flags))
  b.hd = (b.hd + 1) % b.w
  b.c, b.f, b.s = b.c + 1, b.f + failed, b.s + slow
  if b.c >= min_calls and tripped() then
    open(b, now, open_for)
    out = snapshot(b)
  end
else
  -- Half-open: an open episode admits nothing, so no admission can name it.
  b.po = math.max(0, b.po - 1)
  b.lp = now
  b.c, b.f, b.s = b.c + 1, b.f + failed, b.s + slow
  if b.c >= probes then
    if tripped() then
      open(b, now, open_for)
    else
      empty()
      b.st, b.g, b.po = 'closed', b.g + 1, 0
    end
    out = snapshot(b)
  end
end
write(k, b)
return out
"""
)

# KEYS: breaker. ARGV: generation, 1 if admitted half-open.
BREAKER_RELEASE = Script(
    """
local v = redis.call('HMGET', KEYS[1], 'g', 'po')
if ARGV[2] == '1' and v[1] and tonumber(v[1]) == tonumber(ARGV[1]) and tonumber(v[2]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'po', -1)
end
return 0
"""
)

# KEYS: the breaker index. ARGV: the breaker key prefix. {name, snapshot..., ...}
BREAKER_SNAPSHOTS = Script(
    _BREAKER
    + """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local b = read(ARGV[1] .. name)
  if b then
    out[#out + 1] = name
    for _, v in ipairs(snapshot(b)) do out[#out + 1] = v end
  else
    redis.call('SREM', KEYS[1], name)
  end
end
return out
"""
)
