-- rate_limit.lua: take one token (or `cost` tokens) from a token bucket, atomically.
--
-- The bucket refills at `rate` tokens per second up to `burst`; a request takes one token or,
-- if none is left, is refused with the milliseconds until one will be there. Time comes from
-- the Redis server (TIME), so every gateway process shares one clock.
--
-- KEYS[1] the bucket  hash  tokens (milli-tokens), ts (ms)
-- ARGV[1] rate (tokens per second)  ARGV[2] burst (tokens)
-- ARGV[3] cost: tokens the request takes (optional, 1; a signed batch takes one per action)
-- Returns 0 when admitted, else the wait in ms before that many tokens are free (at least 1;
-- a cost above the burst never is: the wait is that of a full bucket, and it is refused).

local bucket = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost = tonumber(ARGV[3] or '1') * 1000
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
if tokens < cost then
  redis.call('HSET', bucket, 'tokens', string.format('%d', tokens), 'ts', string.format('%d', now))
  redis.call('PEXPIRE', bucket, ttl)
  return math.max(1, math.ceil((math.min(cost, capacity) - tokens) / rate))
end
redis.call('HSET', bucket, 'tokens', string.format('%d', tokens - cost),
           'ts', string.format('%d', now))
redis.call('PEXPIRE', bucket, ttl)
return 0
