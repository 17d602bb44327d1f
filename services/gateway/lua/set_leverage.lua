-- set_leverage.lua: record a signed SetLeverage, once (docs/api.md "Leverage").
--
-- Refuses a used signature (DUPLICATE); else claims it and sets the account's initial margin
-- bps in the market (0: removes the choice, so the market's applies again). One script, so a
-- claimed signature and its change land together or not at all.
--
-- KEYS[1] dex:{u}:lev         hash   market -> initial margin bps
-- KEYS[2] dex:{u}:sig:<hex>   string the used signature (PX ttl)
-- ARGV[1] market  ARGV[2] initial margin bps (0 = the market's)  ARGV[3] signature ttl (ms)
-- Returns "OK" or "DUPLICATE".

local lev_key, sig_key = KEYS[1], KEYS[2]
local market, bps, ttl = ARGV[1], ARGV[2], ARGV[3]

if redis.call('EXISTS', sig_key) == 1 then return 'DUPLICATE' end
redis.call('SET', sig_key, '1', 'PX', ttl)
if bps == '0' then
  redis.call('HDEL', lev_key, market)
else
  redis.call('HSET', lev_key, market, bps)
end
return 'OK'
