-- match/amend.lua: amend a resting order, its clientOrderId kept (docs/api.md "Amend").
--
-- Refused, nothing changed: no such order (UNKNOWN), an order no longer open (CLOSED), a
-- halted market (MARKET_HALTED), a CANCEL_ONLY one (MARKET_CANCEL_ONLY), an expectedFilled
-- (>= 0) that is not what the order has filled (FILLED_CHANGED), a new qty at or below what
-- it has filled (QTY_NOT_ABOVE_FILLED), in a REDUCE_ONLY market anything but a qty not above
-- the order's at its price (MARKET_REDUCE_ONLY), a POST_ONLY order (any order in a POST_ONLY
-- market) whose new price would cross (POST_ONLY_WOULD_CROSS). Same price and a lower qty:
-- the qty falls in place and the order
-- keeps its place in the queue (book member, aseq). Any other amend takes the order off its
-- level; it comes back as an incoming order with a fresh aseq at the new price and qty,
-- trades as a taker if it crosses, then rests (or ends). An untriggered order (match/triggers.lua)
-- takes its new price and qty in place, its trigger unchanged. A derivative order may open what the
-- amend's "open" says (the gateway reserved margin for that much).
-- Every amend emits one settlement event "amend", accepted or not, before any fill it
-- causes (the settler adjusts the reservation by it), and answers its reply.

--#include records.lua
--#include orders.lua
--#include matching.lua

-- The settlement event of an amend: the new terms, and whether the book took them.
local function amend_event(cmd, side, result)
  local e = next_eseq()
  local terms = ''
  if cmd.open ~= nil and cmd.open ~= cjson.null then
    terms = ',"open":' .. int(tonumber(cmd.open)) .. ',"mp":' .. int(tonumber(cmd.mp) or 0) ..
      ',"loss":' .. int(tonumber(cmd.loss) or 0)
    -- the initial margin the account chose (docs/api.md "Leverage"); absent: the market's
    if tonumber(cmd.im) then terms = terms .. ',"im":' .. int(tonumber(cmd.im)) end
  end
  emit_event(e, '{"eseq":' .. e .. ',"k":"amend","user":' .. q(cmd.user) .. ',"cid":' ..
    q(cmd.cid) .. ',"side":"' .. side .. '","accepted":' ..
    (result == 'AMENDED' and 'true' or 'false') .. ',"result":"' .. result .. '","aid":' ..
    q(tostring(cmd.aid or '')) .. ',"price":' .. int(tonumber(cmd.price)) .. ',"qty":' ..
    int(tonumber(cmd.qty)) .. ',"reserved":' .. int(tonumber(cmd.reserved) or 0) .. terms ..
    ',"ts":' .. now_text .. '}')
end

-- Why the book refuses the amend, or nil when it takes it.
local function amend_refusal(cmd, o)
  if o == nil then return 'UNKNOWN' end
  if not open_order(o) then return 'CLOSED' end
  -- (an expired market has no open order: its expiry cancelled them all)
  if status == 'CANCEL_ONLY' then return 'MARKET_CANCEL_ONLY' end
  if status ~= 'OPEN' and status ~= 'POST_ONLY' and status ~= 'REDUCE_ONLY' then
    return 'MARKET_HALTED'
  end
  local expected = tonumber(cmd.expectedFilled) or -1
  if expected >= 0 and expected ~= o.filled then return 'FILLED_CHANGED' end
  local qty, price = tonumber(cmd.qty), tonumber(cmd.price)
  if qty <= o.filled then return 'QTY_NOT_ABOVE_FILLED' end
  -- REDUCE_ONLY: only a lower qty at the same price (in place; it can open nothing new)
  if status == 'REDUCE_ONLY' and (price ~= o.price or qty > o.qty) then
    return 'MARKET_REDUCE_ONLY'
  end
  -- POST_ONLY: every order's new price is judged as a POST_ONLY order's
  if (o.timeInForce == 'POST_ONLY' or status == 'POST_ONLY') and price ~= o.price and
      o.status ~= 'UNTRIGGERED' then
    local is_buy = o.side == 'BUY'
    if would_cross(is_buy and K_ASKS or K_BIDS, is_buy, price, false) then
      return 'POST_ONLY_WOULD_CROSS'
    end
  end
  return nil
end

-- The order record after an amend that moved it: price (d), aseq (a) and the mutable fields,
-- in the packed shape (a record of the flat shape gets its packed fields here).
local function save_amended(o)
  local tail = string.match(redis.call('HGET', o.key, 'a') or '', '^[^|]*(|.*)$')
  local fields = {'d', o.side .. '|' .. o.type .. '|' .. o.timeInForce .. '|' .. o.reduceOnly ..
    '|' .. o.expiresAt .. '|' .. int(o.price) .. '|' .. o.ts,
    'a', o.aseq .. (tail or '|0|0|' .. market), 'u', o.userId, 'c', o.clientOrderId,
    'qty', int(o.qty), 'filled', int(o.filled), 'status', o.status, 'reason', o.reason,
    'updatedTs', now_text}
  local open = open_order(o)
  if o.oa ~= nil and open then fields[#fields + 1] = 'oa'; fields[#fields + 1] = int(o.oa) end
  redis.call('HSET', o.key, unpack(fields))
  if o.oa == nil or not open then redis.call('HDEL', o.key, 'oa') end
  if not open then redis.call('SREM', uprefix .. o.userId, o.clientOrderId) end
end

-- An amend command: refused, or applied in place, or the order re-enters. Returns the order
-- when it was amended (its publication says so), else nil.
local function process_amend(cmd)
  local o = load(oprefix .. cmd.user .. ':' .. cmd.cid)
  local refusal = amend_refusal(cmd, o)
  if refusal then
    amend_event(cmd, o and o.side or (cmd.side == 'SELL' and 'SELL' or 'BUY'), refusal)
    local filled = o and (',"filled":' .. int(o.filled)) or ''
    reply(cmd, '{"amend":"' .. refusal .. '"' .. filled .. '}')
    return nil
  end
  amend_event(cmd, o.side, 'AMENDED')
  local is_buy = o.side == 'BUY'
  local price, qty = tonumber(cmd.price), tonumber(cmd.qty)
  local allowance = o.oa
  if is_deriv then
    if o.reduceOnly == '1' then allowance = 0 else allowance = tonumber(cmd.open) end
  end
  o.amended = true
  touch(o)
  if o.status == 'UNTRIGGERED' then
    -- not in the book: new terms in place, its trigger kept (match/triggers.lua)
    o.price, o.qty, o.oa = price, qty, allowance
    save_amended(o)
  elseif price == o.price and qty <= o.qty then
    -- in place: the queue position is kept
    if qty < o.qty then level_add(is_buy, o.price, qty - o.qty) end
    o.qty, o.oa = qty, allowance
    local fields = {'qty', int(qty), 'updatedTs', now_text}
    if allowance ~= nil then fields[#fields + 1] = 'oa'; fields[#fields + 1] = int(allowance) end
    redis.call('HSET', o.key, unpack(fields))
  else
    -- off its level, then in again as an incoming order with a fresh arrival
    take_off_book(o)
    aseq = aseq + 1
    o.aseq, o.price, o.qty, o.oa = int(aseq), price, qty, allowance
    o.incoming = true
    local remaining, margin_stop, self_stop = take_book(o, is_buy and K_ASKS or K_BIDS, is_buy,
      price, false, qty - o.filled, nil, false)
    after_taking(o, is_buy, remaining, margin_stop, false, self_stop)
    o.incoming = nil
    save_amended(o)
  end
  reply(cmd, '{"amend":"AMENDED","status":"' .. o.status .. '","filled":' .. int(o.filled) ..
    '}')
  return o
end
