-- session_join.lua: add accounts to a cancel-on-disconnect session, only while it stands.
--
-- A session that lapsed (its gateway missed its renewals) has been fired and cleared by some
-- gateway: nothing is added then, so no set outlives its session.
--
-- KEYS[1] dex:{wsentry}:sessions       zset  session id -> deadline ms
-- KEYS[2] dex:{wsentry}:session:<id>   set   "<userId>|<market>" the session cancels
-- ARGV[1] the session id
-- ARGV[2..] the members to add
-- Returns 1 (added, or already there) or 0 (the session is gone).

local sessions, members, session = KEYS[1], KEYS[2], ARGV[1]
if not redis.call('ZSCORE', sessions, session) then
  return 0
end
for i = 2, #ARGV do
  redis.call('SADD', members, ARGV[i])
end
return 1
