-- cover.lua: take an account's negative collateral to zero, recording the amount to cover.
--
-- First of two steps that make an account whole from the insurance fund: this one zeroes a
-- negative total and records {amount, id} in the account's liquidation hash; the caller then
-- debits the insurance fund once (account_step keyed "cover:<user>" with the id) and calls
-- cover_done. A pending cover is returned again until it is done, so a crash loses nothing.
--
-- KEYS[1] dex:{u}:bal  hash  "<asset>:t"
-- KEYS[2] dex:{u}:liq  hash  cover_amount, cover_id, covers (count)
-- ARGV[1] asset  ARGV[2] "done" to finish the pending cover, else "start"
-- Returns {amount, id} of the pending cover ({0, 0} when none).

local bal_key, liq_key = KEYS[1], KEYS[2]
local asset, mode = ARGV[1], ARGV[2]

if mode == 'done' then
  redis.call('HDEL', liq_key, 'cover_amount', 'cover_id')
  return {0, 0}
end
local pending = redis.call('HGET', liq_key, 'cover_amount')
if pending then
  return {tonumber(pending), tonumber(redis.call('HGET', liq_key, 'cover_id'))}
end
local total = tonumber(redis.call('HGET', bal_key, asset .. ':t') or '0')
if total >= 0 then return {0, 0} end
local id = redis.call('HINCRBY', liq_key, 'covers', 1)
redis.call('HSET', bal_key, asset .. ':t', '0')
redis.call('HSET', liq_key, 'cover_amount', string.format('%d', -total), 'cover_id', id)
return {-total, id}
