-- match/depth.lua: level totals (dex:{m}:lvl:bids, :asks) and each unit's depth message.
--
-- A unit is one command, one expiry or one cancel-all removal: the level deltas of a unit
-- gather here and become one depth seq (+1) and one depth message, {"seq", "data": {"bids",
-- "asks"}} with each changed level's new total (0: gone), when the unit ends.

--#include state.lua

local bid_changes, ask_changes, changed
-- Level totals are read once per price per call, kept here, and written back once per
-- changed level at the end of the call (write_levels), not once per unit.
local level_totals, level_dirty
local depth_texts  -- the call's depth messages, one per seq, published at the end
per_call(function()
  bid_changes, ask_changes, changed = {}, {}, false
  level_totals = {[K_LB] = {}, [K_LA] = {}}
  level_dirty = {[K_LB] = {}, [K_LA] = {}}
  depth_texts = {}
end)

-- The book's level at price moved by delta (in this unit).
local function level_add(is_bid, price, delta)
  local changes = is_bid and bid_changes or ask_changes
  changes[price] = (changes[price] or 0) + delta
  changed = true
end

-- A unit's deltas onto the totals: changes then holds each changed level's new total.
local function apply_levels(lkey, changes)
  local totals, dirty = level_totals[lkey], level_dirty[lkey]
  for price, delta in pairs(changes) do
    local total = totals[price]
    if total == nil then total = tonumber(redis.call('HGET', lkey, int(price)) or '0') end
    total = total + delta
    if total < 0 then total = 0 end
    totals[price] = total
    dirty[price] = true
    changes[price] = total
  end
end

local function write_levels(lkey)
  local totals, set, del = level_totals[lkey], {}, {}
  for price in pairs(level_dirty[lkey]) do
    local total = totals[price]
    if total > 0 then
      set[#set + 1] = int(price); set[#set + 1] = int(total)
    else
      del[#del + 1] = int(price)
    end
  end
  for i = 1, #set, 1000 do redis.call('HSET', lkey, unpack(set, i, math.min(i + 999, #set))) end
  for i = 1, #del, 500 do redis.call('HDEL', lkey, unpack(del, i, math.min(i + 499, #del))) end
end

local function levels_json(changes, descending)
  local p1, t1 = next(changes)
  if p1 == nil then return '[]' end
  if next(changes, p1) == nil then return '[[' .. int(p1) .. ',' .. int(t1) .. ']]' end
  local list = {}
  for p, total in pairs(changes) do list[#list + 1] = {p, total} end
  if descending then
    table.sort(list, function(a, b) return a[1] > b[1] end)
  else
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  local parts = {}
  for i, level in ipairs(list) do parts[i] = '[' .. int(level[1]) .. ',' .. int(level[2]) .. ']' end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- End of a unit for the book: if it changed, the deltas reach the totals, the depth seq moves
-- and the unit's depth message is kept for publication.
local function end_depth_unit()
  if not changed then return end
  apply_levels(K_LB, bid_changes)
  apply_levels(K_LA, ask_changes)
  seq = seq + 1
  depth_texts[#depth_texts + 1] = '{"seq":' .. int(seq) .. ',"data":{"bids":' ..
    levels_json(bid_changes, true) .. ',"asks":' .. levels_json(ask_changes, false) .. '}}'
  bid_changes, ask_changes, changed = {}, {}, false
end

local function write_all_levels()
  write_levels(K_LB)
  write_levels(K_LA)
end
