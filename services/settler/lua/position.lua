-- position.lua: exact integer helpers and the position update, included by other scripts.
-- (No KEYS or ARGV of its own: the including script passes its keys in.)

-- floor(a / b) and a mod b for integers 0 <= a < 2^53, b > 0, corrected for float rounding.
local function divmod(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  while r < 0 do q = q - 1; r = r + b end
  while r >= b do q = q + 1; r = r - b end
  return q, r
end

-- floor(a * b / c) (or ceil when up) for non-negative integers, exact while the result and
-- (a mod c) * b stay below 2^53.
local function muldiv(a, b, c, up)
  local q, r = divmod(a, c)
  local q2, r2 = divmod(r * b, c)
  local result = q * b + q2
  if up and r2 > 0 then result = result + 1 end
  return result
end

local function ceil_bps(n, bps)
  return muldiv(n, bps, 10000, true)
end

-- Move a position by a signed delta at price (see apply_ops.lua "position").
local function apply_position(pos_key, bal_key, market, asset, delta, price, mult, cash)
  local size = tonumber(redis.call('HGET', pos_key, market .. ':size') or '0')
  local entry = tonumber(redis.call('HGET', pos_key, market .. ':entry') or '0')
  local dir = delta > 0 and 1 or -1
  local amount = math.abs(delta)
  local pnl = 0
  if size ~= 0 and (size > 0) ~= (delta > 0) then
    local closed = math.min(amount, math.abs(size))
    local removed = muldiv(math.abs(entry), closed, math.abs(size), false)
    if entry < 0 then removed = -removed end
    local closing = price * closed * mult
    local held = size > 0 and 1 or -1
    pnl = held * closing - removed
    entry = entry - removed
    size = size + dir * closed
    amount = amount - closed
  end
  if amount > 0 then
    size = size + dir * amount
    entry = entry + dir * price * amount * mult
  end
  redis.call('HSET', pos_key, market .. ':size', string.format('%d', size),
             market .. ':entry', string.format('%d', entry))
  if pnl ~= 0 then
    redis.call('HINCRBY', pos_key, market .. ':rpnl', string.format('%d', pnl))
    if cash == 1 then redis.call('HINCRBY', bal_key, asset .. ':t', string.format('%d', pnl)) end
  end
end

