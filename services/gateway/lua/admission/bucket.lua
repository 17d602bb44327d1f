-- admission/bucket.lua: take tokens from a token bucket (the rate limits of API.md §1, §5);
-- the one body of rate_limit.lua (a bucket on its own) and of accept_order.lua (the user's
-- bucket, taken first, in the account's slot).
--
-- take_tokens(bucket, rate, burst, cost): the bucket (hash: tokens in milli-tokens, ts in ms)
-- refills at `rate` tokens per second up to `burst`; `cost` tokens are taken, or, if too few are
-- left, none, and the answer is the milliseconds until there will be (at least 1; a cost above
-- the burst never is: the wait is that of a full bucket). 0 when taken. Time comes from the
-- Redis server (TIME), so every gateway process shares one clock.

local function take_tokens(bucket, rate, burst, cost)
  cost = cost * 1000
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
    redis.call('HSET', bucket, 'tokens', string.format('%d', tokens),
               'ts', string.format('%d', now))
    redis.call('PEXPIRE', bucket, ttl)
    return math.max(1, math.ceil((math.min(cost, capacity) - tokens) / rate))
  end
  redis.call('HSET', bucket, 'tokens', string.format('%d', tokens - cost),
             'ts', string.format('%d', now))
  redis.call('PEXPIRE', bucket, ttl)
  return 0
end
