#!lua name=dex_bench_floor
-- matcher_floor.lua: match.lua's Redis work on the same entries with no matching logic, for
-- bench/matcher_profile.py --floor: what a call costs Redis when Lua only reads the entries,
-- decodes each command and runs a command mix like match.lua's on stream-200k (per order:
-- the record's HSET and a look at the opposite best; every other order crosses: the maker
-- leaves the book and its open set, its record is read and written, a trade is appended;
-- the others rest: ZADD and SADD). 5.5 commands per order against match.lua's ~4.8: a floor
-- for any Lua that keeps the book in sorted sets and writes what match.lua writes.
-- KEYS[1] the market's input stream; ARGV[1] the group, ARGV[2] the consumer, ARGV[3] count.

local function floor(keys, args)
  local got = redis.call('XREADGROUP', 'GROUP', args[1], args[2], 'COUNT', args[3],
    'STREAMS', keys[1], '>')
  if not got then return 0 end
  local ids = {}
  for i, entry in ipairs(got[1][2]) do
    ids[i] = entry[1]
    local c = cjson.decode(entry[2][2])
    local cid = tostring(c.cid)
    redis.call('HSET', 'dex:{floor}:o:' .. cid,
      'd', c.user .. '|' .. c.side .. '|' .. c.price .. '|' .. c.qty .. '|' .. c.tif,
      's', 'NEW', 'f', '0', 'u', tostring(c.ts), 'r', '', 'q', tostring(c.qty))
    local own = c.side == 'BUY' and 'dex:{floor}:bids' or 'dex:{floor}:asks'
    local other = c.side == 'BUY' and 'dex:{floor}:asks' or 'dex:{floor}:bids'
    local best = redis.call('ZRANGE', other, 0, 0)
    if i % 2 == 0 and best[1] then
      local maker = best[1]
      redis.call('ZREM', other, maker)
      redis.call('HMGET', 'dex:{floor}:o:' .. maker, 'd', 'f')
      redis.call('HSET', 'dex:{floor}:o:' .. maker, 's', 'FILLED')
      redis.call('SREM', 'dex:{floor}:open', maker)
      redis.call('XADD', 'dex:{floor}:trades', '*', 't',
        cid .. '|' .. maker .. '|' .. c.price .. '|' .. c.qty .. '|' .. c.side)
    else
      redis.call('ZADD', own, c.price, string.format('%012d', c.cid))
      redis.call('SADD', 'dex:{floor}:open', cid)
    end
  end
  redis.call('XACK', keys[1], args[1], unpack(ids))
  return #ids
end

redis.register_function('dex_bench_floor', floor)
