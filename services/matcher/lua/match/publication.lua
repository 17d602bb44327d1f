-- match/publication.lua: what the call publishes: orders: (one message per changed order, at
-- the end of each unit), depth: and trade: (all of the call's, at its end, in chunks).

--#include depth.lua

local touched, touched_list = {}, {}  -- the orders changed in this unit
local unit_trades = {}  -- every trade of this call: its trade: publications at the end
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

-- The orders: publication of an order, built in one concatenation (see match/events.lua).
local function order_publication(o)
  local reason = (o.reason and o.reason ~= '') and q(o.reason) or 'null'
  return '{"seq":' .. now_text .. ',"data":{"clientOrderId":' .. q(o.clientOrderId) ..
    ',"userId":' .. q(o.userId) .. ',"market":' .. market_json .. ',"side":"' .. o.side ..
    '","type":"' .. o.type .. '","timeInForce":"' .. o.timeInForce .. '","reduceOnly":' ..
    (o.reduceOnly == '1' and 'true' or 'false') .. ',"expiresAt":' .. o.expiresAt ..
    ',"price":' .. int(o.price) .. ',"qty":' .. int(o.qty) .. ',"filled":' .. int(o.filled) ..
    ',"status":"' .. o.status .. '","reason":' .. reason .. ',"ts":' .. o.ts ..
    ',"updatedTs":' .. now_text .. (o.agent and (',"agent":' .. q(o.agent)) or '') ..
    (o.amended and ',"amended":true' or '') .. (o.t and trigger_json(o) or '') .. '}}'
end

-- End of one unit: its depth seq and message (if the book changed), its order publications.
local function end_unit()
  end_depth_unit()
  local n = #touched_list
  if n > 0 then
    for i = 1, n do
      local o = touched_list[i]
      redis.call(publish, chprefix .. 'orders:' .. o.userId, order_publication(o))
    end
    touched, touched_list = {}, {}
  end
end

-- Runs of texts[i..j] of at most CHUNK_BYTES joined, in order: send(j, joined, i == j).
local function in_chunks(texts, send)
  local i, n = 1, #texts
  while i <= n do
    local j, size = i, #texts[i]
    while j < n and size + #texts[j + 1] < CHUNK_BYTES do
      j = j + 1
      size = size + #texts[j] + 1
    end
    send(j, i == j and texts[i] or table.concat(texts, ',', i, j), i == j)
    i = j + 1
  end
end

-- depth: the call's seqs, as few publications as the chunks allow; a publication with
-- several seqs is a batch the broadcaster splits back into one update per seq
-- (common.events.depth_updates); a lone seq goes out as its own message.
local function publish_depth()
  local first_seq = seq - #depth_texts + 1
  in_chunks(depth_texts, function(j, joined, single)
    if single then
      redis.call(publish, chprefix .. 'depth:' .. market, joined)
    else
      redis.call(publish, chprefix .. 'depth:' .. market,
        '{"seq":' .. int(first_seq + j - 1) .. ',"batch":[' .. joined .. ']}')
    end
  end)
end

-- trade: every trade of the call, in order; seq = the last trade's of each publication. (The
-- trades stream, written trade by trade, is trimmed here, once per call.)
local function publish_trades()
  if #unit_trades == 0 then return end
  redis.call('XTRIM', K_TRADES, 'MAXLEN', '~', trades_maxlen)
  local first_tseq = tseq - #unit_trades + 1
  in_chunks(unit_trades, function(j, joined)
    redis.call(publish, chprefix .. 'trade:' .. market,
      '{"seq":' .. int(first_tseq + j - 1) .. ',"data":[' .. joined .. ']}')
  end)
end
