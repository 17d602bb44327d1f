-- deposit.lua: credit an account and count it as a deposit, atomically.
--
-- KEYS[1] dex:{u}:bal  hash  "<asset>:t", "<asset>:l", "<asset>:dep"
-- KEYS[2] dex:{u}:deposits  hash  depositId -> amount: each id is credited once only
-- ARGV[1] asset  ARGV[2] amount (positive integer string)  ARGV[3] ceiling (2^53 - 1)
-- ARGV[4] depositId, or "" for a deposit without one
-- Returns {total, locked} after the deposit, or an error reply if the ceiling would be passed
-- or ("DUPLICATE ...") the depositId was credited to this account before. The rules are
-- common/lua/deposit_credit.lua's, shared with the bridge's vault deposits.

--#include deposit_credit.lua

local bal_key, deposits_key = KEYS[1], KEYS[2]
local asset, amount, ceiling, deposit_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
return credit_deposit(bal_key, deposits_key, asset, amount, ceiling, deposit_id)
