-- money_rules.lua: run the shared money rules (common/lua/money.lua) on given inputs, for
-- tests/integration/test_lua_money.py, which holds them equal to common/money.py and
-- common/reservations.py.
--
-- No KEYS.
-- ARGV[1] JSON list of calls, each [rule, argument, ...]: numbers as decimal strings, a side
--         as "BUY"/"SELL", a reservation kind as its name.
-- Returns one text per call: the result in decimal ("nil" for none; "low|high" for
-- price_band), or "inexact <%.17g>" when a result is not an integer a Lua number holds
-- exactly.

--#include money.lua

local calls = cjson.decode(ARGV[1])

local function text(n)
  if n == nil then return 'nil' end
  if n ~= math.floor(n) or n >= 2 ^ 53 or n <= -2 ^ 53 then
    return 'inexact ' .. string.format('%.17g', n)
  end
  return string.format('%d', n)
end

local function numbers(call, from)
  local out = {}
  for i = from, #call do out[#out + 1] = tonumber(call[i]) end
  return out
end

local function run(call)
  local rule = call[1]
  if rule == 'ceil_bps' then
    local n = numbers(call, 2)
    return text(ceil_bps(n[1], n[2]))
  elseif rule == 'muldiv' then
    local n = numbers(call, 2)
    return text(muldiv(n[1], n[2], n[3], n[4] == 1))
  elseif rule == 'open_loss' then
    local n = numbers(call, 3)
    return text(open_loss(call[2] == 'BUY', n[1], n[2]))
  elseif rule == 'price_band' then
    local n = numbers(call, 2)
    local low, high = price_band(n[1], n[2])
    return text(low) .. '|' .. text(high)
  elseif rule == 'spot_buy_need' then
    local n = numbers(call, 2)
    return text(spot_buy_need(n[1], n[2], n[3], n[4]))
  elseif rule == 'derivative_need' then
    local n = numbers(call, 2)
    return text(derivative_need(n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8]))
  elseif rule == 'reservation_need' then
    local n = numbers(call, 3)
    return text(reservation_need(call[2], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], n[9],
      n[10]))
  end
  error('unknown money rule ' .. tostring(rule))
end

local results = {}
for i, call in ipairs(calls) do results[i] = run(call) end
return results
