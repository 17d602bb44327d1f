-- match/input.lua: the call's entries of the market stream (dex:{m}:in): those passed in
-- ARGV, then those the script reads itself for its consumer; their acknowledgement.
--
-- An entry whose field o is "1" was XADDed by the gateway's admission script in the same
-- atomic call that refused a clientOrderId seen before (accept_order.lua, accept_batch.lua,
-- accept_slice.lua on a single Redis): its order is on the stream once, ever, so the matcher
-- needs no per-order check that it has seen it (a replay of the entry itself is skipped by
-- its stream position). Every other entry (the outbox path, whose sweeper may send an order
-- twice; entries passed in ARGV; anything else) keeps the check (match/commands.lua).

--#include state.lua

-- {stream id, command JSON, sent once (true/nil)} of every entry to apply, in order, and the
-- ids read here.
local function read_entries()
  local entries, read_ids = {}, {}
  for i = FIRST_ENTRY_ARG, #argv, 2 do entries[#entries + 1] = {argv[i], argv[i + 1]} end
  if read_count <= 0 then return entries, read_ids end
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', read_count,
                           'STREAMS', K_IN, '>')
  if got and got[1] then
    for _, entry in ipairs(got[1][2]) do
      local fields, raw, once = entry[2], '{}', nil
      for f = 1, #fields, 2 do
        local name = fields[f]
        if name == 'c' then
          raw = fields[f + 1]
        elseif name == 'o' then
          once = fields[f + 1] == '1'
        end
      end
      entries[#entries + 1] = {entry[1], raw, once}
      read_ids[#read_ids + 1] = entry[1]
    end
  end
  return entries, read_ids
end

-- Whether the open-order sets of the orders placed in this call may be written at its end
-- (match/orders.lua open_set_add): not when an entry could be a cancel_all or an amend. A
-- plain search of each entry's text: an order whose id happens to hold one of the words only
-- costs its call the deferral.
local function may_defer_open(entries)
  for i = 1, #entries do
    local raw = entries[i][2]
    if string.find(raw, 'cancel_all', 1, true) or string.find(raw, 'amend', 1, true) then
      return false
    end
  end
  return true
end

-- {stream id, command JSON, sent once (true/nil)} of every entry to apply, in order, and the
-- ids read here; decides defer_open for them.
local function input_entries()
  local entries, read_ids = read_entries()
  defer_open = may_defer_open(entries)
  return entries, read_ids
end

-- Acknowledge the entries read here. Everything up to the last applied id is applied (a
-- replay skips it) and, on this path, acknowledged too (own and predecessors' pending entries
-- are applied and acknowledged before the script reads new ones): drop it, whole stream nodes
-- only, so the input stays short; once TRIM_EVERY have been acknowledged since the last trim
-- (match/state.lua untrimmed).
local function acknowledge(read_ids)
  if #read_ids == 0 then return end
  redis.call('XACK', K_IN, group, unpack(read_ids))
  hints.untrimmed = hints.untrimmed + #read_ids
  if hints.untrimmed >= TRIM_EVERY then
    redis.call('XTRIM', K_IN, 'MINID', '~', last)
    hints.untrimmed = 0
  end
end
