-- match/statistics.lua: candles per interval (dex:{m}:candles:<iv>, index dex:{m}:cidx:<iv>)
-- and the 24 h window of dex:{m}:stats, from the call's trades (all at `now`).
--
-- dex:{m}:stats also keeps each interval's newest candle, c:<iv> = "<bucket>|<candle JSON>"
-- as written to its hash, so a call with trades reads them all with the 24 h figures in one
-- HMGET instead of one HGET per interval; a bucket newer than the one kept there is a new
-- candle, one older (a clock that went back) is read from its hash as before.

--#include money.lua
--#include text.lua
--#include state.lua

local INTERVALS = {{'1m', 60000}, {'5m', 300000}, {'15m', 900000}, {'1h', 3600000},
  {'4h', 14400000}, {'1d', 86400000}}
local DAY = 86400000
local agg  -- the call's trades: open, high, low, close, volume, quote volume
per_call(function() agg = nil end)

-- A trade of qty f at p, quote volume qv.
local function count_trade(p, f, qv)
  if agg == nil then
    agg = {o = p, h = p, l = p, c = p, v = f, qv = qv}
  else
    if p > agg.h then agg.h = p end
    if p < agg.l then agg.l = p end
    agg.c, agg.v, agg.qv = p, agg.v + f, agg.qv + qv
  end
end

local function candle_json(c)
  return '[' .. int(c[1]) .. ',' .. int(c[2]) .. ',' .. int(c[3]) .. ',' .. int(c[4]) .. ',' ..
    int(c[5]) .. ',' .. int(c[6] or 0) .. ']'
end

-- The call's trades into each interval's current candle and into the 24 h figures. (vol and
-- qvol are summed here while the sums stay below 2^53, where a Lua number is exact; beyond,
-- Redis adds them, HINCRBY.)
local function write_candles()
  local s = redis.call('HMGET', K_STATS, 'high', 'low', 'open', 'vol', 'qvol', 'c:1m', 'c:5m',
    'c:15m', 'c:1h', 'c:4h', 'c:1d')
  local out = {'last', int(agg.c), 'lastTs', now_text}
  for i, iv in ipairs(INTERVALS) do
    local bucket = now - now % iv[2]
    local ckey = mprefix .. 'candles:' .. iv[1]
    local kept_bucket, kept = string.match(s[5 + i] or '', '^(%d+)|(.*)$')
    kept_bucket = tonumber(kept_bucket)
    local raw = nil
    if kept_bucket == bucket then
      raw = kept
    elseif kept_bucket == nil or kept_bucket > bucket then
      raw = redis.call('HGET', ckey, int(bucket))
    end
    local c
    if raw then
      c = cjson.decode(raw)
      if agg.h > c[2] then c[2] = agg.h end
      if agg.l < c[3] then c[3] = agg.l end
      c[4], c[5], c[6] = agg.c, c[5] + agg.v, (c[6] or 0) + agg.qv
    else
      c = {agg.o, agg.h, agg.l, agg.c, agg.v, agg.qv}
      redis.call('ZADD', mprefix .. 'cidx:' .. iv[1], bucket, int(bucket))
      if i == 1 then hints.sooner('ageing', bucket + DAY + 60000) end
    end
    local text = candle_json(c)
    redis.call('HSET', ckey, int(bucket), text)
    if kept_bucket == nil or kept_bucket <= bucket then
      out[#out + 1] = 'c:' .. iv[1]
      out[#out + 1] = int(bucket) .. '|' .. text
    end
  end
  local high, low = tonumber(s[1] or ''), tonumber(s[2] or '')
  if high == nil or agg.h > high then high = agg.h end
  if low == nil or agg.l < low then low = agg.l end
  local open = s[3]
  if open == false or open == nil or open == '' then open = int(agg.o) end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5], out[n + 6] =
    'high', int(high), 'low', int(low), 'open', open
  local vol, qvol = (tonumber(s[4] or '') or 0) + agg.v, (tonumber(s[5] or '') or 0) + agg.qv
  local exact = vol < EXACT and qvol < EXACT
  if exact then
    out[n + 7], out[n + 8], out[n + 9], out[n + 10] = 'vol', int(vol), 'qvol', int(qvol)
  end
  redis.call('HSET', K_STATS, unpack(out))
  if not exact then
    redis.call('HINCRBY', K_STATS, 'vol', agg.v)
    redis.call('HINCRBY', K_STATS, 'qvol', agg.qv)
  end
end

-- Evict minute buckets that left the 24 h window (a bucket counts while it overlaps it), once
-- the state's next ageing (match/state.lua nage) has come (a minute bucket leaves DAY + 1 min
-- after its start); then the next one is the oldest bucket left's.
local function evict_window()
  if hints.quiet('ageing') then return end
  local upto = now - DAY - 60000
  local evicted = redis.call('HGET', K_STATS, 'evicted')
  local from = evicted and ('(' .. evicted) or '-inf'
  local gone = redis.call('ZRANGEBYSCORE', mprefix .. 'cidx:1m', from, upto)
  if #gone == 0 then
    local oldest = redis.call('ZRANGEBYSCORE', mprefix .. 'cidx:1m', from, '+inf', 'LIMIT', 0, 1)
    hints.ageing = oldest[1] and tonumber(oldest[1]) + DAY + 60000 or false
    return
  end
  local ckey = mprefix .. 'candles:1m'
  local s = redis.call('HMGET', K_STATS, 'high', 'low')
  local high, low = tonumber(s[1] or ''), tonumber(s[2] or '')
  local recompute = false
  for _, b in ipairs(gone) do
    local c = cjson.decode(redis.call('HGET', ckey, b))
    redis.call('HINCRBY', K_STATS, 'vol', -c[5])
    redis.call('HINCRBY', K_STATS, 'qvol', -(c[6] or 0))
    if (high and c[2] >= high) or (low and c[3] <= low) then recompute = true end
  end
  redis.call('HSET', K_STATS, 'evicted', gone[#gone])
  local rest = redis.call('ZRANGEBYSCORE', mprefix .. 'cidx:1m', '(' .. gone[#gone], '+inf')
  if #rest == 0 then
    hints.ageing = false
    redis.call('HSET', K_STATS, 'open', '', 'high', '', 'low', '', 'vol', '0', 'qvol', '0')
    return
  end
  hints.ageing = tonumber(rest[1]) + DAY + 60000
  local first = cjson.decode(redis.call('HGET', ckey, rest[1]))
  redis.call('HSET', K_STATS, 'open', int(first[1]))
  if recompute then
    local values = redis.call('HMGET', ckey, unpack(rest))
    high, low = nil, nil
    for _, v in ipairs(values) do
      local c = cjson.decode(v)
      if high == nil or c[2] > high then high = c[2] end
      if low == nil or c[3] < low then low = c[3] end
    end
    redis.call('HSET', K_STATS, 'high', int(high), 'low', int(low))
  end
end

local function write_statistics()
  if agg then write_candles() end
  evict_window()
end
