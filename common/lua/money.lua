-- money.lua: the exchange's integer money rules, included by the matcher and the settler.
--
-- The same rules are written once in Python (common/money.py, common/reservations.py);
-- tests/integration/test_lua_money.py holds the two equal on random inputs. Every value is
-- an integer below 2^53 (a Lua number holds those exactly); every division names its
-- rounding: fees and margins round up, in the exchange's favour.
-- (No KEYS or ARGV: functions only.)

local BPS = 10000
local EXACT = 2 ^ 53  -- below this, a Lua number is an exact integer

-- floor(a / b) and a mod b for integers 0 <= a < 2^53, b > 0, corrected for float rounding.
local function divmod(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  while r < 0 do q = q - 1; r = r + b end
  while r >= b do q = q + 1; r = r - b end
  return q, r
end

-- floor(r * b / c) and r * b mod c for 0 <= r < c, 0 <= b (all below 2^53) when r * b
-- itself may pass 2^53: long multiplication over b's bits, no value ever reaching c + c.
local function long_muldiv(r, b, c)
  local bits = {}
  while b > 0 do
    local bit = b % 2
    bits[#bits + 1] = bit
    b = (b - bit) / 2
  end
  local q, rem = 0, 0
  for i = #bits, 1, -1 do
    q = q + q
    if rem >= c - rem then rem = rem - (c - rem); q = q + 1 else rem = rem + rem end
    if bits[i] == 1 then
      if rem >= c - r then rem = rem - (c - r); q = q + 1 else rem = rem + r end
    end
  end
  return q, rem
end

-- floor(a * b / c) (or ceil when up) for non-negative integers below 2^53 whose result is
-- below 2^53 too; exact (a * b may pass 2^53).
local function muldiv(a, b, c, up)
  local q, r = divmod(a, c)
  local q2, r2
  local product = r * b
  if product < EXACT then
    q2, r2 = divmod(product, c)
  else
    q2, r2 = long_muldiv(r, b, c)
  end
  local result = q * b + q2
  if up and r2 > 0 then result = result + 1 end
  return result
end

-- The fee rule, and the margin rule: bps of an amount, rounded up, ceil(n * bps / 10000)
-- (common/money.py fee and margin).
local function ceil_bps(n, bps)
  return muldiv(n, bps, BPS, true)
end

-- How far an opening order's price is on the losing side of the mark, per unit of qty
-- (common/money.py open_loss_per_unit).
local function open_loss(is_buy, price, mark)
  if is_buy then return math.max(price - mark, 0) end
  return math.max(mark - price, 0)
end

-- The lowest and highest price within band_bps of mark, inclusive (common/money.py
-- price_band): ceil(mark * (1 - bps/1e4)) and floor(mark * (1 + bps/1e4)).
local function price_band(mark, band_bps)
  return math.max(muldiv(mark, BPS - band_bps, BPS, true), 0),
    muldiv(mark, BPS + band_bps, BPS, false)
end

-- What a SPOT buy (or an option buy) of qty at price locks: notional + taker fee
-- (common/money.py spot_buy_reservation).
local function spot_buy_need(price, qty, mult, fee_bps)
  local n = price * qty * mult
  return n + ceil_bps(n, fee_bps)
end

-- A derivative order with rest unfilled: the taker fee on rest at price, and on
-- min(rest, open) (what may still open or grow a position) the initial margin at margin_price
-- and the open loss of loss per unit (common/reservations.py derivative_need).
local function derivative_need(price, rest, open, margin_price, loss, mult, margin_bps, fee_bps)
  local opening = math.min(rest, open)
  return ceil_bps(price * rest * mult, fee_bps) +
    ceil_bps(margin_price * opening * mult, margin_bps) + loss * opening * mult
end

-- What an open order's reservation must hold with rest unfilled, by the kind of terms it was
-- reserved by (common/reservations.py need; nil: not fixed, kept whole until it finishes).
local function reservation_need(kind, rest, price, qty, mult, margin_bps, fee_bps, reserved, open,
                                margin_price, loss)
  if kind == 'deriv' then
    return derivative_need(price, rest, open, margin_price, loss, mult, margin_bps, fee_bps)
  end
  if kind == 'quote' then return spot_buy_need(price, rest, mult, fee_bps) end
  if kind == 'base' then return rest * mult end
  local n = price * rest * mult
  if kind == 'margin' then return ceil_bps(n, margin_bps) + ceil_bps(n, fee_bps) end
  if kind == 'fee' then return ceil_bps(n, fee_bps) end
  if kind == 'prop' then return muldiv(reserved, rest, qty, true) end
  return nil
end
