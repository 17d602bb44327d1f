-- account_step.lua: one periodic money movement on one account, exactly once.
--
-- Funding, expiry settlement, insurance takeover and deficit cover each move money on many
-- accounts; each account's share is one call of this script, keyed by a business id: the
-- watermark field (e.g. "BTC-PERP:funding") and a number that must exceed it (the funding
-- period, 1 for expiry, the liquidation number…). A replay finds the watermark and skips.
--
-- KEYS[1] dex:{u}:bal      hash  "<asset>:t"
-- KEYS[2] dex:{u}:wm       hash  business watermarks
-- KEYS[3] dex:{u}:pos      hash  "<market>:<field>" position fields
-- KEYS[4] dex:{u}:funding  stream the account's funding history
-- ARGV[1] watermark field  ARGV[2] number (applied only if above the field's value)
-- ARGV[3] JSON list of operations (amounts are decimal strings, may be negative):
--   ["credit", asset, amount]                total += amount
--   ["posset", market, field, value]         "<market>:<field>" = value
--   ["posincr", market, field, delta]        "<market>:<field>" += delta
--   ["position", market, asset, delta, price, mult, cash]   as apply_ops.lua "position"
--   ["hist", json]                           XADD to the funding history
-- Returns 1 when applied, 0 when it had been applied before.

local bal_key, wm_key, pos_key, hist_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local field, number = ARGV[1], tonumber(ARGV[2])
local ops = cjson.decode(ARGV[3])

--#include position.lua

if tonumber(redis.call('HGET', wm_key, field) or '0') >= number then return 0 end
for _, op in ipairs(ops) do
  local kind = op[1]
  if kind == 'credit' then
    redis.call('HINCRBY', bal_key, op[2] .. ':t', op[3])
  elseif kind == 'posset' then
    redis.call('HSET', pos_key, op[2] .. ':' .. op[3], op[4])
  elseif kind == 'posincr' then
    redis.call('HINCRBY', pos_key, op[2] .. ':' .. op[3], op[4])
  elseif kind == 'position' then
    apply_position(pos_key, bal_key, op[2], op[3], tonumber(op[4]), tonumber(op[5]),
                   tonumber(op[6]), tonumber(op[7]))
  elseif kind == 'hist' then
    redis.call('XADD', hist_key, 'MAXLEN', '~', '10000', '*', 'f', op[2])
  else
    return redis.error_reply('unknown account step operation ' .. tostring(kind))
  end
end
redis.call('HSET', wm_key, field, ARGV[2])
return 1
