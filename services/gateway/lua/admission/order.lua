-- admission/order.lua: judge one signed order on its account, then record it; the one body
-- of order admission, included by accept_order.lua (one order) and accept_batch.lua (the
-- PLACE actions of a signed batch).
--
-- judge_order(k, a, ahead) refuses a clientOrderId seen before (ever), checks what the order
-- may lock (the available balance, or for a derivative the free collateral: available + the
-- caller's adjustment = unrealized contribution at mark − initial margin of positions), then
-- the market's status and backlog as the caller read them, in the contract's order of codes
-- (409, 422, 503). It writes nothing. It answers {code}, {"RETRY"} when the position or open
-- quantity the caller judged on moved, or {"OK", command, amount, locked, open, hold locked}:
-- the command with ,"reserved":<amount> appended, the amount to lock, and the raw values it
-- read of the locked total, the side's open quantity and the pair hold asset's locked total
-- (for undo_order).
-- record_order(k, a, verdict) locks the reservation, records the order and, without a
-- stream key, puts it in the outbox (no XADD: the caller does that, first where it can).
-- undo_order(k, a, verdict) restores exactly what record_order wrote, to the raw values read.
--
-- k: the keys by name, as accept_order.lua's KEYS[1..11] say: cids, order, orders, bal, res,
--    outbox, open_orders, positions, open_qty, shares, stream (nil on the outbox path).
-- a: accept_order.lua's ARGV[1..23], in that order (see there).
-- ahead: commands this script will add to the stream before this one (0 for one order).
-- waiting_of: stream_waiting, or a caller's copy that remembers each stream's count (a batch
--   reads each stream once: nothing else runs on the stream while the script does).

-- The unmatched entries of a market stream: lag + pending of the matcher's group (common/keys.py
-- MATCHER_GROUP), or false for a stream that does not exist yet (no bound applies to it).
-- With ``below``: the stream's length when that is under it. Every unmatched entry is still in
-- the stream (match.lua trims only what it has applied, MINID its last applied id), so the
-- length bounds them, and a stream shorter than ``below`` needs no XINFO (a tenth of this
-- script's instructions) to be found under the bound.
local function stream_waiting(stream, below)
  if below then
    local length = redis.call('XLEN', stream)
    if length > 0 and length < below then return length end
  end
  -- One call, not EXISTS and XINFO: XINFO's error for a missing stream says the same.
  -- (Anything else XINFO refuses, a key of another type, the XADD refuses as well.)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if groups.err then return false end
  local waiting = nil
  for _, group in ipairs(groups) do
    -- The three fields read straight from the flat reply (no table of each group's fields).
    local name, lag, pending
    for i = 1, #group, 2 do
      local field = group[i]
      if field == 'name' then
        name = group[i + 1]
      elseif field == 'lag' then
        lag = group[i + 1]
      elseif field == 'pending' then
        pending = group[i + 1]
      end
    end
    if name == 'matcher' then
      -- lag is nil when Redis cannot count it (entries deleted inside the range): XLEN,
      -- which counts matched entries not yet trimmed too, errs on the side of refusing.
      waiting = type(lag) == 'number' and lag + pending or nil
    end
  end
  if waiting == nil then waiting = redis.call('XLEN', stream) end
  return waiting
end

-- The clientOrderIds of an order's attached TP/SL children (a[19], space-separated; absent:
-- none): taken with the order's own, each counted as an open order of the market from now on
-- (the settler removes one when its done event, or its unfilled parent's, is applied).
local NO_CHILDREN = {}
local function attached_children(a)
  if not a[19] or a[19] == '' then return NO_CHILDREN end
  local list = {}
  for child in string.gmatch(a[19], '%S+') do list[#list + 1] = child end
  return list
end

-- A SPOT SELL parent's pair hold (a[22] asset, a[23] amount; docs/api.md "Attached TP/SL and
-- position TP/SL"): its reservation field, asset and amount, or nil.
local function pair_hold(a)
  if not a[23] then return nil end  -- most orders: no tonumber (a strtod) for them
  local amount = tonumber(a[23])
  if amount <= 0 then return nil end
  return a[1] .. '|tpsl', a[22], amount
end

local function judge_order(k, a, ahead, waiting_of)
  local cid, asset, wanted, template = a[1], a[3], a[4], a[6]
  local adjustment, short_code, market_refusal, overloaded =
    tonumber(a[7]), a[8], a[9], a[10]
  local headroom = tonumber(a[11] or '0')
  local position_field, open_field = a[12] or '', a[14] or ''

  if redis.call('HEXISTS', k.cids, cid) == 1 then return {'DUPLICATE'} end
  local children = attached_children(a)
  for _, child in ipairs(children) do
    if redis.call('HEXISTS', k.cids, child) == 1 then return {'DUPLICATE'} end
  end
  local open = false
  if position_field ~= '' then
    local size = redis.call('HGET', k.positions, position_field) or '0'
    open = redis.call('HGET', k.open_qty, open_field)
    if tonumber(size) ~= tonumber(a[13]) or tonumber(open or '0') ~= tonumber(a[15]) then
      return {'RETRY'}
    end
  end

  local held = redis.call('HMGET', k.bal, asset .. ':t', asset .. ':l')
  local total, locked = tonumber(held[1] or '0'), tonumber(held[2] or '0')
  local free = total - locked + adjustment
  local amount
  if wanted == 'ALL' then
    amount = free
    if amount <= 0 then return {short_code} end
  else
    amount = tonumber(wanted)
    if amount + headroom > free then return {short_code} end
  end
  local hold_field, hold_asset, hold_amount = pair_hold(a)
  local hold_locked = false
  if hold_field then
    local h = redis.call('HMGET', k.bal, hold_asset .. ':t', hold_asset .. ':l')
    hold_locked = h[2] or false
    local hold_free = tonumber(h[1] or '0') - tonumber(h[2] or '0')
    if hold_asset == asset then hold_free = hold_free - amount end
    if hold_amount > hold_free then return {short_code} end
  end
  if market_refusal ~= '' then return {market_refusal} end

  if redis.call('ZCARD', k.open_orders) + #children >= tonumber(a[18]) then
    return {'TOO_MANY_ORDERS'}
  end

  -- LIMIT_EXCEEDED (API.md §2): the caller's verdict, or a lock that would take the locked
  -- total to 2^53 quanta, where doubles stop being exact (the sum of two values below 2^53
  -- is at least 2^53 in doubles exactly when it is in integers).
  if a[17] == '1' or locked + amount >= 9007199254740992 then return {'LIMIT_EXCEEDED'} end
  if hold_field and tonumber(hold_locked or '0') + hold_amount >= 9007199254740992 then
    return {'LIMIT_EXCEEDED'}
  end

  if overloaded == 'FULL' then return {'OVERLOADED'} end
  -- A batch's waiting_of counts each stream once, exactly, for all its actions.
  local bound = tonumber(overloaded)
  local waiting = k.stream and (waiting_of or stream_waiting)(k.stream, bound - ahead)
  if waiting and waiting + ahead >= bound then return {'OVERLOADED'} end

  local amount_text = string.format('%d', amount)
  local command = string.sub(template, 1, -2) .. ',"reserved":' .. amount_text .. '}'
  return {'OK', command, amount_text, held[2] or false, open, hold_locked}
end

local function record_order(k, a, verdict)
  local cid, market, asset, now = a[1], a[2], a[3], a[5]
  local command, amount_text = verdict[2], verdict[3]
  local open_field = a[14] or ''
  redis.call('HSET', k.cids, cid, market)
  if tonumber(amount_text) > 0 then redis.call('HINCRBY', k.bal, asset .. ':l', amount_text) end
  redis.call('HSET', k.res, cid, amount_text)
  local hold_field, hold_asset, hold_amount = pair_hold(a)
  if hold_field then
    redis.call('HINCRBY', k.bal, hold_asset .. ':l', string.format('%d', hold_amount))
    redis.call('HSET', k.res, hold_field, string.format('%d', hold_amount))
  end
  redis.call('HSET', k.order, 'market', market, 'asset', asset, 'reserved', amount_text,
             'acceptedAt', now, 'cmd', command)
  redis.call('ZADD', k.orders, now, cid)
  redis.call('ZADD', k.open_orders, now, cid)
  for _, child in ipairs(attached_children(a)) do
    redis.call('HSET', k.cids, child, market)
    redis.call('ZADD', k.open_orders, now, child)
  end
  if open_field ~= '' then
    redis.call('HINCRBY', k.open_qty, open_field, a[16])
    redis.call('HSET', k.shares, cid, a[16] .. '|' .. open_field)
  end
  if not k.stream then redis.call('ZADD', k.outbox, now, cid) end
end

local function restore(key, field, raw)
  if raw then redis.call('HSET', key, field, raw) else redis.call('HDEL', key, field) end
end

local function undo_order(k, a, verdict)
  local cid, asset = a[1], a[3]
  local open_field = a[14] or ''
  redis.call('HDEL', k.cids, cid)
  local hold_field, hold_asset = pair_hold(a)
  if hold_field then
    restore(k.bal, hold_asset .. ':l', verdict[6])
    redis.call('HDEL', k.res, hold_field)
  end
  restore(k.bal, asset .. ':l', verdict[4])
  redis.call('HDEL', k.res, cid)
  redis.call('DEL', k.order)
  redis.call('ZREM', k.orders, cid)
  redis.call('ZREM', k.open_orders, cid)
  for _, child in ipairs(attached_children(a)) do
    redis.call('HDEL', k.cids, child)
    redis.call('ZREM', k.open_orders, child)
  end
  if open_field ~= '' then
    restore(k.open_qty, open_field, verdict[5])
    redis.call('HDEL', k.shares, cid)
  end
  if not k.stream then redis.call('ZREM', k.outbox, cid) end
end
