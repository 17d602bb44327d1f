-- position.lua: the position update, included by other scripts.
-- (No KEYS or ARGV of its own: the including script passes its keys in.)

--#include money.lua

-- Move a position by a signed delta at price (see apply_ops.lua "position").
local function apply_position(positions, balances, in_market, asset, delta, price, mult, cash)
  local size = tonumber(redis.call('HGET', positions, in_market .. ':size') or '0')
  local entry = tonumber(redis.call('HGET', positions, in_market .. ':entry') or '0')
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
  redis.call('HSET', positions, in_market .. ':size', string.format('%d', size),
             in_market .. ':entry', string.format('%d', entry))
  if pnl ~= 0 then
    redis.call('HINCRBY', positions, in_market .. ':rpnl', string.format('%d', pnl))
    if cash == 1 then redis.call('HINCRBY', balances, asset .. ':t', string.format('%d', pnl)) end
  end
end

