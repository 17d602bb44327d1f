-- deposit_claim.lua: bind an admin depositId to one deposit, exchange-wide and for ever.
--
-- First of the two steps of a deposit with an id (the second, deposit.lua, credits the
-- account at most once per id). The id's key has its own slot, so on a cluster the two steps
-- cannot be one script: a call that dies between them leaves the id bound and not credited,
-- and a retry of the same deposit finds it bound to itself ("SAME") and completes the credit.
--
-- KEYS[1] dex:dep:{<depositId>}  string  JSON [userId, asset, amount] the id is bound to
-- ARGV[1] JSON [userId, asset, amount] of this call
-- Returns "CLAIMED" (bound now), "SAME" (already bound to this very deposit: the account step
-- decides whether it was credited) or "OTHER" (bound to another deposit).

local claim_key, deposit = KEYS[1], ARGV[1]
local bound = redis.call('GET', claim_key)
if not bound then
  redis.call('SET', claim_key, deposit)
  return 'CLAIMED'
end
if bound == deposit then return 'SAME' end
return 'OTHER'
