-- match.lua: apply a batch of commands from one market's stream, atomically.
--
-- Price-time priority: the book is two sorted sets whose score is the price (bids negated)
-- and whose member "<aseq:016d>|<user>|<cid>" sorts one price level by arrival. Trades print
-- at the maker's price. One call first expires resting orders whose expiresAt has passed,
-- then applies every command it is given, in order, and records the last stream id it
-- applied, so replaying a batch after a crash changes nothing; an order whose record exists
-- is never applied twice either (the gateway's outbox may re-send it).
--
-- Commands (field "op"): order (LIMIT/MARKET; GTC, IOC, FOK, POST_ONLY; reduceOnly;
-- expiresAt; self-trade prevention cancels the resting order), cancel, cancel_all, halt,
-- resume, expire. Outputs, all in this call: order records, the open-order sets, trades,
-- settlement events, positions mirror (derivatives), depth seq (+1 per command or expiry that
-- changed the book; cancel_all and expire: +1 per order removed), level totals, market
-- statistics and candles, PUBLISH on depth: (per call, in chunks of about 7 KB: a single
-- seq's message, or with several seqs {"seq": last, "batch": [{"seq", "data"} per seq, in
-- order]}), orders: (one per changed order) and trade: (every trade of the call, in order, in
-- chunks of about 7 KB, seq = the last one's of each), replies.
--
-- KEYS[1]  dex:{m}:state    hash   status, seq, tseq, eseq, aseq, last
-- KEYS[2]  dex:{m}:bids     zset
-- KEYS[3]  dex:{m}:asks     zset
-- KEYS[4]  dex:{m}:lvl:bids hash   price -> qty
-- KEYS[5]  dex:{m}:lvl:asks hash   price -> qty
-- KEYS[6]  dex:{m}:trades   stream
-- KEYS[7]  dex:{m}:events   stream  one entry per call (per 1000 events): eseq -> event JSON
-- KEYS[8]  dex:{m}:cfg      hash   product, mult, takerFeeBps, initialMarginBps, lotSize
-- KEYS[9]  dex:{m}:pos      hash   user -> signed position (derivatives)
-- KEYS[10] dex:{m}:stats    hash   last, lastTs, open, high, low, vol, qvol, evicted
-- KEYS[11] dex:{m}:exp      zset   expiresAt -> "<B|S><book member>"
-- KEYS[12] dex:{m}:lease    string the token of the matcher that owns the market
-- KEYS[13] dex:{m}:in       stream the market's commands
-- Order records dex:{m}:o:<user>:<cid>, open sets dex:{m}:uo:<user>, candles
-- dex:{m}:candles:<iv> / dex:{m}:cidx:<iv> and reply lists dex:{m}:reply:<rid> are derived
-- from the prefixes in ARGV and the commands (same hash tag, so the same slot).
-- ARGV[1]  market symbol
-- ARGV[2]  order key prefix "dex:{m}:o:"
-- ARGV[3]  user-open key prefix "dex:{m}:uo:"
-- ARGV[4]  channel prefix "dex:ch:"
-- ARGV[5]  now (ms)
-- ARGV[6]  trades stream max length
-- ARGV[7]  market key prefix "dex:{m}:"
-- ARGV[8]  lease token: unless empty, the call is refused (error LEASE_LOST, nothing
--          changed) when KEYS[12] holds another token, so a matcher that lost its lease
--          while paused can never apply a batch behind its successor's back
-- ARGV[9]  read count: when above 0 the script itself reads up to that many new entries
--          of KEYS[13] for its consumer (XREADGROUP ">"), applies and acknowledges them, all
--          in this one atomic call, so no entry is ever read without being applied
-- ARGV[10] consumer group, ARGV[11] consumer name (for the read above)
-- ARGV[12] publish command: PUBLISH on "dex:ch:", SPUBLISH on "dex:ch:{m}:" (cluster)
-- ARGV[13..] pairs: stream id, command JSON (entries read earlier, e.g. pending ones)
-- Returns {commands applied, events written, entries read here, last applied stream id,
-- 1 if this call set the market's settle-queued flag (the caller then queues one settle
-- task; while the flag stands a task is on its way or at work, so none is queued) else 0}.

local K_STATE, K_BIDS, K_ASKS, K_LB, K_LA = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_TRADES, K_EVENTS, K_CFG, K_POS, K_STATS, K_EXP =
  KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local market, oprefix, uprefix, chprefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local publish = ARGV[12]
local now = tonumber(ARGV[5])
local trades_maxlen = ARGV[6]
local mprefix = ARGV[7]
if ARGV[8] ~= '' and redis.call('GET', KEYS[12]) ~= ARGV[8] then
  return redis.error_reply('LEASE_LOST this matcher no longer holds the market lease')
end

-- Integers as decimal text, memoized per call: prices, quantities and the clock repeat from
-- order to order, and string.format is a large share of the script's own time.
local fmt = string.format
local ints = {}
local function int(n)
  local v = ints[n]
  if v then return v end
  v = fmt('%d', n)
  ints[n] = v
  return v
end
-- JSON string: ids and addresses are plain (the gateway checks their characters), so they
-- are quoted as they are; anything else goes through cjson, which is much slower.
local quoted = {}
local function q(s)
  local v = quoted[s]
  if v then return v end
  if string.find(s, '^[%w%.%_%:%-]*$') then v = '"' .. s .. '"' else v = cjson.encode(s) end
  quoted[s] = v
  return v
end

-- market constants ------------------------------------------------------------------
local cfg = {}
do
  local raw = redis.call('HGETALL', K_CFG)
  for i = 1, #raw, 2 do cfg[raw[i]] = raw[i + 1] end
end
local product = cfg.product or 'SPOT'
local is_deriv = product == 'PERP' or product == 'FUTURE' or product == 'OPTION'
local margined = product == 'PERP' or product == 'FUTURE'
local mult = tonumber(cfg.mult or '1')
local taker_bps = tonumber(cfg.takerFeeBps or '0')
local im_bps = tonumber(cfg.initialMarginBps or '0')
local lot = tonumber(cfg.lotSize or '1')
local band_bps = margined and tonumber(cfg.priceBandBps or '0') or 0

-- counters, read once and written back once --------------------------------------------
local st = redis.call('HMGET', K_STATE, 'status', 'seq', 'tseq', 'eseq', 'aseq', 'last')
local status = st[1] or 'OPEN'
local seq, tseq, eseq, aseq = tonumber(st[2] or '0'), tonumber(st[3] or '0'),
  tonumber(st[4] or '0'), tonumber(st[5] or '0')
local last = st[6]
local status_changed = false
local events_written = 0

-- Stream ids "ms-seq" compared numerically with the last applied one (parsed once; the
-- caller passes the parts of an id it moves `last` to).
local last_ms, last_sq = nil, nil
if last and last ~= '' then
  local m, q2 = string.match(last, '^(%d+)-(%d+)$')
  last_ms, last_sq = tonumber(m), tonumber(q2)
end
local function id_parts(a)
  local m, q2 = string.match(a, '^(%d+)-(%d+)$')
  return tonumber(m), tonumber(q2)
end

-- money: ceil(n * bps / 10000) without passing 2^53 on the way
local function bps_ceil(n, bps)
  if bps == 0 or n == 0 then return 0 end
  local a = math.floor(n / 10000)
  local b = n - a * 10000
  return a * bps + math.ceil(b * bps / 10000)
end

-- The market's index and mark (dex:{m}:px, read once per call when a derivative order needs
-- them; before the oracle's first run the file's index, and an option's intrinsic value).
local px = nil
local function prices()
  if px then return px end
  local raw = redis.call('HMGET', mprefix .. 'px', 'index', 'mark')
  local index = tonumber(raw[1] or '') or tonumber(cfg.indexPrice or '0')
  local mark = tonumber(raw[2] or '')
  if mark == nil then
    if product == 'OPTION' then
      local strike = tonumber(cfg.strike or '0')
      mark = cfg.optionType == 'PUT' and math.max(strike - index, 0) or math.max(index - strike, 0)
    else
      mark = index
    end
  end
  px = {index = index, mark = mark}
  return px
end

-- What a budgeted (MARKET, price 0) order spends on one fill of qty at p, of which the first
-- `red` only reduce its owner's position: notional + fee (SPOT, an OPTION buy's premium);
-- otherwise the fee, and on the part that opens its initial margin (at p; an option writer's
-- on the underlying's index) plus its open loss against the mark (API.md §6).
local function cost(p, qty, is_buy, red)
  local n = p * qty * mult
  local fee = bps_ceil(n, taker_bps)
  if not is_deriv or (product == 'OPTION' and is_buy) then return n + fee end
  local opening = qty - red
  if opening <= 0 then return fee end
  local m = prices()
  local margin_price = product == 'OPTION' and m.index or p
  local loss = is_buy and math.max(p - m.mark, 0) or math.max(m.mark - p, 0)
  return fee + bps_ceil(margin_price * opening * mult, im_bps) + loss * opening * mult
end

-- The most (a multiple of the lot, at most cap) a budget affords at price p.
local function affordable(p, cap, budget, is_buy, red)
  if budget <= 0 then return 0 end
  local lo, hi = 0, math.floor(cap / lot)
  -- an upper bound first: past the reducing part, each lot's notional (or margin) must fit
  local unit = p * lot * mult
  if is_deriv and not (product == 'OPTION' and is_buy) then
    unit = (product == 'OPTION' and prices().index or p) * lot * mult * im_bps / 10000
  end
  if unit > 0 then hi = math.min(hi, math.floor(red / lot) + math.floor(budget / unit) + 1) end
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if cost(p, mid * lot, is_buy, red) <= budget then lo = mid else hi = mid - 1 end
  end
  return lo * lot
end

-- Positions as the matcher keeps them (dex:{m}:pos), read once per user per call and kept
-- current by record_trade.
local positions = {}
local function position(user)
  local size = positions[user]
  if size == nil then
    size = tonumber(redis.call('HGET', K_POS, user) or '0') or 0
    positions[user] = size
  end
  return size
end

-- How much of a position of signed size pos an order of that side would reduce.
local function reducible(is_buy, pos)
  if is_buy then return math.max(-pos, 0) end
  return math.max(pos, 0)
end

-- A fill never opens or grows a position beyond what its order reserved margin for: o.oa is
-- what the order may still open (nil: no bound). The most of f it may fill at position pos:
local function fill_cap(o, is_buy, f, pos)
  if o.oa == nil then return f end
  return math.min(f, reducible(is_buy, pos) + o.oa)
end

-- The order filled f at position pos: what opened comes off its allowance.
local function use_allowance(o, is_buy, f, pos)
  if o.oa == nil then return end
  local opened = f - reducible(is_buy, pos)
  if opened > 0 then o.oa = o.oa - opened end
end

-- per-unit outputs (one unit = one command, one expiry or one cancel-all removal) -------
local bid_changes, ask_changes, changed = {}, {}, false
local unit_trades = {}  -- every trade of this call: one trade: publication at the end
local touched, touched_list = {}, {}
local cache = {}
-- statistics of every trade of this call (all share `now`)
local agg = nil

-- Settlement events of the whole call go out together at the end: one stream entry (per
-- EVENTS_PER_ENTRY events) whose fields are the events' eseq -> event JSON, in order. Each
-- event text is built in one concatenation and never joined with the others: this Lua hashes
-- every byte of every string it creates, so a joined copy would cost as much again.
local EVENTS_PER_ENTRY = 1000
local event_args = {}
local function next_eseq()
  eseq = eseq + 1
  events_written = events_written + 1
  return int(eseq)
end
local function emit_event(eseq_text, event_json)
  local n = #event_args
  event_args[n + 1] = eseq_text
  event_args[n + 2] = event_json
end

-- Order record: the immutable part in four fields written once (common/order_reads.py
-- decodes them for every Python reader), the mutable part in its own fields (qty, filled,
-- status, reason, updatedTs), so HGET okey status still works. One small HSET per order
-- instead of eighteen fields (a new hash is a listpack: each field is a scan and a realloc),
-- and no value over 64 bytes, so the hash stays a listpack (hash-max-listpack-value; one
-- longer value makes Redis keep it as a hashtable, about 2.5 times the memory):
--   d = side|type|timeInForce|reduceOnly|expiresAt|price|ts   a = aseq|reserved|liquidation|market
--   u = userId   c = clientOrderId   (reduceOnly, liquidation: 0/1)
-- Records of the earlier packed shape (one field d = the eleven above|userId|clientOrderId, the
-- id last) and of the flat one (a field per name) are read as well.
local D_PATTERN = '^' .. string.rep('([^|]*)|', 6) .. '(.*)$'
local D_OLD_PATTERN = '^' .. string.rep('([^|]*)|', 12) .. '(.*)$'
local LOAD_FIELDS = {'userId', 'clientOrderId', 'side', 'type', 'timeInForce', 'reduceOnly',
  'expiresAt', 'price', 'qty', 'filled', 'status', 'reason', 'ts', 'aseq'}

local function load(okey)
  local o = cache[okey]
  if o then return o end
  local raw = redis.call('HMGET', okey, 'd', 'qty', 'filled', 'status', 'reason', 'a', 'u', 'c',
                        'oa')
  if raw[1] then
    local side, otype, tif, ro, exp, price, ts, aseq, user, cid
    if raw[6] then
      side, otype, tif, ro, exp, price, ts = string.match(raw[1], D_PATTERN)
      aseq, user, cid = string.match(raw[6], '^([^|]*)|'), raw[7], raw[8]
    else
      local _
      side, otype, tif, ro, exp, price, ts, aseq, _, _, _, user, cid =
        string.match(raw[1], D_OLD_PATTERN)
    end
    o = {side = side, type = otype, timeInForce = tif, reduceOnly = ro, expiresAt = exp,
      price = tonumber(price), ts = ts, aseq = aseq, userId = user, clientOrderId = cid,
      qty = tonumber(raw[2]), filled = tonumber(raw[3]), status = raw[4], reason = raw[5] or '',
      oa = tonumber(raw[9] or '')}
  else
    -- a record in the earlier flat shape (written before this version)
    raw = redis.call('HMGET', okey, unpack(LOAD_FIELDS))
    if not raw[1] then return nil end
    o = {}
    for i, name in ipairs(LOAD_FIELDS) do o[name] = raw[i] or nil end
    o.qty, o.filled, o.price = tonumber(o.qty), tonumber(o.filled), tonumber(o.price)
  end
  o.key = okey
  cache[okey] = o
  return o
end

local function touch(o)
  if not touched[o.key] then
    touched[o.key] = true
    touched_list[#touched_list + 1] = o
  end
end

-- Level deltas gather per unit and reach the level hashes once per level in flush().
local function level_add(is_bid, price, delta)
  local changes = is_bid and bid_changes or ask_changes
  changes[price] = (changes[price] or 0) + delta
  changed = true
end

-- Level totals are read once per price per call, kept here, and written back once per
-- changed level at the end of the call (write_levels), not once per unit.
local level_totals = {[K_LB] = {}, [K_LA] = {}}
local level_dirty = {[K_LB] = {}, [K_LA] = {}}

local function apply_levels(lkey, changes)
  local totals, dirty = level_totals[lkey], level_dirty[lkey]
  for price, delta in pairs(changes) do
    local total = totals[price]
    if total == nil then total = tonumber(redis.call('HGET', lkey, int(price)) or '0') end
    total = total + delta
    if total < 0 then total = 0 end
    totals[price] = total
    dirty[price] = true
    changes[price] = total
  end
end

local function write_levels(lkey)
  local totals, set, del = level_totals[lkey], {}, {}
  for price in pairs(level_dirty[lkey]) do
    local total = totals[price]
    if total > 0 then
      set[#set + 1] = int(price); set[#set + 1] = int(total)
    else
      del[#del + 1] = int(price)
    end
  end
  for i = 1, #set, 1000 do redis.call('HSET', lkey, unpack(set, i, math.min(i + 999, #set))) end
  for i = 1, #del, 500 do redis.call('HDEL', lkey, unpack(del, i, math.min(i + 499, #del))) end
end

-- The orders: publication of an order, built in one concatenation (see emit_event).
local function order_publication(o)
  local reason = (o.reason and o.reason ~= '') and q(o.reason) or 'null'
  return '{"seq":' .. int(now) .. ',"data":{"clientOrderId":' .. q(o.clientOrderId) .. ',"userId":' .. q(o.userId) ..
    ',"market":' .. q(market) .. ',"side":"' .. o.side .. '","type":"' .. o.type ..
    '","timeInForce":"' .. o.timeInForce .. '","reduceOnly":' ..
    (o.reduceOnly == '1' and 'true' or 'false') .. ',"expiresAt":' .. o.expiresAt ..
    ',"price":' .. int(o.price) .. ',"qty":' .. int(o.qty) .. ',"filled":' .. int(o.filled) ..
    ',"status":"' .. o.status .. '","reason":' .. reason .. ',"ts":' .. o.ts ..
    ',"updatedTs":' .. int(now) .. '}}'
end

local function levels_json(changes, descending)
  local p1, t1 = next(changes)
  if p1 == nil then return '[]' end
  if next(changes, p1) == nil then return '[[' .. int(p1) .. ',' .. int(t1) .. ']]' end
  local list = {}
  for p, total in pairs(changes) do list[#list + 1] = {p, total} end
  if descending then
    table.sort(list, function(a, b) return a[1] > b[1] end)
  else
    table.sort(list, function(a, b) return a[1] < b[1] end)
  end
  local parts = {}
  for i, level in ipairs(list) do parts[i] = '[' .. int(level[1]) .. ',' .. int(level[2]) .. ']' end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- Depth messages of the call, one per seq, published together at the end (one PUBLISH).
local depth_texts = {}

-- End of one unit: depth seq + depth delta (if the book changed), trades, order updates.
local function flush()
  if changed then
    apply_levels(K_LB, bid_changes)
    apply_levels(K_LA, ask_changes)
    seq = seq + 1
    depth_texts[#depth_texts + 1] = '{"seq":' .. int(seq) .. ',"data":{"bids":' ..
      levels_json(bid_changes, true) .. ',"asks":' .. levels_json(ask_changes, false) .. '}}'
  end
  local n = #touched_list
  if n > 0 then
    for i = 1, n do
      local o = touched_list[i]
      redis.call(publish, chprefix .. 'orders:' .. o.userId, order_publication(o))
    end
    touched, touched_list = {}, {}
  end
  if changed then bid_changes, ask_changes, changed = {}, {}, false end
end

local function book_member(o)
  return string.format('%016d', tonumber(o.aseq)) .. '|' .. o.userId .. '|' .. o.clientOrderId
end

-- An order reaches a final status: record, leave the open set, done event.
-- (A taker's record is written whole once its command is done: see process_order.)
local function finish(o, new_status, reason)
  o.status, o.reason = new_status, reason or ''
  if not o.incoming then
    redis.call('HSET', o.key, 'status', new_status, 'reason', o.reason, 'filled', int(o.filled),
               'qty', int(o.qty), 'updatedTs', int(now))
    redis.call('SREM', uprefix .. o.userId, o.clientOrderId)
  end
  local e = next_eseq()
  emit_event(e, '{"eseq":' .. e .. ',"k":"done","user":' .. q(o.userId) .. ',"cid":' ..
    q(o.clientOrderId) .. ',"side":"' .. o.side .. '","status":"' .. new_status ..
    '","reason":' .. (reason and q(reason) or 'null') .. ',"filled":' .. int(o.filled) ..
    ',"ts":' .. int(now) .. '}')
  touch(o)
end

-- Take a resting order off the book (cancel, self-trade, expiry) with a final status.
local function remove_resting(o, new_status, reason)
  local is_bid = o.side == 'BUY'
  local member = book_member(o)
  redis.call('ZREM', is_bid and K_BIDS or K_ASKS, member)
  if o.expiresAt ~= '0' then redis.call('ZREM', K_EXP, (is_bid and 'B' or 'S') .. member) end
  level_add(is_bid, o.price, -(o.qty - o.filled))
  finish(o, new_status, reason)
end

local function reply(cmd, body)
  if cmd.reply and cmd.reply ~= cjson.null and cmd.reply ~= '' then
    redis.call('LPUSH', cmd.reply, body)
    redis.call('EXPIRE', cmd.reply, 60)
  end
end

local function parse_member(member)
  return string.match(member, '^%d+|([^|]+)|(.*)$')
end

local trade_id_head = string.sub(q(market), 1, -2) .. ':'  -- '"<market>:' (+ tseq + '"')
local function record_trade(p, f, taker, maker, taker_is_buy, liquidation)
  tseq = tseq + 1
  local buyer, seller, buy_cid, sell_cid
  if taker_is_buy then
    buyer, seller, buy_cid, sell_cid = taker.userId, maker.userId, taker.clientOrderId, maker.clientOrderId
  else
    buyer, seller, buy_cid, sell_cid = maker.userId, taker.userId, maker.clientOrderId, taker.clientOrderId
  end
  local taker_side = taker_is_buy and 'BUY' or 'SELL'
  local ts_text, p_text, f_text = int(tseq), int(p), int(f)
  local trade = '{"tradeId":' .. trade_id_head .. ts_text .. '","market":' .. q(market) ..
    ',"price":' .. p_text .. ',"qty":' .. f_text .. ',"takerSide":"' .. taker_side ..
    '","buyer":' .. q(buyer) .. ',"seller":' .. q(seller) .. ',"buyOid":' .. q(buy_cid) ..
    ',"sellOid":' .. q(sell_cid) .. ',"ts":' .. int(now) .. ',"seq":' .. ts_text .. '}'
  redis.call('XADD', K_TRADES, '*', 't', trade)  -- trimmed once per call, at the end
  unit_trades[#unit_trades + 1] = trade
  local e = next_eseq()
  emit_event(e, '{"eseq":' .. e .. ',"k":"fill","tradeId":' .. trade_id_head .. ts_text ..
    '","tseq":' .. ts_text .. ',"price":' .. p_text .. ',"qty":' .. f_text ..
    ',"takerSide":"' .. taker_side .. '","buyer":' .. q(buyer) .. ',"seller":' .. q(seller) ..
    ',"buyCid":' .. q(buy_cid) .. ',"sellCid":' .. q(sell_cid) .. ',"ts":' .. int(now) ..
    (liquidation and ',"liquidation":true}' or '}'))
  if is_deriv then
    positions[buyer] = redis.call('HINCRBY', K_POS, buyer, f)
    positions[seller] = redis.call('HINCRBY', K_POS, seller, -f)
  end
  local qv = p * f * mult
  if agg == nil then
    agg = {o = p, h = p, l = p, c = p, v = f, qv = qv}
  else
    if p > agg.h then agg.h = p end
    if p < agg.l then agg.l = p end
    agg.c, agg.v, agg.qv = p, agg.v + f, agg.qv + qv
  end
end

-- Per book, a score up to which it is known to hold no order this call (a maker read found
-- none; a ZADD at or below it lowers it; removals keep it true): a taker whose bound is at or
-- below it cannot cross and skips the read.
local empty_upto = {}

-- orders ------------------------------------------------------------------------------
-- Does a maker at price mp cross a taker (side, limit price, no limit)?
local function crosses(is_buy, price, no_limit, mp)
  if no_limit then return true end
  if is_buy then return mp <= price end
  return mp >= price
end

-- A maker's price from its book score (bids are stored negated).
local function maker_price(taker_is_buy, score)
  score = tonumber(score)
  if taker_is_buy then return score end
  return -score
end

local function match_order(cmd, o)
  local user, cid, okey = o.userId, o.clientOrderId, o.key
  local is_buy = o.side == 'BUY'
  local otype, tif, price, qty = o.type, o.timeInForce, o.price, o.qty
  local is_market = otype == 'MARKET'
  local reduce = o.reduceOnly == '1'
  local liquidation = cmd.liquidation == true
  local expires_at = tonumber(o.expiresAt)

  if status ~= 'OPEN' then
    finish(o, 'REJECTED', status == 'HALTED' and 'MARKET_HALTED' or 'MARKET_CLOSED')
    return
  end
  if reduce then
    local pos = is_deriv and position(user) or 0
    if not is_deriv or (is_buy and pos >= 0) or ((not is_buy) and pos <= 0) then
      finish(o, 'REJECTED', 'REDUCE_ONLY')
      return
    end
    if qty > math.abs(pos) then qty = math.abs(pos); o.qty = qty end
  end

  local book = is_buy and K_ASKS or K_BIDS
  -- the limit the order trades within: its price; a MARKET order without one is bounded by
  -- the market's price band around the mark (PERP, FUTURE), else by nothing
  local limit = price
  local no_limit = is_market and price == 0
  if no_limit and band_bps > 0 then
    local mark = prices().mark
    if is_buy then
      limit = math.floor(mark * (10000 + band_bps) / 10000)
    else
      limit = math.ceil(mark * (10000 - band_bps) / 10000)
    end
    no_limit = false
  end
  -- a price-0 MARKET order spends at most what it reserved (its budget): a buy's quote, a
  -- derivative's margin for what it may open (an order that only reduces pays the fee alone)
  local budget = nil
  if is_market and price == 0 and not liquidation then
    local opens = is_deriv and not (product == 'OPTION' and is_buy) and o.oa ~= 0 and not reduce
    if (is_buy and not is_deriv) or (product == 'OPTION' and is_buy) or opens then
      budget = tonumber(cmd.reserved) or 0
    end
  end

  if tif == 'POST_ONLY' and not is_market then
    local best = redis.call('ZRANGE', book, 0, 0, 'WITHSCORES')
    if #best > 0 and crosses(is_buy, limit, no_limit, maker_price(is_buy, best[2])) then
      finish(o, 'REJECTED', 'POST_ONLY_WOULD_CROSS')
      return
    end
  end

  if tif == 'FOK' then
    -- all or none, counting only other users' liquidity, and only what each side's margin
    -- lets it fill (and, with a budget, what it affords): the loop below, rehearsed
    local need, left_budget, start, done = qty, budget, 0, false
    local sim_pos, allowance = {}, {}
    local function sim(u) if sim_pos[u] == nil then sim_pos[u] = position(u) end return sim_pos[u] end
    local taker = {oa = o.oa}
    while not done do
      local chunk = redis.call('ZRANGE', book, start, start + 99, 'WITHSCORES')
      if #chunk == 0 then break end
      for i = 1, #chunk, 2 do
        local mp = maker_price(is_buy, chunk[i + 1])
        if not crosses(is_buy, limit, no_limit, mp) then done = true; break end
        local mu, mc = parse_member(chunk[i])
        if mu ~= user then
          local mo = load(oprefix .. mu .. ':' .. mc)
          local f = math.min(need, mo.qty - mo.filled)
          local tpos, mpos = sim(user), sim(mu)
          if fill_cap(taker, is_buy, f, tpos) < f then done = true; break end
          local maker = {oa = allowance[mo.key]}
          if maker.oa == nil then maker.oa = mo.oa end
          f = fill_cap(maker, not is_buy, f, mpos)
          if left_budget then
            local red = reducible(is_buy, tpos)
            local can = affordable(mp, f, left_budget, is_buy, red)
            if can < f then done = true; break end
            left_budget = left_budget - cost(mp, f, is_buy, red)
          end
          use_allowance(taker, is_buy, f, tpos)
          use_allowance(maker, not is_buy, f, mpos)
          allowance[mo.key] = maker.oa
          sim_pos[user] = tpos + (is_buy and f or -f)
          sim_pos[mu] = mpos + (is_buy and -f or f)
          need = need - f
          if need == 0 then done = true; break end
        end
      end
      start = start + 100
    end
    if need > 0 then
      finish(o, 'EXP', 'TIME_IN_FORCE')
      return
    end
  end

  local remaining = qty
  local margin_stop = false  -- the order may open no more: its rest is cancelled
  -- the best makers that cross, two at a time, by score bound (no scores to format: the
  -- maker's price is in its record); none to read when the book is known to hold nothing
  -- up to the bound
  local bound_score = no_limit and math.huge or (is_buy and limit or -limit)
  local bound = no_limit and '+inf' or int(bound_score)
  local window, wi = {}, 1
  while remaining > 0 do
    if wi > #window then
      local known = empty_upto[book]
      if known and bound_score <= known then break end
      window, wi = redis.call('ZRANGE', book, '-inf', bound, 'BYSCORE', 'LIMIT', '0', '2'), 1
      if #window == 0 then
        if not known or bound_score > known then empty_upto[book] = bound_score end
        break
      end
    end
    local member = window[wi]
    local mu, mc = parse_member(member)
    local mo = load(oprefix .. mu .. ':' .. mc)
    local mp = mo.price
    if mu == user then
      remove_resting(mo, 'CXL', 'SELF_TRADE')
      wi = wi + 2
    else
      local left = mo.qty - mo.filled
      local tpos = is_deriv and position(user) or 0
      local mpos = is_deriv and position(mu) or 0
      local f = fill_cap(o, is_buy, math.min(remaining, left), tpos)
      if f == 0 then margin_stop = true; break end
      local maker_cap = fill_cap(mo, not is_buy, f, mpos)
      local maker_short = maker_cap < f
      f = maker_cap
      if budget and f > 0 then
        local red = reducible(is_buy, tpos)
        local can = affordable(mp, f, budget, is_buy, red)
        if can == 0 then break end
        if can < f then maker_short = false end  -- the budget, not the maker, bounds this fill
        f = can
        budget = budget - cost(mp, f, is_buy, red)
      end
      if f > 0 then
        use_allowance(o, is_buy, f, tpos)
        use_allowance(mo, not is_buy, f, mpos)
        remaining = remaining - f
        o.filled = o.filled + f
        mo.filled = mo.filled + f
        level_add(not is_buy, mp, -f)
        record_trade(mp, f, o, mo, is_buy, liquidation)  -- the fill event before the maker's done
      end
      if maker_short then
        -- the maker may open no more: what it could fill has, the rest is cancelled
        remove_resting(mo, 'CXL', 'INSUFFICIENT_MARGIN')
        wi = wi + 2
      elseif mo.filled == mo.qty then
        redis.call('ZREM', book, member)
        if mo.expiresAt ~= '0' then redis.call('ZREM', K_EXP, (is_buy and 'S' or 'B') .. member) end
        finish(mo, 'FILLED', nil)
        wi = wi + 2
      else
        mo.status = 'PARTIAL'
        local fields = {'filled', int(mo.filled), 'status', 'PARTIAL', 'updatedTs', int(now)}
        if mo.oa ~= nil then fields[#fields + 1] = 'oa'; fields[#fields + 1] = int(mo.oa) end
        redis.call('HSET', mo.key, unpack(fields))
        touch(mo)
      end
    end
  end

  if remaining == 0 then
    finish(o, 'FILLED', nil)
  elseif margin_stop then
    finish(o, 'CXL', 'INSUFFICIENT_MARGIN')
  elseif is_market or tif == 'IOC' or tif == 'FOK' then
    finish(o, 'EXP', 'TIME_IN_FORCE')
  elseif expires_at > 0 and expires_at <= now then
    finish(o, 'EXP', 'EXPIRES_AT')
  else
    local member = book_member(o)
    local rest_book, score = is_buy and K_BIDS or K_ASKS, is_buy and -price or price
    redis.call('ZADD', rest_book, int(score), member)
    local known = empty_upto[rest_book]
    if known and score <= known then empty_upto[rest_book] = score - 1 end
    if expires_at > 0 then redis.call('ZADD', K_EXP, expires_at, (is_buy and 'B' or 'S') .. member) end
    redis.call('SADD', uprefix .. user, cid)
    level_add(is_buy, price, remaining)
    o.status = o.filled > 0 and 'PARTIAL' or 'NEW'
  end
end

local function process_order(cmd)
  local user, cid = cmd.user, cmd.cid
  local okey = oprefix .. user .. ':' .. cid
  if cache[okey] or redis.call('EXISTS', okey) == 1 then
    reply(cmd, '{"status":"' .. (load(okey).status) .. '"}')
    return false
  end
  aseq = aseq + 1
  local o = {
    key = okey, clientOrderId = cid, userId = user, side = cmd.side, type = cmd.type or 'LIMIT',
    timeInForce = cmd.tif or 'GTC', reduceOnly = cmd.reduceOnly == true and '1' or '0',
    expiresAt = int(tonumber(cmd.expiresAt) or 0), price = tonumber(cmd.price) or 0,
    qty = tonumber(cmd.qty), filled = 0, status = 'NEW', reason = '',
    ts = int(tonumber(cmd.ts) or 0), aseq = int(aseq), incoming = true,
  }
  -- what a derivative order may open (the gateway reserved margin for that much); a
  -- reduce-only order, nothing
  if is_deriv then
    if cmd.reduceOnly == true then o.oa = 0 else o.oa = tonumber(cmd.open) end
  end
  cache[okey] = o
  touch(o)
  match_order(cmd, o)
  o.incoming = nil
  local fields = {'d', o.side .. '|' .. o.type .. '|' .. o.timeInForce .. '|' ..
    o.reduceOnly .. '|' .. o.expiresAt .. '|' .. int(o.price) .. '|' .. o.ts,
    'a', o.aseq .. '|' .. int(tonumber(cmd.reserved) or 0) .. '|' ..
    (cmd.liquidation == true and '1' or '0') .. '|' .. market, 'u', user, 'c', cid,
    'qty', int(o.qty), 'filled', int(o.filled), 'status', o.status, 'reason', o.reason,
    'updatedTs', int(now)}
  if o.oa ~= nil and (o.status == 'NEW' or o.status == 'PARTIAL') then
    -- a resting derivative order keeps what it may still open (read back by load)
    fields[#fields + 1] = 'oa'
    fields[#fields + 1] = int(o.oa)
  end
  redis.call('HSET', okey, unpack(fields))
  return o
end

local function open_order(o)
  return o and (o.status == 'NEW' or o.status == 'PARTIAL')
end

local function process_cancel(cmd)
  local o = load(oprefix .. cmd.user .. ':' .. cmd.cid)
  if o == nil then reply(cmd, '{"result":"UNKNOWN"}'); return end
  if not open_order(o) then reply(cmd, '{"result":"CLOSED"}'); return end
  remove_resting(o, 'CXL', cmd.reason or 'USER')
  reply(cmd, '{"result":"CANCELLED"}')
end

-- Remove a list of open orders one by one, in arrival order, one depth seq each.
local function remove_all(list, reason)
  table.sort(list, function(a, b) return tonumber(a.aseq) < tonumber(b.aseq) end)
  for _, o in ipairs(list) do
    remove_resting(o, 'CXL', reason)
    flush()
  end
  return #list
end

local function process_cancel_all(cmd)
  local list = {}
  for _, cid in ipairs(redis.call('SMEMBERS', uprefix .. cmd.user)) do
    local o = load(oprefix .. cmd.user .. ':' .. cid)
    if open_order(o) then list[#list + 1] = o end
  end
  local n = remove_all(list, cmd.reason or 'USER')
  reply(cmd, '{"cancelled":' .. int(n) .. '}')
end

local function process_admin(cmd)
  if cmd.op == 'halt' and status == 'OPEN' then
    status = 'HALTED'; status_changed = true
  elseif cmd.op == 'resume' and status == 'HALTED' then
    status = 'OPEN'; status_changed = true
  elseif cmd.op == 'expire' and status ~= 'EXPIRED' then
    status = 'EXPIRED'; status_changed = true
    local list = {}
    for _, book in ipairs({K_BIDS, K_ASKS}) do
      for _, member in ipairs(redis.call('ZRANGE', book, 0, -1)) do
        local mu, mc = parse_member(member)
        list[#list + 1] = load(oprefix .. mu .. ':' .. mc)
      end
    end
    remove_all(list, 'MARKET_EXPIRED')
  end
  reply(cmd, '{"status":"' .. status .. '"}')
end

-- expiry of resting orders whose expiresAt has passed ------------------------------------
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', K_EXP, '-inf', now, 'LIMIT', 0, 500)) do
  local mu, mc = parse_member(string.sub(entry, 2))
  local o = load(oprefix .. mu .. ':' .. mc)
  if open_order(o) then
    remove_resting(o, 'EXP', 'EXPIRES_AT')
    flush()
  else
    redis.call('ZREM', K_EXP, entry)
  end
end

-- the commands ------------------------------------------------------------------------
local entries = {}
for i = 13, #ARGV, 2 do entries[#entries + 1] = {ARGV[i], ARGV[i + 1]} end
local read_count = tonumber(ARGV[9]) or 0
local read_ids = {}
if read_count > 0 then
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[10], ARGV[11], 'COUNT', read_count,
                           'STREAMS', KEYS[13], '>')
  if reply and reply[1] then
    for _, entry in ipairs(reply[1][2]) do
      local fields, raw = entry[2], '{}'
      for f = 1, #fields, 2 do if fields[f] == 'c' then raw = fields[f + 1] end end
      entries[#entries + 1] = {entry[1], raw}
      read_ids[#read_ids + 1] = entry[1]
    end
  end
end
local applied = 0
for _, entry in ipairs(entries) do
  local id, raw = entry[1], entry[2]
  local id_ms, id_sq = id_parts(id)
  if last_ms == nil or id_ms > last_ms or (id_ms == last_ms and id_sq > last_sq) then
    local ok, cmd = pcall(cjson.decode, raw)
    if ok and type(cmd) == 'table' then
      local op = cmd.op
      if op == 'order' then
        local o = process_order(cmd)
        if o and cmd.reply then reply(cmd, '{"status":"' .. o.status .. '"}') end
      elseif op == 'cancel' then
        process_cancel(cmd)
      elseif op == 'cancel_all' then
        process_cancel_all(cmd)
      elseif op == 'halt' or op == 'resume' or op == 'expire' then
        process_admin(cmd)
      end
      flush()
      applied = applied + 1
    end
    last, last_ms, last_sq = id, id_ms, id_sq
  end
end

-- statistics: candles and the 24 h window, from this call's trades ------------------------
local INTERVALS = {{'1m', 60000}, {'5m', 300000}, {'15m', 900000}, {'1h', 3600000},
  {'4h', 14400000}, {'1d', 86400000}}
local function candle_json(c)
  return '[' .. int(c[1]) .. ',' .. int(c[2]) .. ',' .. int(c[3]) .. ',' .. int(c[4]) .. ',' ..
    int(c[5]) .. ',' .. int(c[6] or 0) .. ']'
end
local DAY = 86400000
local stats = nil
if agg then
  for _, iv in ipairs(INTERVALS) do
    local bucket = now - now % iv[2]
    local ckey = mprefix .. 'candles:' .. iv[1]
    local raw = redis.call('HGET', ckey, int(bucket))
    local c
    if raw then
      c = cjson.decode(raw)
      if agg.h > c[2] then c[2] = agg.h end
      if agg.l < c[3] then c[3] = agg.l end
      c[4], c[5], c[6] = agg.c, c[5] + agg.v, (c[6] or 0) + agg.qv
    else
      c = {agg.o, agg.h, agg.l, agg.c, agg.v, agg.qv}
      redis.call('ZADD', mprefix .. 'cidx:' .. iv[1], bucket, int(bucket))
    end
    redis.call('HSET', ckey, int(bucket), candle_json(c))
  end
  local s = redis.call('HMGET', K_STATS, 'high', 'low', 'open')
  local high, low = tonumber(s[1] or ''), tonumber(s[2] or '')
  if high == nil or agg.h > high then high = agg.h end
  if low == nil or agg.l < low then low = agg.l end
  local open = s[3]
  if open == false or open == nil or open == '' then open = int(agg.o) end
  redis.call('HSET', K_STATS, 'last', int(agg.c), 'lastTs', int(now), 'high', int(high),
    'low', int(low), 'open', open)
  redis.call('HINCRBY', K_STATS, 'vol', agg.v)
  redis.call('HINCRBY', K_STATS, 'qvol', agg.qv)
end
-- evict minute buckets that left the 24 h window (a bucket counts while it overlaps it)
do
  local upto = now - DAY - 60000
  local evicted = redis.call('HGET', K_STATS, 'evicted')
  local from = evicted and ('(' .. evicted) or '-inf'
  local gone = redis.call('ZRANGEBYSCORE', mprefix .. 'cidx:1m', from, upto)
  if #gone > 0 then
    local ckey = mprefix .. 'candles:1m'
    local s = redis.call('HMGET', K_STATS, 'high', 'low')
    local high, low = tonumber(s[1] or ''), tonumber(s[2] or '')
    local recompute = false
    for _, b in ipairs(gone) do
      local c = cjson.decode(redis.call('HGET', ckey, b))
      redis.call('HINCRBY', K_STATS, 'vol', -c[5])
      redis.call('HINCRBY', K_STATS, 'qvol', -(c[6] or 0))
      if (high and c[2] >= high) or (low and c[3] <= low) then recompute = true end
    end
    redis.call('HSET', K_STATS, 'evicted', gone[#gone])
    local rest = redis.call('ZRANGEBYSCORE', mprefix .. 'cidx:1m', '(' .. gone[#gone], '+inf')
    if #rest == 0 then
      redis.call('HSET', K_STATS, 'open', '', 'high', '', 'low', '', 'vol', '0', 'qvol', '0')
    else
      local first = cjson.decode(redis.call('HGET', ckey, rest[1]))
      redis.call('HSET', K_STATS, 'open', int(first[1]))
      if recompute then
        local values = redis.call('HMGET', ckey, unpack(rest))
        high, low = nil, nil
        for _, v in ipairs(values) do
          local c = cjson.decode(v)
          if high == nil or c[2] > high then high = c[2] end
          if low == nil or c[3] < low then low = c[3] end
        end
        redis.call('HSET', K_STATS, 'high', int(high), 'low', int(low))
      end
    end
  end
end

write_levels(K_LB)
write_levels(K_LA)

for i = 1, #event_args, 2 * EVENTS_PER_ENTRY do
  redis.call('XADD', K_EVENTS, '*', unpack(event_args, i,
    math.min(i + 2 * EVENTS_PER_ENTRY - 1, #event_args)))
end

-- Runs of texts[i..j] of at most CHUNK_BYTES joined, in order: send(j, joined) for each. A
-- join up to the Lua buffer's size (8 KB) makes one string; a longer one makes a tower of
-- intermediate strings, each of whose bytes this Lua hashes again.
local CHUNK_BYTES = 7000
local function in_chunks(texts, send)
  local i, n = 1, #texts
  while i <= n do
    local j, size = i, #texts[i]
    while j < n and size + #texts[j + 1] < CHUNK_BYTES do
      j = j + 1
      size = size + #texts[j] + 1
    end
    send(j, i == j and texts[i] or table.concat(texts, ',', i, j), i == j)
    i = j + 1
  end
end

-- depth: the call's seqs, as few publications as the chunks allow; a publication with
-- several seqs is a batch the broadcaster splits back into one update per seq
-- (common.events.depth_updates); a lone seq goes out as its own message
local first_seq = seq - #depth_texts + 1
in_chunks(depth_texts, function(j, joined, single)
  if single then
    redis.call(publish, chprefix .. 'depth:' .. market, joined)
  else
    redis.call(publish, chprefix .. 'depth:' .. market,
      '{"seq":' .. int(first_seq + j - 1) .. ',"batch":[' .. joined .. ']}')
  end
end)
-- trade: every trade of the call, in order; seq = the last trade's of each publication
if #unit_trades > 0 then
  redis.call('XTRIM', K_TRADES, 'MAXLEN', '~', trades_maxlen)
  local first_tseq = tseq - #unit_trades + 1
  in_chunks(unit_trades, function(j, joined)
    redis.call(publish, chprefix .. 'trade:' .. market,
      '{"seq":' .. int(first_tseq + j - 1) .. ',"data":[' .. joined .. ']}')
  end)
end

local out = {'seq', int(seq), 'tseq', int(tseq), 'eseq', int(eseq), 'aseq', int(aseq)}
if last then out[#out + 1] = 'last'; out[#out + 1] = last end
if status_changed or st[1] == false then out[#out + 1] = 'status'; out[#out + 1] = status end
redis.call('HSET', K_STATE, unpack(out))
if #read_ids > 0 then
  redis.call('XACK', KEYS[13], ARGV[10], unpack(read_ids))
  -- Everything up to the last applied id is applied (a replay skips it) and, on this path,
  -- acknowledged too (own and predecessors' pending entries are applied and acknowledged before
  -- the script reads new ones): drop it, whole stream nodes only, so the input stays short.
  redis.call('XTRIM', KEYS[13], 'MINID', '~', last)
end
-- the settle request, in the same call as the events it is for (common.keys.market_settle_queued)
local queue = 0
if events_written > 0 and redis.call('SET', mprefix .. 'settle-queued', '1', 'NX', 'PX', 2000) then
  queue = 1
end
return {applied, events_written, #read_ids, last or '', queue}
