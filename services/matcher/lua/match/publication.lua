-- match/publication.lua: what the call publishes, all at its end, in chunks: orderchanges:
-- (every order change of the call, as of the end of its unit, in order; the broadcaster
-- splits them into the users' orders: feeds), depth: and trade:.

--#include depth.lua

local touched, touched_list  -- the orders changed in this unit
local unit_trades  -- every trade of this call: its trade: publications at the end
local order_texts  -- every order change of this call: its orderchanges: publications
per_call(function() touched, touched_list, unit_trades, order_texts = {}, {}, {}, {} end)
-- Runs of texts joined into one publication stay below CHUNK_BYTES: a join up to the Lua
-- buffer's size (8 KB) makes one string; a longer one makes a tower of intermediate strings,
-- each of whose bytes this Lua hashes again.
local CHUNK_BYTES = 7000

-- The order changed in this unit: it is published when the unit ends.
local function touch(o)
  if not touched[o.key] then
    touched[o.key] = true
    touched_list[#touched_list + 1] = o
  end
end

-- A trigger order's fields of its publication (match/triggers.lua; records.lua t and tr).
local function trigger_json(o)
  local src, tp, fired = string.match(o.t, '^([^|]*)|([^|]*)|([^|]*)|')
  local text = ',"triggerPrice":' .. tp .. ',"triggerSource":"' .. src .. '","triggered":' ..
    (fired == '1' and 'true' or 'false')
  if o.tr then
    local delta, unit = string.match(o.tr, '^([^|]*)|([^|]*)|')
    text = text .. ',"trailingDelta":' .. delta .. ',"trailingUnit":"' .. unit .. '"'
  end
  return text
end

-- An order change as the orderchanges: publication lists it (the data of the user's orders:
-- update), built in one concatenation (see match/events.lua).
local function order_publication(o)
  local reason = (o.reason and o.reason ~= '') and q(o.reason) or 'null'
  return '{"clientOrderId":' .. q(o.clientOrderId) ..
    ',"userId":' .. q(o.userId) .. ',"market":' .. market_json .. ',"side":"' .. o.side ..
    '","type":"' .. o.type .. '","timeInForce":"' .. o.timeInForce .. '","reduceOnly":' ..
    (o.reduceOnly == '1' and 'true' or 'false') .. ',"expiresAt":' .. o.expiresAt ..
    ',"price":' .. int(o.price) .. ',"qty":' .. int(o.qty) .. ',"filled":' .. int(o.filled) ..
    ',"status":"' .. o.status .. '","reason":' .. reason .. ',"ts":' .. o.ts ..
    ',"updatedTs":' .. now_text .. (o.agent and (',"agent":' .. q(o.agent)) or '') ..
    (o.amended and ',"amended":true' or '') .. (o.t and trigger_json(o) or '') .. '}'
end

-- End of one unit: its depth seq and message (if the book changed), the text of each order
-- it changed (the order as it stands now; published at the call's end).
local function end_unit()
  end_depth_unit()
  local n = #touched_list
  if n > 0 then
    local m = #order_texts
    for i = 1, n do
      order_texts[m + i] = order_publication(touched_list[i])
    end
    touched, touched_list = {}, {}
  end
end

-- Runs of texts[i..j] of at most CHUNK_BYTES, in order: send(i, j) for each.
local function in_chunks(texts, send)
  local i, n = 1, #texts
  while i <= n do
    local j, size = i, #texts[i]
    while j < n and size + #texts[j + 1] < CHUNK_BYTES do
      j = j + 1
      size = size + #texts[j] + 1
    end
    send(i, j)
    i = j + 1
  end
end

-- head, texts[i..j] separated by commas, tail: one string made in one copy (joining the
-- texts and then wrapping the join would copy, and hash, every byte twice).
local function wrapped(head, texts, i, j, tail)
  local parts, n = {head, texts[i]}, 2
  for k = i + 1, j do
    parts[n + 1], parts[n + 2] = ',', texts[k]
    n = n + 2
  end
  parts[n + 1] = tail
  return table.concat(parts)
end

-- depth: the call's seqs, as few publications as the chunks allow; a publication with
-- several seqs is a batch the broadcaster splits back into one update per seq
-- (common.events.depth_updates); a lone seq goes out as its own message.
local function publish_depth()
  local first_seq = seq - #depth_texts + 1
  in_chunks(depth_texts, function(i, j)
    if i == j then
      redis.call(publish, chprefix .. 'depth:' .. market, depth_texts[i])
    else
      redis.call(publish, chprefix .. 'depth:' .. market, wrapped(
        '{"seq":' .. int(first_seq + j - 1) .. ',"batch":[', depth_texts, i, j, ']}'))
    end
  end)
end

-- trade: every trade of the call, in order; seq = the last trade's of each publication. (The
-- trades stream, written trade by trade, is trimmed here, in a call whose trades passed a
-- multiple of TRIM_EVERY: match/state.lua.)
local function publish_trades()
  if #unit_trades == 0 then return end
  if math.floor(tseq / TRIM_EVERY) ~= math.floor(tseq_at_start / TRIM_EVERY) then
    redis.call('XTRIM', K_TRADES, 'MAXLEN', '~', trades_maxlen)
  end
  local first_tseq = tseq - #unit_trades + 1
  in_chunks(unit_trades, function(i, j)
    redis.call(publish, chprefix .. 'trade:' .. market, wrapped(
      '{"seq":' .. int(first_tseq + j - 1) .. ',"data":[', unit_trades, i, j, ']}'))
  end)
end

-- orderchanges:<market>: every order change of the call, in order, {"seq": now, "data":
-- [order, ...]} per chunk. The broadcaster hands each order to the orders:<userId> feed of
-- its user (services/broadcaster/feeds.py OrderChanges), which numbers it as before; no
-- client subscribes to this channel (it is not a topic of API.md section 7).
local function publish_orders()
  if #order_texts == 0 then return end
  local channel, head = chprefix .. 'orderchanges:' .. market, '{"seq":' .. now_text .. ',"data":['
  in_chunks(order_texts, function(i, j)
    redis.call(publish, channel, wrapped(head, order_texts, i, j, ']}'))
  end)
end
