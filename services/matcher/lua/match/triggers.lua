-- match/triggers.lua: trigger orders (docs/api.md "Trigger orders"): the book of untriggered
-- orders and their firing.
--
-- An order command with a "trigger" (STOP_MARKET, STOP_LIMIT, TAKE_PROFIT_MARKET,
-- TAKE_PROFIT_LIMIT, TRAILING_STOP_MARKET; its "type" is what it becomes, MARKET or LIMIT) is
-- judged on arrival: refused like any order by the market's status, fired at once when its
-- condition already holds, else it waits with status UNTRIGGERED in the sorted set of its
-- source and direction (dex:{m}:trig:<MARK|LAST|INDEX>:<U|D>, score = trigger price, member =
-- its book member; U fires when the source is at or above the trigger, D at or below), and a
-- trailing stop also in dex:{m}:trail:<src>:<B|S> by the extreme price seen since placement.
-- The sets are judged again whenever their source moves: LAST after every command whose trades
-- moved the last price, MARK, INDEX and LAST on the oracle's "prices" command. A fired order
-- leaves its sets and is matched in the same call as a new incoming order of its base type,
-- with a fresh arrival; its trades may fire more (LAST is read again after each fire). Being in
-- a set is the only way to fire, and the set changes in the same atomic call, so an order fires
-- once however often the same prices are seen. Nothing fires while the market is HALTED,
-- CANCEL_ONLY or EXPIRED; a fire into POST_ONLY or REDUCE_ONLY that refuses the order ends it
-- REJECTED with the state's reason. At most FIRES_PER_CALL orders fire per call: when more are
-- due, the call appends a "prices" command to the market stream, and the next call goes on.
--
-- A trailing stop's trigger is the extreme price seen (SELL: highest, BUY: lowest) minus (SELL)
-- or plus (BUY) its distance: trailingDelta ticks, or trailingDelta bps of that price rounded up
-- to a whole unit; the result is rounded to the tick away from the price (SELL down, BUY up), so
-- the stop never sits closer than asked. It only tightens. LAST's extremes are the call's
-- highest and lowest trades.

--#include records.lua
--#include orders.lua
--#include matching.lua
--#include publication.lua

local trig = {
  FIRES_PER_CALL = 100,
  SOURCES = {'MARK', 'INDEX', 'LAST'},
}
per_call(function()
  trig.fired = 0          -- orders fired this call
  trig.continued = false  -- this call appended a "prices" command for what it could not fire
  trig.seen_tseq = 0      -- the trade seq LAST was last judged at
end)
-- Whether the market has LAST trigger orders (else a trade judges nothing): match/state.lua
-- hints.last_triggers.

function trig.key(src, dir) return mprefix .. 'trig:' .. src .. ':' .. dir end

function trig.trail_key(src, side)
  return mprefix .. 'trail:' .. src .. ':' .. string.sub(side, 1, 1)
end

-- At the start of a call: LAST was judged at the trades so far; are there LAST orders at all
-- (one EXISTS, so a market without any pays nothing more per trade; none at all when the
-- state says the market had none after its last call)?
function trig.start()
  trig.seen_tseq = tseq
  if hints.last_triggers == false then return end
  hints.last_triggers = redis.call('EXISTS', trig.key('LAST', 'U'), trig.key('LAST', 'D'),
    trig.trail_key('LAST', 'B'), trig.trail_key('LAST', 'S')) > 0
end

-- The source's price now; nil when there is none (LAST before the market's first trade).
function trig.price(src)
  if src == 'MARK' then return prices().mark end
  if src == 'INDEX' then return prices().index end
  if agg then return agg.c end
  return tonumber(redis.call('HGET', K_STATS, 'last') or '')
end

-- The t field's parts: source, trigger price, triggered ('0'/'1'), self-trade prevention mode.
function trig.fields(o)
  local src, tp, fired, stp = string.match(o.t, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return src, tonumber(tp), fired, stp
end

function trig.holds(dir, p, tp)
  if dir == 'U' then return p >= tp end
  return p <= tp
end

-- A trailing stop's trigger from the extreme price seen (see the header); 0: none.
function trig.trailing_trigger(side, delta, unit, extreme)
  local tick = tonumber(cfg.tickSize or '1')
  local dist = delta * tick
  if unit == 'BPS' then
    dist = math.floor(extreme / 10000) * delta + math.ceil((extreme % 10000) * delta / 10000)
  end
  if side == 'SELL' then
    local t = extreme - dist
    t = t - t % tick
    if t < 0 then return 0 end
    return t
  end
  local t = extreme + dist
  local r = t % tick
  if r > 0 then t = t + tick - r end
  return t
end

-- A new trigger order (o as process_order built it, cmd its command).
function trig.arrive(cmd, o)
  o.type = cmd.trigger
  tpsl.position_order(cmd, o)
  local src, stp = cmd.triggerSource, type(cmd.stp) == 'string' and cmd.stp or ''
  local tp = tonumber(cmd.triggerPrice) or 0
  local dir = trigger_direction(o)
  local p = trig.price(src)
  if o.type == 'TRAILING_STOP_MARKET' then
    local delta, unit = tonumber(cmd.trailingDelta), cmd.trailingUnit
    tp = p and trig.trailing_trigger(o.side, delta, unit, p) or 0
    o.tr = int(delta) .. '|' .. unit .. '|' .. (p and int(p) or '')
  end
  o.t = src .. '|' .. int(tp) .. '|0|' .. stp
  if src == 'LAST' then hints.last_triggers = true end
  local refusal = status_refusal(cmd, o)
  if refusal then
    finish(o, 'REJECTED', refusal)
    return
  end
  local expires_at = tonumber(o.expiresAt)
  if expires_at > 0 and expires_at <= now then
    finish(o, 'EXP', 'EXPIRES_AT')
    return
  end
  tpsl.replace_position(o)
  if p and tp > 0 and trig.holds(dir, p, tp) then
    -- its condition holds already: it fires at once
    o.t = src .. '|' .. int(tp) .. '|1|' .. stp
    tpsl.on_fire(o, cmd)
    match_order(cmd, o)
    return
  end
  o.status = 'UNTRIGGERED'
  local member = book_member(o)
  if tp > 0 then redis.call('ZADD', trig.key(src, dir), tp, member) end
  if o.tr then
    local extreme = p and int(p) or (o.side == 'SELL' and '-inf' or '+inf')
    redis.call('ZADD', trig.trail_key(src, o.side), extreme, member)
  end
  if expires_at > 0 then
    redis.call('ZADD', K_EXP, expires_at, (o.side == 'BUY' and 'B' or 'S') .. member)
    hints.sooner('expiry', expires_at)
  end
  redis.call('SADD', uprefix .. o.userId, o.clientOrderId)
end

-- Trailing stops of src follow a new high (SELL) or low (BUY); a trigger only tightens.
function trig.follow(src, hi, lo)
  for _, side in ipairs({'SELL', 'BUY'}) do
    local key = trig.trail_key(src, side)
    local p = side == 'SELL' and hi or lo
    local members
    if side == 'SELL' then
      members = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. int(p))
    else
      members = redis.call('ZRANGEBYSCORE', key, '(' .. int(p), '+inf')
    end
    for _, member in ipairs(members) do
      local mu, mc = parse_member(member)
      local o = load(oprefix .. mu .. ':' .. mc)
      if o and o.status == 'UNTRIGGERED' and o.tr then
        local delta, unit = string.match(o.tr, '^([^|]*)|([^|]*)|')
        local _, old_tp, _, stp = trig.fields(o)
        local tp = trig.trailing_trigger(side, tonumber(delta), unit, p)
        if old_tp > 0 and ((side == 'SELL' and tp < old_tp) or (side == 'BUY' and tp > old_tp)) then
          tp = old_tp
        end
        o.tr = delta .. '|' .. unit .. '|' .. int(p)
        o.t = src .. '|' .. int(tp) .. '|0|' .. stp
        redis.call('ZADD', key, int(p), member)
        if tp > 0 then redis.call('ZADD', trig.key(src, trigger_direction(o)), tp, member) end
        redis.call('HSET', o.key, 't', o.t, 'tr', o.tr, 'updatedTs', now_text)
      else
        redis.call('ZREM', key, member)
      end
    end
  end
end

-- The first order of src due at price p: the lowest U trigger at or below p, else the highest
-- D trigger at or above it; the earliest arrival within a price.
function trig.first_due(src, p)
  local up = redis.call('ZRANGEBYSCORE', trig.key(src, 'U'), '-inf', int(p), 'LIMIT', 0, 1)
  if up[1] then return up[1], 'U' end
  local dkey = trig.key(src, 'D')
  local dn = redis.call('ZREVRANGEBYSCORE', dkey, '+inf', int(p), 'WITHSCORES', 'LIMIT', 0, 1)
  if not dn[1] then return nil end
  return redis.call('ZRANGEBYSCORE', dkey, dn[2], dn[2], 'LIMIT', 0, 1)[1], 'D'
end

-- An untriggered order fires: out of its sets, then matched as a new incoming order of its base
-- type with a fresh arrival (what it reserved at placement is its MARKET budget as for any
-- order), its record written whole; one unit.
function trig.fire(o)
  local src, tp, _, stp = trig.fields(o)
  unpark(o)
  o.t = src .. '|' .. int(tp) .. '|1|' .. stp
  aseq = aseq + 1
  o.aseq, o.status, o.incoming = int(aseq), 'NEW', true
  local reserved = tonumber(string.match(o.arrival or '', '^[^|]*|([^|]*)') or '') or 0
  local cmd = {reserved = reserved}
  if stp ~= '' then cmd.stp = stp end
  tpsl.on_fire(o, cmd)  -- a SPOT child that buys back: its budget becomes cmd.reserved
  match_order(cmd, o)
  o.incoming = nil
  save_new(o, cmd.reserved, false)
  if not open_order(o) then
    redis.call('SREM', uprefix .. o.userId, o.clientOrderId)
    redis.call('HDEL', o.key, 'oa')
  end
  touch(o)
  tpsl.flush()
  end_unit()
  trig.fired = trig.fired + 1
end

-- Fire what is due on src, one order at a time (LAST is read again after each: fired orders
-- trade). Nothing while the market is HALTED, CANCEL_ONLY or EXPIRED.
function trig.run(src)
  if status ~= 'OPEN' and status ~= 'POST_ONLY' and status ~= 'REDUCE_ONLY' then return end
  while true do
    local p = trig.price(src)
    if p == nil then return end
    if src == 'LAST' and agg then trig.follow(src, agg.h, agg.l) else trig.follow(src, p, p) end
    local member, dir = trig.first_due(src, p)
    if member == nil then return end
    if trig.fired >= trig.FIRES_PER_CALL then
      trig.continue()
      return
    end
    local mu, mc = parse_member(member)
    local o = load(oprefix .. mu .. ':' .. mc)
    if o and o.status == 'UNTRIGGERED' then
      trig.fire(o)
    else
      redis.call('ZREM', trig.key(src, dir), member)
    end
  end
end

-- More is due than one call fires: a "prices" command at the end of the market stream makes
-- the next call go on (once per call).
function trig.continue()
  if trig.continued then return end
  trig.continued = true
  redis.call('XADD', K_IN, '*', 'c', '{"op":"prices","ts":' .. now_text .. '}')
end

-- After each command: LAST when the command's trades moved the last price; every source on
-- the oracle's "prices" command.
function trig.after_command(op)
  -- attached TP/SL children of the command's fills (match/tpsl.lua)
  tpsl.flush()
  end_unit()
  if op == 'prices' then
    trig.run('MARK')
    trig.run('INDEX')
    trig.run('LAST')
  elseif tseq ~= trig.seen_tseq and hints.last_triggers then
    trig.run('LAST')
  end
  trig.seen_tseq = tseq
  tpsl.settle()
end

-- Every open untriggered order of the market (the market's expiry cancels them).
function trig.all_waiting()
  local seen, list = {}, {}
  for _, src in ipairs(trig.SOURCES) do
    local set_keys = {trig.key(src, 'U'), trig.key(src, 'D'), trig.trail_key(src, 'BUY'),
      trig.trail_key(src, 'SELL')}
    for _, key in ipairs(set_keys) do
      for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        if not seen[member] then
          seen[member] = true
          local mu, mc = parse_member(member)
          local o = load(oprefix .. mu .. ':' .. mc)
          if o and o.status == 'UNTRIGGERED' then list[#list + 1] = o end
        end
      end
    end
  end
  return list
end
