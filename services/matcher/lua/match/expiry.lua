-- match/expiry.lua: resting orders whose expiresAt has passed leave the book (dex:{m}:exp,
-- score expiresAt, member "<B|S><book member>"), each its own unit, up to 500 per call.

--#include records.lua
--#include orders.lua

local EXPIRIES_PER_CALL = 500

local function expire_due()
  local due = redis.call('ZRANGEBYSCORE', K_EXP, '-inf', now, 'LIMIT', 0, EXPIRIES_PER_CALL)
  for _, entry in ipairs(due) do
    local mu, mc = parse_member(string.sub(entry, 2))
    local o = load(oprefix .. mu .. ':' .. mc)
    if open_order(o) then
      remove_resting(o, 'EXP', 'EXPIRES_AT')
      end_unit()
    else
      redis.call('ZREM', K_EXP, entry)
    end
  end
end
