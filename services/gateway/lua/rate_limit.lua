-- rate_limit.lua: take one token (or `cost` tokens) from a token bucket, atomically
-- (admission/bucket.lua; accept_order.lua takes the user's bucket itself).
--
-- KEYS[1] the bucket  hash  tokens (milli-tokens), ts (ms)
-- ARGV[1] rate (tokens per second)  ARGV[2] burst (tokens)
-- ARGV[3] cost: tokens the request takes (optional, 1; a signed batch takes one per action)
-- Returns 0 when admitted, else the wait in ms before that many tokens are free (at least 1;
-- a cost above the burst never is: the wait is that of a full bucket, and it is refused).

--#include admission/bucket.lua

return take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3] or '1'))
