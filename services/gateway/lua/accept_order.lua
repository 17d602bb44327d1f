-- accept_order.lua: admit one signed order on its account, atomically.
--
-- Refuses a clientOrderId seen before (ever), checks what the order may lock (the available
-- balance, or for a derivative the free collateral: available + the caller's adjustment =
-- unrealized contribution at mark − initial margin of positions), then the market's status
-- and backlog as the caller read them, in the contract's order of codes (409, 422, 503). If
-- all pass it locks the reservation and records the order. On a single Redis (KEYS[11] given)
-- it also XADDs the command to the market stream, first, so that a stream that refuses the
-- entry (or Redis refusing the first write for memory) leaves nothing applied, and reservation
-- and order exist together or not at all. On a cluster the stream lives in another slot: the
-- order goes into the outbox instead, the caller XADDs it and removes it from the outbox; if
-- the caller dies in between, the outbox sweeper re-sends it (the matcher ignores an order it
-- has).
--
-- KEYS[1] dex:{u}:cids      hash  cid -> market
-- KEYS[2] dex:{u}:ord:<cid> hash  the accepted order
-- KEYS[3] dex:{u}:orders:<m> zset cid by time: the account's orders in the market (listing)
-- KEYS[4] dex:{u}:bal       hash  "<asset>:t", "<asset>:l"
-- KEYS[5] dex:{u}:res       hash  cid -> reserved amount still locked
-- KEYS[6] dex:{u}:outbox    zset  cid by time
-- KEYS[7] dex:{u}:open:<m>  zset  cid by time: the account's open orders in the market (the
--                                 settler removes an order when it applies its done event)
-- KEYS[8] dex:{u}:pos       hash  "<market>:size" -> signed position size (read: the guard)
-- KEYS[9] dex:{u}:oq        hash  "<market>:<side>" -> unfilled qty of open derivative orders
-- KEYS[10] dex:{u}:oqo      hash  cid -> "<qty>|<market>:<side>": the order's share of KEYS[9]
-- KEYS[11] dex:{m}:in       stream the market's commands (single Redis only; optional)
-- ARGV[1] cid  ARGV[2] market  ARGV[3] reserve asset
-- ARGV[4] amount to lock, or "ALL" for a budget of everything available (price-0 MARKET)
-- ARGV[5] now (ms)
-- ARGV[6] command: a JSON object (encoded by the caller) without "reserved"; the script
--         appends ,"reserved":<amount> before its closing brace (no text is substituted)
-- ARGV[7] adjustment added to the available balance (0 for SPOT)
-- ARGV[8] code when the amount is not there (INSUFFICIENT_BALANCE / INSUFFICIENT_MARGIN)
-- ARGV[9] market refusal ("" / MARKET_HALTED / MARKET_CLOSED)
-- ARGV[10] the backlog bound: with KEYS[11], the unmatched entries the stream may hold (lag +
--          pending of the matcher's group, counted here); "FULL" refuses outright (Redis near
--          its memory limit, or the caller's own backlog read on the outbox path)
-- (The group is the matcher's, "matcher": common/keys.py MATCHER_GROUP.)
-- ARGV[11] headroom: free collateral needed beyond the amount locked (0 for most orders)
-- ARGV[12] position field "<market>:size" the order was judged on, or "" (no guard)
-- ARGV[13] that position's size as the caller read it
-- ARGV[14] open-quantity field "<market>:<side>", ARGV[15] its value as the caller read it
-- ARGV[16] the order's qty, added to that field while the order is open
--   When the position or the open quantity moved since the caller read them, the script
--   answers {"RETRY"} and changes nothing: the caller judges the order again.
-- ARGV[17] "1" when the caller found the order over the limit of 2^53 quanta (notional,
--          reservation, position value; LIMIT_EXCEEDED)
-- ARGV[18] DEX_MAX_OPEN_ORDERS: orders the account may have open in this market (one more is
--          TOO_MANY_ORDERS, after the market's refusal and before LIMIT_EXCEEDED)
-- Returns {"OK", command JSON, "SENT" when it is on the stream, else "OUTBOX"}, {"RETRY"} or
-- {code}.

local cids_key, order_key, orders_key, bal_key, res_key, outbox_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local open_orders_key, positions_key, open_qty_key, shares_key, stream_key =
  KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local cid, market, asset, wanted, now, template =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local adjustment, short_code, market_refusal, overloaded =
  tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10]

local headroom = tonumber(ARGV[11] or '0')
local position_field, open_field = ARGV[12] or '', ARGV[14] or ''

if redis.call('HEXISTS', cids_key, cid) == 1 then return {'DUPLICATE'} end
if position_field ~= '' then
  local size = redis.call('HGET', positions_key, position_field) or '0'
  local open = redis.call('HGET', open_qty_key, open_field) or '0'
  if tonumber(size) ~= tonumber(ARGV[13]) or tonumber(open) ~= tonumber(ARGV[15]) then
    return {'RETRY'}
  end
end

local held = redis.call('HMGET', bal_key, asset .. ':t', asset .. ':l')
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
if market_refusal ~= '' then return {market_refusal} end

if redis.call('ZCARD', open_orders_key) >= tonumber(ARGV[18]) then return {'TOO_MANY_ORDERS'} end

-- LIMIT_EXCEEDED (API.md §2): the caller's verdict, or a lock that would take the locked
-- total to 2^53 quanta, where doubles stop being exact (the sum of two values below 2^53
-- is at least 2^53 in doubles exactly when it is in integers).
if ARGV[17] == '1' or locked + amount >= 9007199254740992 then return {'LIMIT_EXCEEDED'} end

if overloaded == 'FULL' then return {'OVERLOADED'} end
if stream_key and redis.call('EXISTS', stream_key) == 1 then
  local waiting = nil
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream_key)) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == 'matcher' then
      -- lag is nil when Redis cannot count it (entries deleted inside the range): XLEN, which
      -- counts matched entries not yet trimmed too, errs on the side of refusing.
      waiting = type(info['lag']) == 'number' and info['lag'] + info['pending'] or nil
    end
  end
  if waiting == nil then waiting = redis.call('XLEN', stream_key) end
  if waiting >= tonumber(overloaded) then return {'OVERLOADED'} end
end

local amount_text = string.format('%d', amount)
local command = string.sub(template, 1, -2) .. ',"reserved":' .. amount_text .. '}'
if stream_key then redis.call('XADD', stream_key, '*', 'c', command) end
redis.call('HSET', cids_key, cid, market)
if amount > 0 then redis.call('HINCRBY', bal_key, asset .. ':l', amount_text) end
redis.call('HSET', res_key, cid, amount_text)
redis.call('HSET', order_key, 'market', market, 'asset', asset, 'reserved', amount_text,
           'acceptedAt', now, 'cmd', command)
redis.call('ZADD', orders_key, now, cid)
redis.call('ZADD', open_orders_key, now, cid)
if open_field ~= '' then
  redis.call('HINCRBY', open_qty_key, open_field, ARGV[16])
  redis.call('HSET', shares_key, cid, ARGV[16] .. '|' .. open_field)
end
if stream_key then return {'OK', command, 'SENT'} end
redis.call('ZADD', outbox_key, now, cid)
return {'OK', command, 'OUTBOX'}
