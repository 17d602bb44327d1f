-- match/expiry.lua: resting orders whose expiresAt has passed leave the book (dex:{m}:exp,
-- score expiresAt, member "<B|S><book member>"), each its own unit, up to 500 per call. The
-- index is read only once the state's next expiry (match/state.lua nexp) has come: a call
-- before it would find nothing due.

--#include state.lua
--#include records.lua
--#include orders.lua

local EXPIRIES_PER_CALL = 500

local function expire_due()
  if hints.quiet('expiry') then return end
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
  -- every due entry has left (else more are due: the next call reads again): the next
  -- expiry is the index's first
  if #due < EXPIRIES_PER_CALL then
    local first = redis.call('ZRANGE', K_EXP, 0, 0, 'WITHSCORES')
    hints.expiry = first[2] and tonumber(first[2]) or false
  end
end
