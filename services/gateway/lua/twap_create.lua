-- twap_create.lua: record a signed TWAP parent order on its account (docs/api.md "TWAP orders").
--
-- Refuses a clientOrderId seen before (ever, orders and TWAPs share the account's ids: 409
-- DUPLICATE), then the caller's refusal (422: the first slice is not affordable now), then an
-- account that already runs as many TWAPs as allowed (422 TOO_MANY_ORDERS). Otherwise takes
-- the id, writes the parent (cursor k = 0, nothing sent) and lists it among the account's
-- active TWAPs. On a single Redis (KEYS[4] given) it also puts the TWAP in the firers' due
-- zset, so parent and schedule exist together or not at all; on a cluster the caller ZADDs it
-- there first (the firer drops a member without a parent only once it is a minute old). It
-- publishes the TWAP's first message (twap/message.lua).
--
-- KEYS[1] dex:{u}:cids        hash  cid -> market
-- KEYS[2] dex:{u}:twap:<cid>  hash  the parent
-- KEYS[3] dex:{u}:twaps       zset  cid by start ms: the account's active TWAPs
-- KEYS[4] dex:{twap}:due      zset  "<userId>|<cid>" by due ms (single Redis only; optional)
-- ARGV[1] cid  ARGV[2] market  ARGV[3] active TWAPs allowed per account  ARGV[4] start ms
-- ARGV[5] the member of KEYS[4]  ARGV[6] the caller's refusal code, or ""
-- ARGV[7] userId  ARGV[8] the channel of orders:<userId> ("": the caller publishes)
-- ARGV[9..] the parent's fields and values, in pairs
-- Returns {"OK", the message} or {code}.

--#include twap/message.lua

local cids, parent, active, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cid, market, bound, start, member = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local refusal, user, channel = ARGV[6], ARGV[7], ARGV[8]

if redis.call('HEXISTS', cids, cid) == 1 then return {'DUPLICATE'} end
if refusal ~= '' then return {refusal} end
if redis.call('ZCARD', active) >= bound then return {'TOO_MANY_ORDERS'} end

if due then redis.call('ZADD', due, start, member) end
redis.call('HSET', cids, cid, market)
redis.call('HSET', parent, unpack(ARGV, 9))
redis.call('ZADD', active, start, cid)
return {'OK', twap_publish(channel, twap_message(parent, user, cid, '0', '0', start))}
