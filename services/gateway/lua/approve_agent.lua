-- approve_agent.lua: record a signed ApproveAgent, once, within the account's bound.
--
-- Refuses a used signature (DUPLICATE), then a new agent beyond the bound (TOO_MANY_AGENTS;
-- expired approvals are dropped first, so they do not count). Re-approving an agent already
-- listed replaces its record (scope, markets, expiry) without counting twice.
--
-- KEYS[1] dex:{u}:agents      hash   agent address -> record JSON (expiresAt: ms, 0 = never)
-- KEYS[2] dex:{u}:sig:<hex>   string the used signature (PX ttl)
-- ARGV[1] agent address  ARGV[2] record JSON  ARGV[3] most agents per account
-- ARGV[4] signature ttl (ms)  ARGV[5] now (ms)
-- Returns "OK" or the refusal code.

local agents_key, sig_key = KEYS[1], KEYS[2]
local agent, record, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl, now = ARGV[4], tonumber(ARGV[5])

if redis.call('EXISTS', sig_key) == 1 then return 'DUPLICATE' end
local listed = redis.call('HGETALL', agents_key)
for i = 1, #listed, 2 do
  local expires = tonumber(cjson.decode(listed[i + 1]).expiresAt) or 0
  if expires > 0 and expires <= now then redis.call('HDEL', agents_key, listed[i]) end
end
if redis.call('HEXISTS', agents_key, agent) == 0 and redis.call('HLEN', agents_key) >= most then
  return 'TOO_MANY_AGENTS'
end
redis.call('SET', sig_key, '1', 'PX', ttl)
redis.call('HSET', agents_key, agent, record)
return 'OK'
