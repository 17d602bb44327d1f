-- A settle loop's lease on one market (services/settler/loop.py).
-- KEYS[1] dex:{m}:settle-queued:lock  the market's settle lock (ledger.py): its holder's token
-- KEYS[2] dex:{m}:settle-queued       the settle-queued flag (matcher/lua/match/events.lua)
-- ARGV[1] the loop's token
-- ARGV[2] lease ms: take the lock if it is free or renew it if it is ours, and keep the flag
--         standing ARGV[3] ms, so the matcher queues no settle task while the loop holds the
--         market; returns 1 if held, else 0 (another holder: a loop or a settle task)
--         "0": release the lock if it is ours (the flag is the caller's); returns 1 if it was
local lock, flag, token, lease = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local ours = redis.call('GET', lock) == token
if lease == 0 then
  if ours then redis.call('DEL', lock) end
  return ours and 1 or 0
end
if ours then
  redis.call('PEXPIRE', lock, lease)
elseif not redis.call('SET', lock, token, 'NX', 'PX', lease) then
  return 0
end
redis.call('SET', flag, '1', 'PX', ARGV[3])
return 1
