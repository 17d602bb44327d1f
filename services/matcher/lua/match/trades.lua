-- match/trades.lua: one trade: the trades stream (dex:{m}:trades), its fill event, the
-- positions mirror (derivatives) and the call's statistics.

--#include margin.lua
--#include events.lua
--#include statistics.lua
--#include publication.lua
--#include attached.lua

-- A trade of f at the maker's price p between the taker and the maker.
local function record_trade(p, f, taker, maker, taker_is_buy, liquidation)
  tseq = tseq + 1
  local buyer, seller, buy_cid, sell_cid
  if taker_is_buy then
    buyer, seller = taker.userId, maker.userId
    buy_cid, sell_cid = taker.clientOrderId, maker.clientOrderId
  else
    buyer, seller = maker.userId, taker.userId
    buy_cid, sell_cid = maker.clientOrderId, taker.clientOrderId
  end
  local taker_side = taker_is_buy and 'BUY' or 'SELL'
  local ts_text, p_text, f_text = int(tseq), int(p), int(f)
  local buyer_json, seller_json, buy_cid_json, sell_cid_json =
    q(buyer), q(seller), q(buy_cid), q(sell_cid)
  local trade = '{"tradeId":' .. trade_id_head .. ts_text .. '","market":' .. market_json ..
    ',"price":' .. p_text .. ',"qty":' .. f_text .. ',"takerSide":"' .. taker_side ..
    '","buyer":' .. buyer_json .. ',"seller":' .. seller_json .. ',"buyOid":' .. buy_cid_json ..
    ',"sellOid":' .. sell_cid_json .. ',"ts":' .. now_text .. ',"seq":' .. ts_text .. '}'
  redis.call('XADD', K_TRADES, '*', 't', trade)  -- trimmed once per call, at the end
  unit_trades[#unit_trades + 1] = trade
  local e = next_eseq()
  -- a SPOT parent's fill: its attached pair holds the base bought (match/attached.lua)
  local buy_order = taker_is_buy and taker or maker
  local hold = (buy_order.at and not is_deriv) and tpsl.fill_hold_json(buy_order) or ''
  emit_event(e, '{"eseq":' .. e .. ',"k":"fill","tradeId":' .. trade_id_head .. ts_text ..
    '","tseq":' .. ts_text .. ',"price":' .. p_text .. ',"qty":' .. f_text ..
    ',"takerSide":"' .. taker_side .. '","buyer":' .. buyer_json .. ',"seller":' .. seller_json ..
    ',"buyCid":' .. buy_cid_json .. ',"sellCid":' .. sell_cid_json .. ',"ts":' .. now_text ..
    hold .. (liquidation and ',"liquidation":true}' or '}'))
  if is_deriv then
    positions[buyer] = redis.call('HINCRBY', K_POS, buyer, f)
    positions[seller] = redis.call('HINCRBY', K_POS, seller, -f)
  end
  -- an attached TP/SL parent's children grow once the command is done (match/attached.lua)
  if taker.at then tpsl.note(taker, f) end
  if maker.at then tpsl.note(maker, f) end
  count_trade(p, f, p * f * mult)
end
