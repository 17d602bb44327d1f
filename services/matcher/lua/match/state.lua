-- match/state.lua: the market's state hash (dex:{m}:state): status and counters, read once
-- per call and written back once, and the last applied stream id.
--
-- It also keeps hints: what a call would otherwise look up in other keys every time, though
-- it rarely finds anything there (docs/performance.md "The fixed cost of a call at small
-- batches"):
--   nexp       no entry of dex:{m}:exp is due before this time (ms); '-': the index is empty
--   nage       no minute bucket leaves the 24 h window before this time; '-': none is in it
--   ltrig      '0': the market has no LAST trigger set (dex:{m}:trig:LAST:*, trail:LAST:*)
--   untrimmed  entries acknowledged since the input stream was last trimmed
-- An absent field says nothing: the call then looks, and records what it found. Only this
-- script writes those keys, and the call that changes one keeps its hint true.

--#include text.lua

local status, seq, tseq, eseq, aseq, last
local was_stored        -- the hash held a status before this call
local status_changed
local tseq_at_start     -- the trade seq when the call began
-- Stream ids "ms-seq" are compared numerically with the last applied one (parsed once; the
-- apply loop passes the parts of an id it moves `last` to).
local last_ms, last_sq
-- The hints: expiry and ageing a time (ms), false ('-': nothing there) or nil (unknown);
-- last_triggers a boolean (nil: unknown); untrimmed a count; stored: each field's text as read.
local hints = {FIELDS = {'nexp', 'nage', 'ltrig', 'untrimmed'}}
per_call(function()
  status, seq, tseq, eseq, aseq, last = nil, nil, nil, nil, nil, nil
  was_stored, status_changed, tseq_at_start, last_ms, last_sq = nil, false, nil, nil, nil
  hints.untrimmed, hints.stored = 0, {}
  hints.expiry, hints.ageing, hints.last_triggers = nil, nil, nil
end)
-- Stream entries (trades written, input entries acknowledged) between two trims: a trim
-- with "~" drops whole stream nodes only, so trimming more often keeps a stream no shorter.
local TRIM_EVERY = 100

local function id_parts(a)
  local m, sq = string.match(a, '^(%d+)-(%d+)$')
  return tonumber(m), tonumber(sq)
end

-- A time hint from its text: a number, false for '-', nil when absent.
function hints.time(text)
  if text == '-' then return false end
  return tonumber(text or '')
end

-- Something in the hint's key comes due at t: the hint is no later (unknown stays unknown).
function hints.sooner(name, t)
  local at = hints[name]
  if at == false or (at and t < at) then hints[name] = t end
end

-- Nothing in the hint's key comes due before it: the call need not look.
function hints.quiet(name)
  local at = hints[name]
  return at == false or (at ~= nil and now < at)
end

local function load_state()
  local st = redis.call('HMGET', K_STATE, 'status', 'seq', 'tseq', 'eseq', 'aseq', 'last',
    'nexp', 'nage', 'ltrig', 'untrimmed')
  status, was_stored = st[1] or 'OPEN', st[1] ~= false
  seq, tseq, eseq, aseq = tonumber(st[2] or '0'), tonumber(st[3] or '0'),
    tonumber(st[4] or '0'), tonumber(st[5] or '0')
  tseq_at_start = tseq
  last = st[6]
  if last and last ~= '' then last_ms, last_sq = id_parts(last) end
  for i, name in ipairs(hints.FIELDS) do hints.stored[name] = st[6 + i] or nil end
  hints.expiry, hints.ageing = hints.time(st[7]), hints.time(st[8])
  if st[9] == '0' then hints.last_triggers = false end
  hints.untrimmed = tonumber(st[10] or '') or 0
end

local function set_status(new_status)
  status, status_changed = new_status, true
end

local function save_state()
  local out = {'seq', int(seq), 'tseq', int(tseq), 'eseq', int(eseq), 'aseq', int(aseq)}
  if last then out[#out + 1] = 'last'; out[#out + 1] = last end
  if status_changed or not was_stored then out[#out + 1] = 'status'; out[#out + 1] = status end
  local function text(at)
    if at == false then return '-' end
    return at and int(at)
  end
  local now_hints = {nexp = text(hints.expiry), nage = text(hints.ageing),
    ltrig = hints.last_triggers == false and '0' or '1', untrimmed = int(hints.untrimmed)}
  for _, name in ipairs(hints.FIELDS) do
    local value = now_hints[name]
    if value and value ~= hints.stored[name] then
      out[#out + 1] = name; out[#out + 1] = value
    end
  end
  redis.call('HSET', K_STATE, unpack(out))
end
