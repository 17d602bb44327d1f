-- accept_order.lua: admit one signed order on its account, atomically.
--
-- Refuses a clientOrderId seen before (ever), checks the available balance of the reserved
-- asset, locks the reservation, records the order and puts it in the outbox. The caller then
-- XADDs the command to the market stream and removes it from the outbox; if the caller dies
-- in between, the outbox sweeper re-sends it (the matcher ignores an order it already has).
--
-- KEYS[1] dex:{u}:cids     hash  cid -> market
-- KEYS[2] dex:{u}:ord:<cid> hash the accepted order
-- KEYS[3] dex:{u}:orders   zset  "<market>|<cid>" by time
-- KEYS[4] dex:{u}:bal      hash  "<asset>:t", "<asset>:l"
-- KEYS[5] dex:{u}:res      hash  cid -> reserved amount still locked
-- KEYS[6] dex:{u}:outbox   zset  cid by time
-- ARGV[1] cid  ARGV[2] market  ARGV[3] reserve asset  ARGV[4] amount  ARGV[5] now (ms)
-- ARGV[6] command JSON (what goes on the market stream)
-- Returns "OK", "DUPLICATE" or "INSUFFICIENT_BALANCE".

local cids_key, order_key, orders_key, bal_key, res_key, outbox_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cid, market, asset, amount, now, command =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]

if redis.call('HEXISTS', cids_key, cid) == 1 then return 'DUPLICATE' end

local total = tonumber(redis.call('HGET', bal_key, asset .. ':t') or '0')
local locked = tonumber(redis.call('HGET', bal_key, asset .. ':l') or '0')
if amount > total - locked then return 'INSUFFICIENT_BALANCE' end

redis.call('HSET', cids_key, cid, market)
if amount > 0 then redis.call('HINCRBY', bal_key, asset .. ':l', ARGV[4]) end
redis.call('HSET', res_key, cid, ARGV[4])
redis.call('HSET', order_key, 'market', market, 'asset', asset, 'reserved', ARGV[4],
           'acceptedAt', now, 'cmd', command)
redis.call('ZADD', orders_key, now, market .. '|' .. cid)
redis.call('ZADD', outbox_key, now, cid)
return 'OK'
