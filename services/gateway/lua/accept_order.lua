-- accept_order.lua: admit one signed order on its account, atomically.
--
-- Refuses a clientOrderId seen before (ever), checks what the order may lock (the available
-- balance, or for a derivative the free collateral: available + the caller's adjustment =
-- unrealized contribution at mark − initial margin of positions), then the market's status
-- and backlog as the caller read them, in the contract's order of codes (409, 422, 503). If
-- all pass it locks the reservation and records the order. On a single Redis (KEYS[7] given)
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
-- KEYS[7] dex:{m}:in        stream the market's commands (single Redis only; optional)
-- ARGV[1] cid  ARGV[2] market  ARGV[3] reserve asset
-- ARGV[4] amount to lock, or "ALL" for a budget of everything available (price-0 MARKET)
-- ARGV[5] now (ms)
-- ARGV[6] command JSON with the literal placeholder "__RESERVED__" where the amount goes
-- ARGV[7] adjustment added to the available balance (0 for SPOT)
-- ARGV[8] code when the amount is not there (INSUFFICIENT_BALANCE / INSUFFICIENT_MARGIN)
-- ARGV[9] market refusal ("" / MARKET_HALTED / MARKET_CLOSED)
-- ARGV[10] "1" when the market stream is over its backlog bound
-- ARGV[11] DEX_MAX_OPEN_ORDERS: orders the account may have open in this market (one more is
--          TOO_MANY_ORDERS, after the market's refusal and before the backlog)
-- ARGV[12] dex:{u}:open:<m> zset cid by time: the account's open orders in the market (an
--          account-slot key from common/keys.py, here so that the optional KEYS[7] stays last);
--          the settler removes an order when it applies the order's done event
-- Returns {"OK", command JSON, "SENT" when it is on the stream, else "OUTBOX"} or {code}.

local cids_key, order_key, orders_key, bal_key, res_key, outbox_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cid, market, asset, wanted, now, template =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local adjustment, short_code, market_refusal, overloaded =
  tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10]

if redis.call('HEXISTS', cids_key, cid) == 1 then return {'DUPLICATE'} end

local held = redis.call('HMGET', bal_key, asset .. ':t', asset .. ':l')
local total, locked = tonumber(held[1] or '0'), tonumber(held[2] or '0')
local free = total - locked + adjustment
local amount
if wanted == 'ALL' then
  amount = free
  if amount <= 0 then return {short_code} end
else
  amount = tonumber(wanted)
  if amount > free then return {short_code} end
end
if market_refusal ~= '' then return {market_refusal} end
local open_key = ARGV[12]
if redis.call('ZCARD', open_key) >= tonumber(ARGV[11]) then return {'TOO_MANY_ORDERS'} end
if overloaded == '1' then return {'OVERLOADED'} end

local amount_text = string.format('%d', amount)
local command = string.gsub(template, '__RESERVED__', amount_text, 1)
local stream_key = KEYS[7]
if stream_key then redis.call('XADD', stream_key, '*', 'c', command) end
redis.call('HSET', cids_key, cid, market)
if amount > 0 then redis.call('HINCRBY', bal_key, asset .. ':l', amount_text) end
redis.call('HSET', res_key, cid, amount_text)
redis.call('HSET', order_key, 'market', market, 'asset', asset, 'reserved', amount_text,
           'acceptedAt', now, 'cmd', command)
redis.call('ZADD', orders_key, now, cid)
redis.call('ZADD', open_key, now, cid)
if stream_key then return {'OK', command, 'SENT'} end
redis.call('ZADD', outbox_key, now, cid)
return {'OK', command, 'OUTBOX'}
