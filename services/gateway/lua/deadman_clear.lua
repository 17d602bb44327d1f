-- deadman_clear.lua: disarm a dead-man's switch that has just fired, unless it was renewed.
--
-- The firer XADDs the cancel_all commands first and calls this after: a firer killed in
-- between leaves the switch armed, and the next round fires it again (a cancel_all twice is
-- harmless). A renewal that landed meanwhile changed the score, so the switch stays.
--
-- KEYS[1] dex:deadman  zset  "<userId>|<market>" -> deadline ms
-- ARGV[1] the member that fired
-- ARGV[2] the deadline (score) it fired at
-- Returns 1 (removed) or 0 (renewed or already gone).

local switches, member, fired_at = KEYS[1], ARGV[1], ARGV[2]
local score = redis.call('ZSCORE', switches, member)
if score and tonumber(score) == tonumber(fired_at) then
  return redis.call('ZREM', switches, member)
end
return 0
