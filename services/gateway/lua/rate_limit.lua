-- rate_limit.lua: take one token from a token bucket, atomically.
--
-- The bucket refills at `rate` tokens per second up to `burst`; a request takes one token or,
-- if none is left, is refused with the milliseconds until one will be there. Time comes from
-- the Redis server (TIME), so every gateway process shares one clock.
--
-- KEYS[1] the bucket  hash  tokens (milli-tokens), ts (ms)
-- ARGV[1] rate (tokens per second)  ARGV[2] burst (tokens)
-- Returns 0 when admitted, else the wait in ms before a token is free (at least 1).

local bucket = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', bucket, 'tokens', 'ts')
local capacity = burst * 1000
local tokens = tonumber(state[1]) or capacity
local last = tonumber(state[2]) or now
if now > last then
  tokens = math.min(capacity, tokens + (now - last) * rate)
end
local ttl = math.ceil(burst * 1000 / rate) + 1000
if tokens < 1000 then
  redis.call('HSET', bucket, 'tokens', string.format('%d', tokens), 'ts', string.format('%d', now))
  redis.call('PEXPIRE', bucket, ttl)
  return math.max(1, math.ceil((1000 - tokens) / rate))
end
redis.call('HSET', bucket, 'tokens', string.format('%d', tokens - 1000),
           'ts', string.format('%d', now))
redis.call('PEXPIRE', bucket, ttl)
return 0
