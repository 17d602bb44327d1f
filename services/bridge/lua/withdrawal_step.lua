-- withdrawal_step.lua: move one withdrawal to its next status, once, atomically.
--
-- PENDING (no state yet) -> SENT (permit signed; the transaction, when there is one, recorded
-- before it is sent) -> SENT again (a new transaction for the same permit) -> CONFIRMED (the
-- vault paid it: counted in "<asset>:cwd") or FAILED (the permit can no longer pay: the
-- amount is returned to the account's total and taken off its withdrawals). CONFIRMED and
-- FAILED are final: a step asked of a final withdrawal changes nothing and answers its status.
--
-- KEYS[1] dex:{u}:wd-state  hash  withdrawalId -> JSON state
-- KEYS[2] dex:{u}:bal       hash  "<asset>:t", "<asset>:wd", "<asset>:cwd"
-- ARGV[1] withdrawalId  ARGV[2] new status (SENT, CONFIRMED, FAILED)
-- ARGV[3] the new state's JSON  ARGV[4] asset  ARGV[5] amount in quanta
-- Returns "OK" (moved) or the final status it already had ("CONFIRMED" / "FAILED").

local state_key, bal_key = KEYS[1], KEYS[2]
local withdrawal_id, status, state = ARGV[1], ARGV[2], ARGV[3]
local asset, quanta = ARGV[4], ARGV[5]

local current = redis.call('HGET', state_key, withdrawal_id)
if current then
  local was = cjson.decode(current)['status']
  if was == 'CONFIRMED' or was == 'FAILED' then return was end
end
if status == 'CONFIRMED' then
  redis.call('HINCRBY', bal_key, asset .. ':cwd', quanta)
elseif status == 'FAILED' then
  redis.call('HINCRBY', bal_key, asset .. ':t', quanta)
  redis.call('HINCRBY', bal_key, asset .. ':wd', '-' .. quanta)
end
redis.call('HSET', state_key, withdrawal_id, state)
return 'OK'
