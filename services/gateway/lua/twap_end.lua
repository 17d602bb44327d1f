-- twap_end.lua: end an ACTIVE TWAP, once (docs/api.md "TWAP orders").
--
-- CXL (a Cancel of the parent, a CancelAll, the dead-man's switch) ends it wherever its cursor
-- is: accept_slice.lua then refuses every further slice. FINISH ends one whose every slice is
-- done (the firer, once the slices' orders are final) with the status the caller counted
-- (FILLED or EXP). An ended TWAP leaves the account's active list; its record stays. The
-- step that ends it publishes its end message (twap/message.lua), so whoever ends it (the
-- last slice's firer, a cancel, a CancelAll, the dead-man's switch, a closed session, a
-- revoked agent key) publishes it, and only once.
--
-- KEYS[1] dex:{u}:twap:<cid>  hash  the parent (endMessage: the copy kept on sharded pub/sub)
-- KEYS[2] dex:{u}:twaps       zset  the account's active TWAPs
-- ARGV[1] cid  ARGV[2] CXL or FINISH  ARGV[3] the final status  ARGV[4] the reason ("" none)
-- ARGV[5] now (ms)  ARGV[6] userId  ARGV[7] the channel of orders:<userId> ("": sharded
-- pub/sub, the caller publishes)  ARGV[8] filled  ARGV[9] open: the caller's count over the
-- slices' orders
-- Returns {"OK", cursor, the end message} or {"CLOSED", status} (already ended, or unknown:
-- "") or {"NOT_DONE", cursor} (FINISH with slices still to send).

--#include twap/message.lua

local parent, active = KEYS[1], KEYS[2]
local cid, mode, status, reason, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local user, channel, filled, open = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local state = redis.call('HMGET', parent, 'status', 'k', 'n')
if state[1] ~= 'ACTIVE' then return {'CLOSED', state[1] or ''} end
if mode == 'FINISH' and tonumber(state[2]) < tonumber(state[3]) then
  return {'NOT_DONE', state[2]}
end
redis.call('HSET', parent, 'status', status, 'updatedTs', now)
if reason ~= '' then redis.call('HSET', parent, 'reason', reason) end
redis.call('ZREM', active, cid)
local message = twap_message(parent, user, cid, filled, open, now)
-- Sharded pub/sub: the caller SPUBLISHes the message, then deletes this copy; a firer that
-- finds the copy (the caller died between) publishes it.
if channel == '' then redis.call('HSET', parent, 'endMessage', message) end
return {'OK', state[2], twap_publish(channel, message)}
