-- match.lua: process a batch of commands from one market's stream, atomically.
--
-- Price-time priority: the book is two sorted sets whose score is the price (bids negated)
-- and whose member "<aseq:016d>|<user>|<cid>" sorts one price level by arrival. Trades print
-- at the maker's price. One call applies every command it is given, in order, and records the
-- last stream id it applied, so replaying a batch after a crash changes nothing.
--
-- KEYS[1]  dex:{m}:state    hash   status, seq, tseq, eseq, aseq, last
-- KEYS[2]  dex:{m}:bids     zset
-- KEYS[3]  dex:{m}:asks     zset
-- KEYS[4]  dex:{m}:lvl:bids hash   price -> qty
-- KEYS[5]  dex:{m}:lvl:asks hash   price -> qty
-- KEYS[6]  dex:{m}:trades   stream
-- KEYS[7]  dex:{m}:events   stream
-- Order records dex:{m}:o:<user>:<cid> and open sets dex:{m}:uo:<user> are derived from
-- the prefixes in ARGV (same hash tag, so the same slot).
-- ARGV[1]  market symbol
-- ARGV[2]  order key prefix "dex:{m}:o:"
-- ARGV[3]  user-open key prefix "dex:{m}:uo:"
-- ARGV[4]  channel prefix "dex:ch:"
-- ARGV[5]  now (ms)
-- ARGV[6]  trades stream max length
-- ARGV[7..] pairs: stream id, command JSON
-- Returns the number of commands applied (not skipped).

local state_key, bids_key, asks_key = KEYS[1], KEYS[2], KEYS[3]
local lvl_bids_key, lvl_asks_key = KEYS[4], KEYS[5]
local trades_key, events_key = KEYS[6], KEYS[7]
local market, order_prefix, open_prefix, channel_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(ARGV[5])
local trades_maxlen = ARGV[6]

local function int(n) return string.format('%d', n) end

-- Stream ids "ms-seq" compared numerically.
local function id_after(a, b)
  if b == false or b == nil or b == '' then return true end
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end

local last = redis.call('HGET', state_key, 'last')
local status = redis.call('HGET', state_key, 'status') or 'OPEN'

local function bump(field)
  return redis.call('HINCRBY', state_key, field, 1)
end

local function emit_event(ev)
  ev.eseq = bump('eseq')
  redis.call('XADD', events_key, '*', 'e', cjson.encode(ev))
end

local function publish(topic, seq, data)
  redis.call('PUBLISH', channel_prefix .. topic, cjson.encode({seq = seq, data = data}))
end

local function save_order(okey, fields)
  local flat = {}
  for k, v in pairs(fields) do
    flat[#flat + 1] = k
    if type(v) == 'number' then flat[#flat + 1] = int(v) else flat[#flat + 1] = tostring(v) end
  end
  redis.call('HSET', okey, unpack(flat))
end

local function order_view(okey)
  local raw = redis.call('HGETALL', okey)
  local o = {}
  for i = 1, #raw, 2 do o[raw[i]] = raw[i + 1] end
  local view = {
    clientOrderId = o.clientOrderId, userId = o.userId, market = o.market, side = o.side,
    type = o.type, timeInForce = o.timeInForce, reduceOnly = o.reduceOnly == '1',
    expiresAt = tonumber(o.expiresAt), price = tonumber(o.price), qty = tonumber(o.qty),
    filled = tonumber(o.filled), status = o.status, ts = tonumber(o.ts),
    updatedTs = tonumber(o.updatedTs),
  }
  if o.reason and o.reason ~= '' then view.reason = o.reason else view.reason = cjson.null end
  return view
end

-- cjson encodes an empty table as {}, so levels are written by hand: [[price,qty],...]
local function levels_json(levels)
  local parts = {}
  for i, level in ipairs(levels) do parts[i] = '[' .. int(level[1]) .. ',' .. int(level[2]) .. ']' end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function level_add(lvl_key, price, delta, changes)
  local total = redis.call('HINCRBY', lvl_key, int(price), delta)
  if total <= 0 then redis.call('HDEL', lvl_key, int(price)); total = 0 end
  changes[int(price)] = total
end

local function finish(okey, user, cid, side, new_status, reason, filled)
  save_order(okey, {status = new_status, reason = reason or '', updatedTs = now})
  redis.call('SREM', open_prefix .. user, cid)
  emit_event({k = 'done', user = user, cid = cid, side = side, status = new_status,
              reason = reason or cjson.null, filled = filled, ts = now})
end

local applied = 0

local function process_order(cmd)
  local okey = order_prefix .. cmd.user .. ':' .. cmd.cid
  if redis.call('EXISTS', okey) == 1 then return end  -- already processed: idempotent
  local aseq = bump('aseq')
  local side, price, qty = cmd.side, tonumber(cmd.price), tonumber(cmd.qty)
  save_order(okey, {
    clientOrderId = cmd.cid, userId = cmd.user, market = market, side = side,
    type = cmd.type, timeInForce = cmd.tif or 'GTC', reduceOnly = cmd.reduceOnly and 1 or 0,
    expiresAt = cmd.expiresAt or 0, price = price, qty = qty, filled = 0,
    status = 'NEW', reason = '', ts = cmd.ts, updatedTs = now, aseq = aseq,
    reserved = tostring(cmd.reserved),
  })
  if status ~= 'OPEN' then
    finish(okey, cmd.user, cmd.cid, side, 'REJECTED',
           status == 'HALTED' and 'MARKET_HALTED' or 'MARKET_CLOSED', 0)
    return
  end

  local book_key, lvl_key, own_book, own_lvl
  if side == 'BUY' then
    book_key, lvl_key, own_book, own_lvl = asks_key, lvl_asks_key, bids_key, lvl_bids_key
  else
    book_key, lvl_key, own_book, own_lvl = bids_key, lvl_bids_key, asks_key, lvl_asks_key
  end
  local bid_changes, ask_changes = {}, {}
  local maker_changes = side == 'BUY' and ask_changes or bid_changes
  local own_changes = side == 'BUY' and bid_changes or ask_changes
  local trades = {}
  local remaining = qty

  while remaining > 0 do
    local best = redis.call('ZRANGE', book_key, 0, 0, 'WITHSCORES')
    if #best == 0 then break end
    local member, score = best[1], tonumber(best[2])
    local maker_price = side == 'BUY' and score or -score
    if (side == 'BUY' and maker_price > price) or (side == 'SELL' and maker_price < price) then
      break
    end
    local maker_user, maker_cid = string.match(member, '^%d+|([^|]+)|(.*)$')
    local mkey = order_prefix .. maker_user .. ':' .. maker_cid
    local m_qty, m_filled = unpack(redis.call('HMGET', mkey, 'qty', 'filled'))
    local m_left = tonumber(m_qty) - tonumber(m_filled)
    local fill = math.min(remaining, m_left)
    remaining = remaining - fill
    m_filled = tonumber(m_filled) + fill
    level_add(lvl_key, maker_price, -fill, maker_changes)
    local maker_side = side == 'BUY' and 'SELL' or 'BUY'
    if m_filled == tonumber(m_qty) then
      redis.call('ZREM', book_key, member)
      save_order(mkey, {filled = m_filled})
      finish(mkey, maker_user, maker_cid, maker_side, 'FILLED', nil, m_filled)
    else
      save_order(mkey, {filled = m_filled, status = 'PARTIAL', updatedTs = now})
    end
    local tseq = bump('tseq')
    local buyer, seller, buy_cid, sell_cid
    if side == 'BUY' then
      buyer, seller, buy_cid, sell_cid = cmd.user, maker_user, cmd.cid, maker_cid
    else
      buyer, seller, buy_cid, sell_cid = maker_user, cmd.user, maker_cid, cmd.cid
    end
    local trade = {
      tradeId = market .. ':' .. int(tseq), market = market, price = maker_price, qty = fill,
      takerSide = side, buyer = buyer, seller = seller, buyOid = buy_cid, sellOid = sell_cid,
      ts = now, seq = tseq,
    }
    redis.call('XADD', trades_key, 'MAXLEN', '~', trades_maxlen, '*', 't', cjson.encode(trade))
    trades[#trades + 1] = trade
    emit_event({k = 'fill', tradeId = trade.tradeId, tseq = tseq, price = maker_price,
                qty = fill, takerSide = side, buyer = buyer, seller = seller,
                buyCid = buy_cid, sellCid = sell_cid, ts = now})
  end

  local filled = qty - remaining
  if remaining == 0 then
    save_order(okey, {filled = filled})
    finish(okey, cmd.user, cmd.cid, side, 'FILLED', nil, filled)
  else
    local score = side == 'BUY' and -price or price
    redis.call('ZADD', own_book, score, string.format('%016d', aseq) .. '|' .. cmd.user .. '|' .. cmd.cid)
    redis.call('SADD', open_prefix .. cmd.user, cmd.cid)
    level_add(own_lvl, price, remaining, own_changes)
    save_order(okey, {filled = filled, status = filled > 0 and 'PARTIAL' or 'NEW'})
  end

  local seq = bump('seq')
  local bids, asks = {}, {}
  for p, q in pairs(bid_changes) do bids[#bids + 1] = {tonumber(p), q} end
  for p, q in pairs(ask_changes) do asks[#asks + 1] = {tonumber(p), q} end
  table.sort(bids, function(a, b) return a[1] > b[1] end)
  table.sort(asks, function(a, b) return a[1] < b[1] end)
  redis.call('PUBLISH', channel_prefix .. 'depth:' .. market,
    '{"seq":' .. int(seq) .. ',"data":{"bids":' .. levels_json(bids) ..
    ',"asks":' .. levels_json(asks) .. '}}')
  if #trades > 0 then publish('trade:' .. market, trades[#trades].seq, trades) end
  publish('orders:' .. cmd.user, now, order_view(okey))
  applied = applied + 1
end

for i = 7, #ARGV, 2 do
  local id, raw = ARGV[i], ARGV[i + 1]
  if id_after(id, last) then
    local cmd = cjson.decode(raw)
    if cmd.op == 'order' then process_order(cmd) end
    last = id
  end
end
if last then redis.call('HSET', state_key, 'last', last) end
return applied
