-- session_clear.lua: end a cancel-on-disconnect session whose cancels have been sent.
--
-- The firer sends the cancel_all commands first and calls this after: a firer killed in
-- between leaves the session standing, and the next round fires it again (a cancel_all twice
-- is harmless). A lapsed session is removed only if its deadline is still the one that fired
-- (a renewal that landed meanwhile keeps it); its own gateway, closing it, passes ARGV[2] = ''
-- to remove it whatever its deadline.
--
-- KEYS[1] dex:{wsentry}:sessions       zset  session id -> deadline ms
-- KEYS[2] dex:{wsentry}:session:<id>   set   "<userId>|<market>" the session cancels
-- ARGV[1] the session id
-- ARGV[2] the deadline it fired at, or '' (closed by its own gateway)
-- Returns 1 (removed) or 0 (renewed meanwhile, or already gone).

local sessions, members, session, fired_at = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local score = redis.call('ZSCORE', sessions, session)
if not score then
  redis.call('DEL', members)
  return 0
end
if fired_at ~= '' and tonumber(score) ~= tonumber(fired_at) then
  return 0
end
redis.call('ZREM', sessions, session)
redis.call('DEL', members)
return 1
