-- match/tpsl.lua: attached take-profit / stop-loss with OCO, and position TP/SL
-- (docs/api.md "Attached TP/SL and position TP/SL"); the parent and its fills are in
-- match/attached.lua.
--
-- Children: a parent <cid> that filled f has a stop-loss <cid>.sl (STOP_MARKET) and a
-- take-profit <cid>.tp (TAKE_PROFIT_MARKET) on the other side, reduce-only, price 0, reserving
-- nothing (their fee is paid from the account at the fill, as a liquidation order's is),
-- untriggered on the parent's trigger source at its prices: created with qty f at the parent's
-- first fill, each later fill adds its qty to those still UNTRIGGERED. A child that has ended
-- (fired, cancelled) is never created again. Each names its sibling (record field oc).
-- OCO: when a child fires, its sibling, if still UNTRIGGERED, ends CXL OCO in the same unit,
-- before the fired child trades; the sibling has then left its trigger set and can fire no
-- more, whatever the price does next in the call.
-- SPOT: the children are not reduce-only (a spot account has no position). A BUY parent's
-- children sell the bought base; the pair holds that base in the settler's reservation
-- "<parent cid>|tpsl": the fill event of each parent fill that creates or grows a child names
-- the hold (match/attached.lua fill_hold_json: the settler moves the base bought from
-- available into the hold in the same step as it credits it); a child that fires emits a
-- "take" event before it trades (the hold becomes its reservation: its fills spend it as any
-- sell's, its done releases the rest); the done event of a child that ends unfired with no
-- sibling open releases the hold (match/attached.lua hold_json). An OCO'd sibling releases
-- nothing.
-- A SELL parent's children buy the base back, price 0: the pair holds quote, locked whole at
-- admission for the parent's qty at the bound (pairHold: match/attached.lua buy_back). The
-- parent's done event has the hold keep what buying back its filled qty may spend (the rest
-- is released: match/attached.lua keep_json); a child that fires takes what buying back its
-- qty may spend ("take" with "keep": the rest of the hold is released) as its MARKET budget
-- and its reservation, so it buys what that affords, at most its qty; the rest is as above.
-- Position TP/SL: a STOP_MARKET / TAKE_PROFIT_MARKET order with closePosition (record cp = 1,
-- qty 0) takes, when it fires, the size of its owner's position (dex:{m}:pos) as its qty; the
-- reduce-only rule then ends it REJECTED REDUCE_ONLY when no position is there to close on its
-- side. An account holds one position TP and one position SL per market: a new one accepted
-- ends the open older one of its kind CXL REPLACED (dex:{m}:cp: "<user>|TP" / "<user>|SL" ->
-- cid).

--#include attached.lua
--#include triggers.lua

-- A parent's child of kind 'tp' / 'sl': created with qty f, or grown by f while untriggered.
function tpsl.grow(parent, kind, price, src, sibling, f)
  local cid = parent.clientOrderId .. '.' .. kind
  local key = oprefix .. parent.userId .. ':' .. cid
  local c = load(key)
  if c == nil then
    aseq = aseq + 1
    c = {key = key, clientOrderId = cid, userId = parent.userId,
      side = parent.side == 'BUY' and 'SELL' or 'BUY',
      type = kind == 'tp' and 'TAKE_PROFIT_MARKET' or 'STOP_MARKET', timeInForce = 'GTC',
      reduceOnly = is_deriv and '1' or '0', expiresAt = '0', price = 0, qty = f, filled = 0,
      status = 'UNTRIGGERED', reason = '', ts = parent.ts, aseq = int(aseq),
      oa = is_deriv and 0 or nil,
      t = src .. '|' .. int(price) .. '|0|', oc = sibling, agent = parent.agent}
    remember(c)
    save_new(c, 0, false)
    redis.call('ZADD', trig.key(src, trigger_direction(c)), price, book_member(c))
    redis.call('SADD', uprefix .. c.userId, cid)
  elseif c.status == 'UNTRIGGERED' and c.oc ~= nil then
    c.qty = c.qty + f
    redis.call('HSET', key, 'qty', int(c.qty), 'updatedTs', now_text)
  else
    return
  end
  touch(c)
  tpsl.sources[src] = true
  if src == 'LAST' then hints.last_triggers = true end
end

-- The parents' fills noted so far become their children's qty (the stop-loss first).
function tpsl.flush()
  local grown = tpsl.grown
  if #grown == 0 then return end
  tpsl.grown = {}
  for _, g in ipairs(grown) do
    local parent, f = g[1], g[2]
    local tp, sl, src = tpsl.parts(parent)
    local tcid, scid = parent.clientOrderId .. '.tp', parent.clientOrderId .. '.sl'
    if sl > 0 then tpsl.grow(parent, 'sl', sl, src, tp > 0 and tcid or '', f) end
    if tp > 0 then tpsl.grow(parent, 'tp', tp, src, sl > 0 and scid or '', f) end
  end
end

-- An order fires (match/triggers.lua, before it is matched; cmd: the command it is matched
-- by): a SPOT child takes its pair's hold (a BUY one what buying back its qty may spend, its
-- budget: cmd.reserved); a child's sibling ends CXL OCO; a position TP/SL takes its owner's
-- position as its qty.
function tpsl.on_fire(o, cmd)
  if o.oc and not is_deriv then
    local keep = ''
    if o.side == 'BUY' then
      local parent = load(oprefix .. o.userId .. ':' .. string.sub(o.clientOrderId, 1, -4))
      cmd.reserved = parent and tpsl.buy_back(parent, o.qty) or 0
      keep = ',"keep":' .. int(cmd.reserved)
    end
    local e = next_eseq()
    emit_event(e, '{"eseq":' .. e .. ',"k":"take","user":' .. q(o.userId) .. ',"cid":' ..
      q(o.clientOrderId) .. ',"hold":' .. q(string.sub(o.clientOrderId, 1, -4) .. '|tpsl') ..
      keep .. ',"ts":' .. now_text .. '}')
  end
  if o.oc and o.oc ~= '' then
    local s = load(oprefix .. o.userId .. ':' .. o.oc)
    if s and s.status == 'UNTRIGGERED' then remove_resting(s, 'CXL', 'OCO') end
  end
  if o.cp == '1' then o.qty = math.abs(position(o.userId)) end
end

-- A position TP/SL arrives: it is one (cp), and once accepted it replaces the open older one
-- of its kind.
function tpsl.position_order(cmd, o)
  if cmd.closePosition ~= true then return end
  o.cp = '1'
end

function tpsl.replace_position(o)
  if o.cp ~= '1' then return end
  local key = mprefix .. 'cp'
  local field = o.userId .. '|' .. (string.sub(o.type, 1, 4) == 'STOP' and 'SL' or 'TP')
  local old = redis.call('HGET', key, field)
  if old and old ~= o.clientOrderId then
    local s = load(oprefix .. o.userId .. ':' .. old)
    if open_order(s) then remove_resting(s, 'CXL', 'REPLACED') end
  end
  redis.call('HSET', key, field, o.clientOrderId)
end

-- After a command and its trigger runs: children created or grown are judged on their
-- source (their condition may hold already), and LAST again after any trade; until nothing
-- more fires (at most trig.FIRES_PER_CALL fire in a call).
function tpsl.settle()
  while true do
    local src = next(tpsl.sources)
    if src then
      tpsl.sources[src] = nil
      trig.run(src)
    elseif tseq ~= trig.seen_tseq then
      trig.seen_tseq = tseq
      if hints.last_triggers then trig.run('LAST') end
    else
      return
    end
  end
end
