-- match/events.lua: the settlement events of the call (dex:{m}:events) and the settle request.

--#include state.lua

-- Settlement events of the whole call go out together at the end: one stream entry (per
-- EVENTS_PER_ENTRY events) whose fields are the events' eseq -> event JSON, in order. Each
-- event text is built in one concatenation and never joined with the others: this Lua hashes
-- every byte of every string it creates, so a joined copy would cost as much again.
local EVENTS_PER_ENTRY = 1000
local event_args, events_written
per_call(function() event_args, events_written = {}, 0 end)

local function next_eseq()
  eseq = eseq + 1
  events_written = events_written + 1
  return int(eseq)
end

local function emit_event(eseq_text, event_json)
  local n = #event_args
  event_args[n + 1] = eseq_text
  event_args[n + 2] = event_json
end

local function write_events()
  for i = 1, #event_args, 2 * EVENTS_PER_ENTRY do
    redis.call('XADD', K_EVENTS, '*', unpack(event_args, i,
      math.min(i + 2 * EVENTS_PER_ENTRY - 1, #event_args)))
  end
end

-- The settle request, in the same call as the events it is for
-- (common.keys.market_settle_queued): 1 if this call set the flag (the caller then queues one
-- settle task; while the flag stands a task is on its way or at work), else 0.
local function request_settlement()
  if events_written == 0 then return 0 end
  if redis.call('SET', mprefix .. 'settle-queued', '1', 'NX', 'PX', 2000) then return 1 end
  return 0
end
