-- match/commands.lua: the market's commands, each applied once and answered.
--
-- order (a new order, matched: match/matching.lua; a trigger order: match/triggers.lua),
-- cancel, cancel_all, amend (match/amend.lua), prices (the oracle wrote new prices: trigger
-- orders fire), and the market's status: halt, resume, status (docs/api.md "Market states"),
-- expire (every resting and untriggered order is cancelled). After each command the trigger
-- orders whose source it moved are judged (match/triggers.lua). Each
-- command is one unit
-- (match/publication.lua end_unit); cancel_all and expire make one unit per order removed.

--#include state.lua
--#include records.lua
--#include orders.lua
--#include matching.lua
--#include replace.lua
--#include amend.lua
--#include triggers.lua

-- A new order: matched, then its record written whole. Nothing when the order is known (the
-- gateway's outbox may send it twice): the reply gives its status. Returns the order, or
-- false when it was known. `once`: its entry is the order's only one (match/input.lua), so
-- the record cannot exist and is not looked up.
local function process_order(cmd, once)
  local user, cid = cmd.user, cmd.cid
  local okey = oprefix .. user .. ':' .. cid
  if not once and known(okey) then
    reply(cmd, '{"status":"' .. (load(okey).status) .. '"}')
    return false
  end
  aseq = aseq + 1
  local o = {
    key = okey, clientOrderId = cid, userId = user, side = cmd.side, type = cmd.type or 'LIMIT',
    timeInForce = cmd.tif or 'GTC', reduceOnly = cmd.reduceOnly == true and '1' or '0',
    expiresAt = int(tonumber(cmd.expiresAt) or 0), price = tonumber(cmd.price) or 0,
    qty = tonumber(cmd.qty), filled = 0, status = 'NEW', reason = '',
    ts = int(tonumber(cmd.ts) or 0), aseq = int(aseq), incoming = true,
  }
  -- what a derivative order may open (the gateway reserved margin for that much); a
  -- reduce-only order, nothing
  if is_deriv then
    if cmd.reduceOnly == true then o.oa = 0 else o.oa = tonumber(cmd.open) end
    o.im = tonumber(cmd.im)  -- the account's initial margin bps (nil: the market's)
  end
  if type(cmd.agent) == 'string' then o.agent = cmd.agent end
  tpsl.parent(cmd, o)  -- attached TP/SL (match/attached.lua)
  remember(o)
  touch(o)
  -- a cancel-replace: placed only if the order it replaces was cancelled (match/replace.lua)
  if type(cmd.replaces) == 'string' then o.replaced = cancel_replaced(cmd) end
  if o.replaced == nil or o.replaced == 'CANCELLED' then
    if type(cmd.trigger) == 'string' then trig.arrive(cmd, o) else match_order(cmd, o) end
  else
    finish(o, 'REJECTED', 'REPLACE_FAILED')
  end
  o.incoming = nil
  save_new(o, tonumber(cmd.reserved) or 0, cmd.liquidation == true)
  return o
end

local function process_cancel(cmd)
  local o = load(oprefix .. cmd.user .. ':' .. cmd.cid)
  if o == nil then reply(cmd, '{"result":"UNKNOWN"}'); return end
  if not open_order(o) then reply(cmd, '{"result":"CLOSED"}'); return end
  remove_resting(o, 'CXL', cmd.reason or 'USER')
  reply(cmd, '{"result":"CANCELLED"}')
end

local function process_cancel_all(cmd)
  local list = {}
  for _, cid in ipairs(redis.call('SMEMBERS', uprefix .. cmd.user)) do
    local o = load(oprefix .. cmd.user .. ':' .. cid)
    if open_order(o) then list[#list + 1] = o end
  end
  local n = remove_all(list, cmd.reason or 'USER')
  reply(cmd, '{"cancelled":' .. int(n) .. '}')
end

-- The statuses the "status" command sets (REDUCE_ONLY on a derivative market only).
local SETTABLE = {OPEN = true, HALTED = true, CANCEL_ONLY = true, POST_ONLY = true,
  REDUCE_ONLY = true}

-- A new status, published on ticker: (its seq is the oracle's ticker seq, dex:{m}:px).
local function change_status(new_status)
  if new_status == status then return end
  set_status(new_status)
  local tseq_px = redis.call('HINCRBY', mprefix .. 'px', 'tickerSeq', 1)
  redis.call(publish, chprefix .. 'ticker:' .. market,
    '{"seq":' .. int(tseq_px) .. ',"data":{"status":"' .. new_status .. '"}}')
end

local function process_admin(cmd)
  if status == 'EXPIRED' then
    reply(cmd, '{"status":"' .. status .. '"}')
    return
  end
  if cmd.op == 'halt' then
    change_status('HALTED')
  elseif cmd.op == 'resume' then
    change_status('OPEN')
  elseif cmd.op == 'status' then
    local target = cmd.status
    if SETTABLE[target] and (target ~= 'REDUCE_ONLY' or is_deriv) then change_status(target) end
  elseif cmd.op == 'expire' then
    change_status('EXPIRED')
    local list = {}
    for _, book in ipairs({K_BIDS, K_ASKS}) do
      for _, member in ipairs(redis.call('ZRANGE', book, 0, -1)) do
        local mu, mc = parse_member(member)
        list[#list + 1] = load(oprefix .. mu .. ':' .. mc)
      end
    end
    for _, o in ipairs(trig.all_waiting()) do list[#list + 1] = o end
    remove_all(list, 'MARKET_EXPIRED')
  end
  reply(cmd, '{"status":"' .. status .. '"}')
end

-- One command (a decoded JSON object), one unit; unknown ops change nothing. `once`: see
-- process_order.
local function apply_command(cmd, once)
  local op = cmd.op
  if op == 'order' then
    local o = process_order(cmd, once)
    if o and cmd.reply then reply(cmd, '{"status":"' .. o.status .. '"}') end
  elseif op == 'cancel' then
    process_cancel(cmd)
  elseif op == 'cancel_all' then
    process_cancel_all(cmd)
  elseif op == 'amend' then
    local o = process_amend(cmd)
    end_unit()
    if o then o.amended = nil end
    trig.after_command(op)
    return
  elseif op == 'halt' or op == 'resume' or op == 'status' or op == 'expire' then
    process_admin(cmd)
  end
  end_unit()
  trig.after_command(op)
end

-- Apply the entries ({stream id, command JSON}) past the last applied id, in order; an entry
-- that is not a JSON object is skipped (but counts as applied for `last`). Returns how many
-- commands were applied.
local function apply_entries(entries)
  local applied = 0
  for _, entry in ipairs(entries) do
    local id, raw = entry[1], entry[2]
    local id_ms, id_sq = id_parts(id)
    if last_ms == nil or id_ms > last_ms or (id_ms == last_ms and id_sq > last_sq) then
      local ok, cmd = pcall(cjson.decode, raw)
      if ok and type(cmd) == 'table' then
        apply_command(cmd, entry[3])
        applied = applied + 1
      end
      last, last_ms, last_sq = id, id_ms, id_sq
    end
  end
  return applied
end
