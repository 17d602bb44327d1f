-- match/matching.lua: one incoming order against the book, price-time priority.
--
-- The book is two sorted sets whose score is the price (bids negated) and whose member sorts
-- one price level by arrival (match/records.lua). Trades print at the maker's price. A maker
-- of the taker's own user meets the taker by its self-trade prevention mode. What is left
-- rests, or ends by its time in force.

--#include money.lua
--#include state.lua
--#include margin.lua
--#include records.lua
--#include orders.lua
--#include trades.lua

-- Per book, a score up to which it is known to hold no order this call (a maker read found
-- none up to its bound, or found the book's best maker: none below its score; a ZADD at or
-- below it lowers it; removals keep it true): a taker whose bound is at or below it cannot
-- cross and skips the read. After the first read of a book in a call this is the book's best
-- score - 1 exactly, so a taker that does not cross reads nothing.
local empty_upto
per_call(function() empty_upto = {} end)

-- MARKET, or a trigger type that becomes one (STOP_MARKET, ...: match/triggers.lua)?
local function market_type(t)
  return t == 'MARKET' or string.sub(t, -7) == '_MARKET'
end

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

-- A reduce-only order: false when it would not reduce its user's position; else true, and
-- the order is cut to the size of the position.
local function fits_reduce_only(o, is_buy)
  local pos = is_deriv and position(o.userId) or 0
  if not is_deriv or (is_buy and pos >= 0) or ((not is_buy) and pos <= 0) then return false end
  if o.qty > math.abs(pos) then o.qty = math.abs(pos) end
  return true
end

-- The limit a price-0 MARKET order trades within, and whether it has none: the market's price
-- band around the mark (PERP, FUTURE), else nothing.
local function market_limit(is_buy)
  if band_bps <= 0 then return 0, true end
  local low, high = price_band(prices().mark, band_bps)
  if is_buy then return high, false end
  return low, false
end

-- What a price-0 MARKET order may spend: what it reserved (its budget) for a buy's quote, or
-- a derivative's margin for what it may open (an order that only reduces pays the fee alone,
-- and a liquidation is not bounded); nil: no budget.
local function market_budget(cmd, o, is_buy)
  if cmd.liquidation == true then return nil end
  local option_buy = product == 'OPTION' and is_buy
  local opens = is_deriv and not option_buy and o.oa ~= 0 and o.reduceOnly ~= '1'
  if (is_buy and not is_deriv) or option_buy or opens then return tonumber(cmd.reserved) or 0 end
  return nil
end

-- Would a POST_ONLY order cross the best maker?
local function would_cross(book, is_buy, limit, no_limit)
  local best = redis.call('ZRANGE', book, 0, 0, 'WITHSCORES')
  return #best > 0 and crosses(is_buy, limit, no_limit, maker_price(is_buy, best[2]))
end

-- The self-trade prevention mode an incoming order meets its own makers by: its own (the
-- order command's stp), else the market's. EXPIRE_MAKER cancels the maker and goes on;
-- EXPIRE_TAKER ends the taker there, the maker stays; EXPIRE_BOTH ends both; DECREMENT
-- takes the smaller remaining qty off both (see decrement).
local function stp_mode(o)
  local mode = o.stp
  if mode == 'EXPIRE_MAKER' or mode == 'EXPIRE_TAKER' or mode == 'EXPIRE_BOTH' or
      mode == 'DECREMENT' then
    return mode
  end
  return stp_default
end

-- DECREMENT: an order that goes on (the taker, or a maker that keeps its place) loses cut of
-- its qty, no trade; its settlement event "decrement" brings its reservation down to its
-- new rest. A resting maker's level falls by the cut.
local function decrement(o, cut, resting)
  o.qty = o.qty - cut
  if resting then
    level_add(o.side == 'BUY', o.price, -cut)
    mark_changed(o)  -- its record at the call's end (a maker new in the call: its first write)
  end
  local e = next_eseq()
  emit_event(e, '{"eseq":' .. e .. ',"k":"decrement","user":' .. q(o.userId) .. ',"cid":' ..
    q(o.clientOrderId) .. ',"side":"' .. o.side .. '","qty":' .. int(o.qty) .. ',"cut":' ..
    int(cut) .. ',"ts":' .. now_text .. '}')
  touch(o)
end

-- Can a FOK order of qty fill whole? Counting only other users' liquidity (and, when its
-- mode ends or decrements the taker at its own maker, only the liquidity before that maker:
-- a FOK never decrements), and only what
-- each side's margin lets it fill (and, with a budget, what it affords): the loop of
-- take_book, rehearsed without changing anything.
local function fok_fills(o, book, is_buy, limit, no_limit, qty, budget)
  local user = o.userId
  local stops_at_own = stp_mode(o) ~= 'EXPIRE_MAKER'
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
      if mu == user and stops_at_own then done = true; break end
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
          local can = affordable(mp, f, left_budget, is_buy, red, o.im)
          if can < f then done = true; break end
          left_budget = left_budget - cost(mp, f, is_buy, red, o.im)
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
  return need == 0
end

-- The order takes the book's crossing makers, best first, up to qty: returns what is left,
-- whether it stopped because it may open no more (margin), and whether it stopped at its own
-- maker (self-trade prevention ends the taker).
local function take_book(o, book, is_buy, limit, no_limit, qty, budget, liquidation)
  local user = o.userId
  local stp = stp_mode(o)
  local remaining = qty
  -- the best makers that cross, two at a time, by score bound (no scores to format: the
  -- maker's price is in its record); none to read when the book is known to hold nothing
  -- up to the bound
  local bound_score = no_limit and math.huge or (is_buy and limit or -limit)
  local bound = no_limit and '+inf' or int(bound_score)
  local window, wi = {}, 1
  while remaining > 0 do
    if wi > #window then
      local known_empty = empty_upto[book]
      if known_empty and bound_score <= known_empty then break end
      window, wi = redis.call('ZRANGE', book, '-inf', bound, 'BYSCORE', 'LIMIT', '0', '2'), 1
      if #window == 0 then
        if not known_empty or bound_score > known_empty then empty_upto[book] = bound_score end
        break
      end
    end
    local member = window[wi]
    local mu, mc = parse_member(member)
    local mo = load(oprefix .. mu .. ':' .. mc)
    local mp = mo.price
    if wi == 1 then
      -- the first of a read from -inf is the book's best: nothing rests below its score
      local below = (is_buy and mp or -mp) - 1
      local known_empty = empty_upto[book]
      if not known_empty or below > known_empty then empty_upto[book] = below end
    end
    if mu == user and stp == 'DECREMENT' then
      -- both lose the smaller remaining qty; the one left with none ends (its qty kept)
      local maker_left = mo.qty - mo.filled
      local cut = math.min(remaining, maker_left)
      if cut == maker_left then
        remove_resting(mo, 'CXL', 'SELF_TRADE')
        wi = wi + 1
      else
        decrement(mo, cut, true)
      end
      if cut == remaining then return remaining, false, true end
      remaining = remaining - cut
      decrement(o, cut, false)
    elseif mu == user then
      if stp ~= 'EXPIRE_TAKER' then remove_resting(mo, 'CXL', 'SELF_TRADE') end
      if stp ~= 'EXPIRE_MAKER' then return remaining, false, true end
      wi = wi + 1
    else
      local f = math.min(remaining, mo.qty - mo.filled)
      local tpos, mpos, maker_short = 0, 0, false
      if is_deriv then
        -- neither side may open more than its allowance
        tpos, mpos = position(user), position(mu)
        f = fill_cap(o, is_buy, f, tpos)
        if f == 0 then return remaining, true, false end
        local maker_cap = fill_cap(mo, not is_buy, f, mpos)
        maker_short = maker_cap < f
        f = maker_cap
      end
      if budget and f > 0 then
        local red = reducible(is_buy, tpos)
        local can = affordable(mp, f, budget, is_buy, red, o.im)
        if can == 0 then break end
        if can < f then maker_short = false end  -- the budget, not the maker, bounds this fill
        f = can
        budget = budget - cost(mp, f, is_buy, red, o.im)
      end
      if f > 0 then
        if is_deriv then
          use_allowance(o, is_buy, f, tpos)
          use_allowance(mo, not is_buy, f, mpos)
        end
        remaining = remaining - f
        o.filled = o.filled + f
        mo.filled = mo.filled + f
        level_add(not is_buy, mp, -f)
        record_trade(mp, f, o, mo, is_buy, liquidation)  -- the fill event before the maker's done
      end
      if maker_short then
        -- the maker may open no more: what it could fill has, the rest is cancelled
        remove_resting(mo, 'CXL', 'INSUFFICIENT_MARGIN')
        wi = wi + 1
      elseif mo.filled == mo.qty then
        redis.call('ZREM', book, member)
        if mo.expiresAt ~= '0' then redis.call('ZREM', K_EXP, (is_buy and 'S' or 'B') .. member) end
        finish(mo, 'FILLED', nil)
        wi = wi + 1
      else
        mo.status = 'PARTIAL'
        save_partial(mo)
        touch(mo)
      end
    end
  end
  return remaining, false, false
end

-- What is left of the order rests on its book (at its price, arrival order).
local function rest(o, is_buy, remaining, expires_at)
  local member = book_member(o)
  local rest_book, score = is_buy and K_BIDS or K_ASKS, is_buy and -o.price or o.price
  redis.call('ZADD', rest_book, int(score), member)
  local known_empty = empty_upto[rest_book]
  if known_empty and score <= known_empty then empty_upto[rest_book] = score - 1 end
  if expires_at > 0 then
    redis.call('ZADD', K_EXP, expires_at, (is_buy and 'B' or 'S') .. member)
    hints.sooner('expiry', expires_at)
  end
  open_set_add(o)
  level_add(is_buy, o.price, remaining)
  o.status = o.filled > 0 and 'PARTIAL' or 'NEW'
end

-- A taker that has taken what it could: FILLED, cut short by its margin or by self-trade
-- prevention (self_stop), ended by its time in force (ends_now: IOC, FOK, MARKET) or by its
-- expiry, or resting with the rest.
local function after_taking(o, is_buy, remaining, margin_stop, ends_now, self_stop)
  local expires_at = tonumber(o.expiresAt)
  if remaining == 0 then
    finish(o, 'FILLED', nil)
  elseif margin_stop then
    finish(o, 'CXL', 'INSUFFICIENT_MARGIN')
  elseif self_stop then
    finish(o, 'CXL', 'SELF_TRADE')
  elseif ends_now then
    finish(o, 'EXP', 'TIME_IN_FORCE')
  elseif expires_at > 0 and expires_at <= now then
    finish(o, 'EXP', 'EXPIRES_AT')
  else
    rest(o, is_buy, remaining, expires_at)
  end
end

-- Why the market's status refuses an incoming order (docs/api.md "Market states"), or nil:
-- HALTED and CANCEL_ONLY take none, POST_ONLY only POST_ONLY limit orders, REDUCE_ONLY only
-- reduce-only orders (and the liquidation engine's), EXPIRED none.
local function status_refusal(cmd, o)
  if status == 'OPEN' then return nil end
  if status == 'HALTED' then return 'MARKET_HALTED' end
  if status == 'CANCEL_ONLY' then return 'MARKET_CANCEL_ONLY' end
  if status == 'POST_ONLY' then
    if o.timeInForce == 'POST_ONLY' and not market_type(o.type) then return nil end
    return 'MARKET_POST_ONLY'
  end
  if status == 'REDUCE_ONLY' then
    if o.reduceOnly == '1' or cmd.liquidation == true then return nil end
    return 'MARKET_REDUCE_ONLY'
  end
  return 'MARKET_CLOSED'
end

-- Match an incoming order: refused, or it trades, then rests or ends.
local function match_order(cmd, o)
  local is_buy = o.side == 'BUY'
  -- the order's own self-trade prevention mode; the liquidation engine's orders always
  -- cancel the user's own makers and go on
  if type(cmd.stp) == 'string' then o.stp = cmd.stp end
  if cmd.liquidation == true then o.stp = 'EXPIRE_MAKER' end
  local refusal = status_refusal(cmd, o)
  if refusal then
    finish(o, 'REJECTED', refusal)
    return
  end
  if o.reduceOnly == '1' and not fits_reduce_only(o, is_buy) then
    finish(o, 'REJECTED', 'REDUCE_ONLY')
    return
  end
  local tif, qty = o.timeInForce, o.qty
  local is_market = market_type(o.type)
  local book = is_buy and K_ASKS or K_BIDS
  -- the limit the order trades within (its price, unless a MARKET order has none), and what
  -- a price-0 MARKET order may spend
  local limit, no_limit, budget = o.price, false, nil
  if is_market and limit == 0 then
    limit, no_limit = market_limit(is_buy)
    budget = market_budget(cmd, o, is_buy)
  end
  if tif == 'POST_ONLY' and not is_market and would_cross(book, is_buy, limit, no_limit) then
    finish(o, 'REJECTED', 'POST_ONLY_WOULD_CROSS')
    return
  end
  if tif == 'FOK' and not fok_fills(o, book, is_buy, limit, no_limit, qty, budget) then
    finish(o, 'EXP', 'TIME_IN_FORCE')
    return
  end
  local remaining, margin_stop, self_stop = take_book(o, book, is_buy, limit, no_limit, qty,
    budget, cmd.liquidation == true)
  after_taking(o, is_buy, remaining, margin_stop, is_market or tif == 'IOC' or tif == 'FOK',
    self_stop)
  -- the record keeps no mode: an amend of it, even later in this call, meets its own makers
  -- by the market's
  o.stp = nil
end
