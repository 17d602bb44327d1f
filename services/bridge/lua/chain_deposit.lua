-- chain_deposit.lua: credit one vault deposit (a Deposited log) once, and count it for the
-- auditor's chain invariant, atomically.
--
-- KEYS[1] dex:{u}:bal       hash  "<asset>:t", "<asset>:dep", "<asset>:cdep", "<asset>:cdust"
-- KEYS[2] dex:{u}:deposits  hash  depositId -> amount (the id is "<txhash>:<logIndex>")
-- ARGV[1] asset  ARGV[2] quanta credited (the amount's whole quanta; may be 0)
-- ARGV[3] ceiling (2^53 - 1)  ARGV[4] depositId
-- ARGV[5] dust: atomic units below one quantum, left in the vault uncredited
-- Returns {total, locked}, or an error reply: "DUPLICATE ..." (credited before: nothing
-- changes) or "BALANCE_CEILING ...".

--#include deposit_credit.lua

local bal_key, deposits_key = KEYS[1], KEYS[2]
local asset, quanta, ceiling, deposit_id, dust = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local credited = credit_deposit(bal_key, deposits_key, asset, quanta, ceiling, deposit_id)
if credited.err then return credited end
redis.call('HINCRBY', bal_key, asset .. ':cdep', quanta)
if dust ~= '0' then redis.call('HINCRBY', bal_key, asset .. ':cdust', dust) end
return credited
