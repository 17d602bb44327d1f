-- deposit.lua: credit an account and count it as a deposit, atomically.
--
-- KEYS[1] dex:{u}:bal  hash  "<asset>:t", "<asset>:l", "<asset>:dep"
-- KEYS[2] dex:{u}:deposits  hash  depositId -> amount: each id is credited once only
-- ARGV[1] asset  ARGV[2] amount (positive integer string)  ARGV[3] ceiling (2^53 - 1)
-- ARGV[4] depositId, or "" for a deposit without one
-- Returns {total, locked} after the deposit, or an error reply if the ceiling would be passed
-- or ("DUPLICATE ...") the depositId was credited to this account before.

local bal_key = KEYS[1]
local asset, amount, ceiling = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local deposit_id = ARGV[4]
if deposit_id ~= '' and redis.call('HEXISTS', KEYS[2], deposit_id) == 1 then
  return redis.error_reply('DUPLICATE deposit ' .. deposit_id .. ' was already credited')
end
local total = tonumber(redis.call('HGET', bal_key, asset .. ':t') or '0')
if total + amount > ceiling then
  return redis.error_reply('BALANCE_CEILING balance would exceed ' .. ARGV[3])
end
local new_total = redis.call('HINCRBY', bal_key, asset .. ':t', ARGV[2])
redis.call('HINCRBY', bal_key, asset .. ':dep', ARGV[2])
if deposit_id ~= '' then redis.call('HSET', KEYS[2], deposit_id, ARGV[2]) end
local locked = redis.call('HGET', bal_key, asset .. ':l') or '0'
-- HINCRBY's integer travels back as an integer reply (tostring would print 1e+15).
return {new_total, locked}
