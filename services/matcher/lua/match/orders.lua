-- match/orders.lua: an order's end (final status, open set, done event), taking a resting
-- order off the book, and replies to the command's sender.

--#include records.lua
--#include events.lua
--#include publication.lua
--#include attached.lua

-- Open: resting on the book, or waiting for its trigger (match/triggers.lua).
local function open_order(o)
  return o and (o.status == 'NEW' or o.status == 'PARTIAL' or o.status == 'UNTRIGGERED')
end

-- The open-order sets (dex:{m}:uo:<user>, read by cancel_all and the liquidation engine): in
-- a call whose entries hold no cancel_all (which reads the set within the call) and no amend
-- (which takes a closed order out of it directly), an order placed in the call that rests is
-- added at the call's end (write_open_sets) instead of at once, so one that also ends in the
-- call (a maker a later taker of the batch consumes, a cancel) never enters its set: no SADD,
-- no SREM. match/input.lua decides (defer_open); every other order is added and removed at
-- once, as before. A module that reads a set within a call, or takes an order out of it other
-- than through open_set_remove, must turn the deferral off for its commands (may_defer_open).
local fresh_open, fresh_list
per_call(function() fresh_open, fresh_list = {}, {} end)

-- An order rests: into its user's open set (a new order of a deferring call: at the end).
local function open_set_add(o)
  if defer_open and o.t == nil then
    fresh_open[o.key] = true
    fresh_list[#fresh_list + 1] = o
  else
    redis.call('SADD', uprefix .. o.userId, o.clientOrderId)
  end
end

-- A resting order ends: out of its user's open set (unless it never went in).
local function open_set_remove(o)
  if fresh_open[o.key] then
    fresh_open[o.key] = nil
  else
    redis.call('SREM', uprefix .. o.userId, o.clientOrderId)
  end
end

-- The call's end: the orders placed in it that rest still.
local function write_open_sets()
  for i = 1, #fresh_list do
    local o = fresh_list[i]
    if fresh_open[o.key] and open_order(o) then
      redis.call('SADD', uprefix .. o.userId, o.clientOrderId)
    end
  end
end

-- The keys an untriggered order waits in: its trigger set (by source and direction) and, for
-- a trailing stop, its trailing set (common/keys.py market_triggers, market_trailing).
-- A stop BUY fires at source >= trigger (U), a SELL at <= (D); a take-profit is mirrored.
local function trigger_direction(o)
  local stop = string.sub(o.type, 1, 11) ~= 'TAKE_PROFIT'
  if (o.side == 'BUY') == stop then return 'U' end
  return 'D'
end

local function trigger_source(o)
  return string.match(o.t, '^([^|]*)|')
end

-- Take an untriggered order out of the sets it waits in (and the expiry index).
local function unpark(o)
  local member = book_member(o)
  local src = trigger_source(o)
  redis.call('ZREM', mprefix .. 'trig:' .. src .. ':' .. trigger_direction(o), member)
  if o.tr then
    redis.call('ZREM', mprefix .. 'trail:' .. src .. ':' .. string.sub(o.side, 1, 1), member)
  end
  if o.expiresAt ~= '0' then
    redis.call('ZREM', K_EXP, (o.side == 'BUY' and 'B' or 'S') .. member)
  end
end

-- An order reaches a final status: record, leave the open set, done event.
-- (A taker's record is written whole once its command is done: see match/commands.lua.)
local function finish(o, new_status, reason)
  o.status, o.reason = new_status, reason or ''
  if not o.incoming then
    save_final(o)
    open_set_remove(o)
  end
  local e = next_eseq()
  emit_event(e, '{"eseq":' .. e .. ',"k":"done","user":' .. q(o.userId) .. ',"cid":' ..
    q(o.clientOrderId) .. ',"side":"' .. o.side .. '","status":"' .. new_status ..
    '","reason":' .. (reason and q(reason) or 'null') .. ',"filled":' .. int(o.filled) ..
    ',"ts":' .. now_text .. tpsl.unborn_json(o) .. '}')
  touch(o)
end

-- Take a resting order off its level: the book, the expiry index, the level's total.
local function take_off_book(o)
  if o.status == 'UNTRIGGERED' then unpark(o); return end
  local is_bid = o.side == 'BUY'
  local member = book_member(o)
  redis.call('ZREM', is_bid and K_BIDS or K_ASKS, member)
  if o.expiresAt ~= '0' then redis.call('ZREM', K_EXP, (is_bid and 'B' or 'S') .. member) end
  level_add(is_bid, o.price, -(o.qty - o.filled))
end

-- Take a resting order off the book (cancel, self-trade, expiry) with a final status.
local function remove_resting(o, new_status, reason)
  take_off_book(o)
  finish(o, new_status, reason)
end

-- Remove a list of open orders one by one, in arrival order, each its own unit.
local function remove_all(list, reason)
  table.sort(list, function(a, b) return tonumber(a.aseq) < tonumber(b.aseq) end)
  for _, o in ipairs(list) do
    remove_resting(o, 'CXL', reason)
    end_unit()
  end
  return #list
end

-- The command's answer onto its reply list, when it asks for one.
local function reply(cmd, body)
  if cmd.reply and cmd.reply ~= cjson.null and cmd.reply ~= '' then
    redis.call('LPUSH', cmd.reply, body)
    redis.call('EXPIRE', cmd.reply, 60)
  end
end
