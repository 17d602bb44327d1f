-- lease.lua: acquire, renew or release a market's matcher lease, only for its holder.
--
-- One matcher process owns a market at a time. The lease is a string holding the owner's
-- token with a time to live; the owner renews it well before it lapses, so a second matcher
-- takes over only after the first stopped renewing (died, hung or was cut off).
--
-- KEYS[1]  dex:{m}:lease   string  owner token (PX ttl)
-- ARGV[1]  "acquire" | "renew" | "release"
-- ARGV[2]  token of the calling process
-- ARGV[3]  ttl in ms (acquire, renew)
-- Returns 1 when the caller holds the lease afterwards (acquire, renew) or released it, else 0.

local holder = redis.call('GET', KEYS[1])
local op, token = ARGV[1], ARGV[2]
if op == 'acquire' then
  if holder == false then
    redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
    return 1
  end
  if holder == token then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  return 0
elseif op == 'renew' then
  if holder == token then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  return 0
elseif op == 'release' then
  if holder == token then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
return redis.error_reply('lease.lua: unknown operation ' .. tostring(op))
