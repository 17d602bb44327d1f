-- deposit.lua: credit an account and count it as a deposit, atomically.
--
-- KEYS[1] dex:{u}:bal  hash  "<asset>:t", "<asset>:l", "<asset>:dep"
-- ARGV[1] asset  ARGV[2] amount (positive integer string)  ARGV[3] ceiling (2^53 - 1)
-- Returns {total, locked} after the deposit, or an error reply if the ceiling would be passed.

local bal_key = KEYS[1]
local asset, amount, ceiling = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local total = tonumber(redis.call('HGET', bal_key, asset .. ':t') or '0')
if total + amount > ceiling then
  return redis.error_reply('BALANCE_CEILING balance would exceed ' .. ARGV[3])
end
local new_total = redis.call('HINCRBY', bal_key, asset .. ':t', ARGV[2])
redis.call('HINCRBY', bal_key, asset .. ':dep', ARGV[2])
local locked = redis.call('HGET', bal_key, asset .. ':l') or '0'
-- HINCRBY's integer travels back as an integer reply (tostring would print 1e+15).
return {new_total, locked}
