-- match/margin.lua: what a derivative fill may open, and what a budgeted order affords.

--#include money.lua
--#include market.lua

-- Positions as the matcher keeps them (dex:{m}:pos), read once per user per call and kept
-- current by record_trade.
local positions
per_call(function() positions = {} end)

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

-- What a budgeted (MARKET, price 0) order spends on one fill of qty at p, of which the first
-- `red` only reduce its owner's position: notional + fee (SPOT, an OPTION buy's premium);
-- otherwise the fee, and on the part that opens its initial margin (at p; an option writer's
-- on the underlying's index) plus its open loss against the mark (API.md §6), the margin at
-- im bps: the order's (the account's choice, docs/api.md "Leverage"), nil for the market's.
-- The rules are money.lua's: what the gateway reserved is judged by the same.
local function cost(p, qty, is_buy, red, im)
  if not is_deriv or (product == 'OPTION' and is_buy) then
    return spot_buy_need(p, qty, mult, taker_bps)
  end
  local opening = qty - red
  if opening <= 0 then return ceil_bps(p * qty * mult, taker_bps) end
  local m = prices()
  local margin_price = product == 'OPTION' and m.index or p
  return derivative_need(p, qty, opening, margin_price, open_loss(is_buy, p, m.mark), mult,
    im or im_bps, taker_bps)
end

-- The most (a multiple of the lot, at most cap) a budget affords at price p (im: as cost's).
local function affordable(p, cap, budget, is_buy, red, im)
  if budget <= 0 then return 0 end
  local lo, hi = 0, math.floor(cap / lot)
  -- an upper bound first: past the reducing part, each lot's notional (or margin) must fit
  local unit = p * lot * mult
  if is_deriv and not (product == 'OPTION' and is_buy) then
    unit = (product == 'OPTION' and prices().index or p) * lot * mult * (im or im_bps) / 10000
  end
  if unit > 0 then hi = math.min(hi, math.floor(red / lot) + math.floor(budget / unit) + 1) end
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if cost(p, mid * lot, is_buy, red, im) <= budget then lo = mid else hi = mid - 1 end
  end
  return lo * lot
end
