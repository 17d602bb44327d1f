-- match/state.lua: the market's state hash (dex:{m}:state): status and counters, read once
-- per call and written back once, and the last applied stream id.

--#include text.lua

local status, seq, tseq, eseq, aseq, last
local was_stored        -- the hash held a status before this call
local status_changed = false
-- Stream ids "ms-seq" are compared numerically with the last applied one (parsed once; the
-- apply loop passes the parts of an id it moves `last` to).
local last_ms, last_sq = nil, nil

local function id_parts(a)
  local m, sq = string.match(a, '^(%d+)-(%d+)$')
  return tonumber(m), tonumber(sq)
end

local function load_state()
  local st = redis.call('HMGET', K_STATE, 'status', 'seq', 'tseq', 'eseq', 'aseq', 'last')
  status, was_stored = st[1] or 'OPEN', st[1] ~= false
  seq, tseq, eseq, aseq = tonumber(st[2] or '0'), tonumber(st[3] or '0'),
    tonumber(st[4] or '0'), tonumber(st[5] or '0')
  last = st[6]
  if last and last ~= '' then last_ms, last_sq = id_parts(last) end
end

local function set_status(new_status)
  status, status_changed = new_status, true
end

local function save_state()
  local out = {'seq', int(seq), 'tseq', int(tseq), 'eseq', int(eseq), 'aseq', int(aseq)}
  if last then out[#out + 1] = 'last'; out[#out + 1] = last end
  if status_changed or not was_stored then out[#out + 1] = 'status'; out[#out + 1] = status end
  redis.call('HSET', K_STATE, unpack(out))
end
