#!lua name=dex_bench_memory_probe
-- matcher_memory_probe.lua: the write side of a matcher that matches in its own memory, for
-- bench/matcher_memory_probe.py. One call applies one batch's results, guarded by the stream
-- position the batch starts from (a replayed or out-of-turn batch changes nothing), and
-- writes what match.lua writes for it: records, book and open sets, trades, one events entry,
-- level totals, the state, the acknowledgement and the call's publications.
-- KEYS[1] input stream, KEYS[2] state, KEYS[3] bids, KEYS[4] asks, KEYS[5] trades,
-- KEYS[6] events, KEYS[7] bid levels, KEYS[8] ask levels.
-- ARGV[1] the last id the batch follows ('' at the start), ARGV[2] the batch's last id,
-- ARGV[3] group, ARGV[4] number of entry ids n, ARGV[5 .. 4+n] the ids, then operations:
--   'R', key, d, status, filled, qty   the taker's record   'U', key, status, filled   a maker's
--   'A', side, score, member, user, cid   rests          'X', side, member, user, cid   leaves
--   'T', trade text        a trade                     'E', event text            an event
--   'L', side, price, total   a level's total ('0': gone)
--   'P', channel, message  a publication

local function apply(keys, args)
  local state = keys[2]
  if (redis.call('HGET', state, 'last') or '') ~= args[1] then
    return redis.error_reply('STALE batch does not follow the last applied one')
  end
  local n = tonumber(args[4])
  local book = {B = keys[3], S = keys[4]}
  local levels = {B = keys[7], S = keys[8]}
  local events = {}
  local i = 5 + n
  while i <= #args do
    local op = args[i]
    if op == 'R' then
      redis.call('HSET', args[i + 1], 'd', args[i + 2], 's', args[i + 3], 'f', args[i + 4],
        'q', args[i + 5])
      i = i + 6
    elseif op == 'U' then
      redis.call('HSET', args[i + 1], 's', args[i + 2], 'f', args[i + 3])
      i = i + 4
    elseif op == 'A' then
      redis.call('ZADD', book[args[i + 1]], args[i + 2], args[i + 3])
      redis.call('SADD', 'dex:{probe}:uo:' .. args[i + 4], args[i + 5])
      i = i + 6
    elseif op == 'X' then
      redis.call('ZREM', book[args[i + 1]], args[i + 2])
      redis.call('SREM', 'dex:{probe}:uo:' .. args[i + 3], args[i + 4])
      i = i + 5
    elseif op == 'T' then
      redis.call('XADD', keys[5], '*', 't', args[i + 1])
      i = i + 2
    elseif op == 'E' then
      events[#events + 1] = 'e'
      events[#events + 1] = args[i + 1]
      i = i + 2
    elseif op == 'L' then
      if args[i + 3] == '0' then
        redis.call('HDEL', levels[args[i + 1]], args[i + 2])
      else
        redis.call('HSET', levels[args[i + 1]], args[i + 2], args[i + 3])
      end
      i = i + 4
    elseif op == 'P' then
      redis.call('PUBLISH', args[i + 1], args[i + 2])
      i = i + 3
    else
      return redis.error_reply('BAD operation ' .. tostring(op))
    end
  end
  if #events > 0 then redis.call('XADD', keys[6], '*', unpack(events)) end
  if n > 0 then redis.call('XACK', keys[1], args[3], unpack(args, 5, 4 + n)) end
  redis.call('HSET', state, 'last', args[2])
  return n
end

redis.register_function('dex_bench_memory_probe', apply)
