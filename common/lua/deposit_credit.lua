-- deposit_credit.lua: credit a deposit to an account, at most once per deposit id.
--
-- Included by the gateway's deposit.lua (admin deposits) and the bridge's chain_deposit.lua
-- (vault deposits, id "<txhash>:<logIndex>"), so both credit through the same rules.
--
-- credit_deposit(bal_key, deposits_key, asset, amount, ceiling, deposit_id)
--   bal_key      dex:{u}:bal       hash "<asset>:t", "<asset>:l", "<asset>:dep"
--   deposits_key dex:{u}:deposits  hash depositId -> amount: each id is credited once only
--   amount, ceiling  integer strings (quanta; ceiling 2^53 - 1); deposit_id "" for none
-- Returns {total, locked} after the deposit, or an error reply if the ceiling would be passed
-- or ("DUPLICATE ...") the depositId was credited to this account before.

local function credit_deposit(bal_key, deposits_key, asset, amount_arg, ceiling_arg, deposit_id)
  local amount, ceiling = tonumber(amount_arg), tonumber(ceiling_arg)
  if deposit_id ~= '' and redis.call('HEXISTS', deposits_key, deposit_id) == 1 then
    return redis.error_reply('DUPLICATE deposit ' .. deposit_id .. ' was already credited')
  end
  local total = tonumber(redis.call('HGET', bal_key, asset .. ':t') or '0')
  if total + amount > ceiling then
    return redis.error_reply('BALANCE_CEILING balance would exceed ' .. ceiling_arg)
  end
  local new_total = redis.call('HINCRBY', bal_key, asset .. ':t', amount_arg)
  redis.call('HINCRBY', bal_key, asset .. ':dep', amount_arg)
  if deposit_id ~= '' then redis.call('HSET', deposits_key, deposit_id, amount_arg) end
  local locked = redis.call('HGET', bal_key, asset .. ':l') or '0'
  -- HINCRBY's integer travels back as an integer reply (tostring would print 1e+15).
  return {new_total, locked}
end
