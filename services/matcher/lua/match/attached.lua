-- match/attached.lua: attached take-profit / stop-loss (docs/api.md "Attached TP/SL and
-- position TP/SL"): what a parent order carries and the fills that grow its children.
--
-- A LIMIT or MARKET order on a PERP or FUTURE market, or a BUY one on SPOT, whose command
-- carries takeProfitPrice and/or stopLossPrice is a parent: its record keeps
-- at = "<tp>|<sl>|<source>" (0: none).
-- Each fill of a parent (taker or maker) is noted here while the book is matched; once the
-- command is done (match/tpsl.lua flush) the parent's children are created or grown by the
-- filled qty, so nothing is created inside a match. The tpsl table is filled in by
-- match/tpsl.lua (after match/triggers.lua, whose functions it uses).

--#include text.lua

local tpsl = {
  grown = {},    -- {parent, qty} of every parent fill not yet given to its children
  sources = {},  -- trigger sources of children created or grown and not yet judged
}

-- A new order's attached prices: o becomes a parent (derivatives, a SPOT BUY; not a trigger
-- order).
function tpsl.parent(cmd, o)
  local tp, sl = tonumber(cmd.takeProfitPrice) or 0, tonumber(cmd.stopLossPrice) or 0
  if (tp <= 0 and sl <= 0) or type(cmd.trigger) == 'string' then return end
  if product == 'OPTION' or (not is_deriv and o.side ~= 'BUY') then return end
  local src = cmd.triggerSource
  if src ~= 'MARK' and src ~= 'LAST' and src ~= 'INDEX' then src = 'MARK' end
  o.at = int(tp) .. '|' .. int(sl) .. '|' .. src
end

-- A parent filled f (called by record_trade for each side).
function tpsl.note(o, f)
  tpsl.grown[#tpsl.grown + 1] = {o, f}
end

-- The parent's prices and source.
function tpsl.parts(o)
  local tp, sl, src = string.match(o.at, '^(%d+)|(%d+)|(.*)$')
  return tonumber(tp), tonumber(sl), src
end

-- A SPOT parent's fill event's "hold": its pair of children holds the base the fill bought
-- (the settler moves it from available into "<cid>|tpsl" in the same step as the fill's
-- credit), unless every child it has ended (a child not yet created will be, with this fill's
-- qty: match/tpsl.lua grow).
function tpsl.fill_hold_json(o)
  local tp, sl = tpsl.parts(o)
  local prefix = oprefix .. o.userId .. ':' .. o.clientOrderId
  local function grows(suffix)
    local c = load(prefix .. suffix)
    return c == nil or c.status == 'UNTRIGGERED'
  end
  if (tp > 0 and grows('.tp')) or (sl > 0 and grows('.sl')) then
    return ',"hold":' .. q(o.clientOrderId .. '|tpsl')
  end
  return ''
end

-- A SPOT child's pair holds the bought base (docs/api.md "Attached TP/SL and position TP/SL"):
-- the settler's reservation "<parent cid>|tpsl" of the owner. Its done event names that hold
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

-- A done event's attached TP/SL fields: a SPOT child's hold (above), or the "attached" list of
-- a parent that ends with nothing filled: the children it reserved ids for and never created
-- (the settler drops them from the open-order index).
function tpsl.unborn_json(o)
  if o.oc and not is_deriv then return tpsl.hold_json(o) end
  if not o.at or o.filled > 0 then return '' end
  local tp, sl = tpsl.parts(o)
  local list = {}
  if tp > 0 then list[#list + 1] = q(o.clientOrderId .. '.tp') end
  if sl > 0 then list[#list + 1] = q(o.clientOrderId .. '.sl') end
  return ',"attached":[' .. table.concat(list, ',') .. ']'
end
