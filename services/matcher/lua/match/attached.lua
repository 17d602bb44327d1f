-- match/attached.lua: attached take-profit / stop-loss (docs/api.md "Attached TP/SL and
-- position TP/SL"): what a parent order carries and the fills that grow its children.
--
-- A LIMIT or MARKET order on a PERP, FUTURE or SPOT market whose command carries
-- takeProfitPrice and/or stopLossPrice is a parent: its record keeps
-- at = "<tp>|<sl>|<source>" (0: none), and a SPOT SELL's "<tp>|<sl>|<source>|<hold>": the quote
-- its command says the gateway locked for the pair at admission (pairHold, the children buy
-- the base back with it).
-- Each fill of a parent (taker or maker) is noted here while the book is matched; once the
-- command is done (match/tpsl.lua flush) the parent's children are created or grown by the
-- filled qty, so nothing is created inside a match. The tpsl table is filled in by
-- match/tpsl.lua (after match/triggers.lua, whose functions it uses).

--#include text.lua

local tpsl = {}
per_call(function()
  tpsl.grown = {}    -- {parent, qty} of every parent fill not yet given to its children
  tpsl.sources = {}  -- trigger sources of children created or grown and not yet judged
end)

-- A new order's attached prices: o becomes a parent (derivatives, SPOT; not a trigger order).
function tpsl.parent(cmd, o)
  local tp, sl = tonumber(cmd.takeProfitPrice) or 0, tonumber(cmd.stopLossPrice) or 0
  if (tp <= 0 and sl <= 0) or type(cmd.trigger) == 'string' then return end
  if product == 'OPTION' then return end
  local src = cmd.triggerSource
  if src ~= 'MARK' and src ~= 'LAST' and src ~= 'INDEX' then src = 'MARK' end
  o.at = int(tp) .. '|' .. int(sl) .. '|' .. src
  if not is_deriv and o.side == 'SELL' then
    o.at = o.at .. '|' .. int(tonumber(cmd.pairHold) or 0)
  end
end

-- A parent filled f (called by record_trade for each side).
function tpsl.note(o, f)
  tpsl.grown[#tpsl.grown + 1] = {o, f}
end

-- The parent's prices and source, and a SPOT SELL's pair hold (nil for any other parent).
function tpsl.parts(o)
  local tp, sl, src, hold = string.match(o.at, '^(%d+)|(%d+)|([^|]*)|?(%d*)$')
  return tonumber(tp), tonumber(sl), src, tonumber(hold)
end

-- Will the parent's pair still use its hold: a child it has (tp/sl above 0) is waiting, or
-- not yet created (it will be, with the parent's fills: match/tpsl.lua grow).
function tpsl.pair_open(o)
  local tp, sl = tpsl.parts(o)
  local prefix = oprefix .. o.userId .. ':' .. o.clientOrderId
  local function grows(suffix)
    local c = load(prefix .. suffix)
    return c == nil or c.status == 'UNTRIGGERED'
  end
  return (tp > 0 and grows('.tp')) or (sl > 0 and grows('.sl'))
end

-- What a SPOT SELL parent's pair may spend to buy back qty: a BUY of qty at the bound (the
-- stop-loss, else the take-profit: the highest price either fires at) as a LIMIT BUY
-- reserves it, notional + taker fee (common/reservations.py pair_hold), at most the hold
-- locked at admission (an amend that raised the parent's qty does not grow it).
function tpsl.buy_back(parent, qty)
  local tp, sl, _, hold = tpsl.parts(parent)
  return math.min(hold, spot_buy_need(sl > 0 and sl or tp, qty, mult, taker_bps))
end

-- A SPOT BUY parent's fill event's "hold": its pair of children holds the base the fill bought
-- (the settler moves it from available into "<cid>|tpsl" in the same step as the fill's
-- credit), unless every child it has ended (a child not yet created will be, with this fill's
-- qty: match/tpsl.lua grow).
function tpsl.fill_hold_json(o)
  if tpsl.pair_open(o) then return ',"hold":' .. q(o.clientOrderId .. '|tpsl') end
  return ''
end

-- A SPOT SELL parent's done event's "hold" and "keep": while its pair is open the hold keeps
-- what buying back its filled qty may spend (tpsl.buy_back; 0 with nothing filled: the
-- children never exist) and the settler releases the rest; once the pair has ended (a child
-- fired and took it, or both ended unfired and released it) nothing is left to name.
function tpsl.keep_json(o)
  local _, _, _, hold = tpsl.parts(o)
  if hold == nil or not tpsl.pair_open(o) then return '' end
  local keep = o.filled > 0 and tpsl.buy_back(o, o.filled) or 0
  return ',"hold":' .. q(o.clientOrderId .. '|tpsl') .. ',"keep":' .. int(keep)
end

-- A SPOT child's pair has a hold (docs/api.md "Attached TP/SL and position TP/SL"): the
-- settler's reservation "<parent cid>|tpsl" of the owner, of the base a BUY parent bought or
-- the quote a SELL parent's children buy back with. A child's done event names that hold
-- ("hold") when the hold ends with it unspent: the child never fired and no sibling is open
-- (a sibling cancelled OCO names none: the fired child took the hold, match/tpsl.lua).
function tpsl.hold_json(o)
  if string.match(o.t or '', '^[^|]*|[^|]*|([^|]*)|') == '1' then return '' end
  if o.oc ~= '' then
    local s = load(oprefix .. o.userId .. ':' .. o.oc)
    if s and (s.status == 'UNTRIGGERED' or s.status == 'NEW' or s.status == 'PARTIAL') then
      return ''
    end
  end
  return ',"hold":' .. q(string.sub(o.clientOrderId, 1, -4) .. '|tpsl')
end

-- A done event's attached TP/SL fields: a SPOT child's hold (above); a SPOT SELL parent's
-- hold and keep (above); the "attached" list of a parent that ends with nothing filled: the
-- children it reserved ids for and never created (the settler drops them from the open-order
-- index).
function tpsl.unborn_json(o)
  if o.oc and not is_deriv then return tpsl.hold_json(o) end
  if not o.at then return '' end
  local kept = is_deriv and '' or tpsl.keep_json(o)
  if o.filled > 0 then return kept end
  local tp, sl = tpsl.parts(o)
  local list = {}
  if tp > 0 then list[#list + 1] = q(o.clientOrderId .. '.tp') end
  if sl > 0 then list[#list + 1] = q(o.clientOrderId .. '.sl') end
  return ',"attached":[' .. table.concat(list, ',') .. ']' .. kept
end
