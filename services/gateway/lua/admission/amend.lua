-- admission/amend.lua: judge one signed amend on its account, then record it; the one body of
-- amend admission, included by amend_order.lua (one amend) and accept_batch.lua (the AMEND
-- actions of a signed batch).
--
-- judge_amend(k, a) refuses a used signature (when k.sig is given), an order not open in the
-- account's index, a position or open quantity that moved since the caller judged the amend
-- (RETRY), a raise the available balance (a derivative: the free collateral, available + the
-- caller's adjustment) cannot cover, a locked total that would reach 2^53 quanta. It writes
-- nothing. It answers {code}, {"RETRY"}, or {"OK", reservation after, raise, and the raw
-- values it read of the locked total, the order's reservation and its pending count} (the
-- last three for undo_amend).
-- record_amend(k, a, verdict) raises the reservation to max(what it holds, what the new terms
-- need for the rest), locking the difference, counts the amend pending on the accepted record
-- (field "pa") and keeps the new order command under "amd:<aid>" for the settler; with k.sig
-- it marks the signature used. No XADD: the caller does that, first where it can.
-- undo_amend(k, a, verdict) restores exactly what record_amend wrote, to the raw values read.
--
-- k: the keys by name: order (dex:{u}:ord:<cid>), open_orders (dex:{u}:open:<m>), bal, res,
--    positions, open_qty, and sig (dex:{u}:sig:<digest>) or nil when the caller guards the
--    replays (a signed batch, whose one signature stands for its actions).
-- a: amend_order.lua's ARGV[1..14], in that order (see there).

local function judge_amend(k, a)
  local cid, asset, need, adjustment, short_code =
    a[1], a[2], tonumber(a[3]), tonumber(a[4]), a[5]
  local headroom, position_field, open_field = tonumber(a[6]), a[7], a[9]

  if k.sig and redis.call('EXISTS', k.sig) == 1 then return {'DUPLICATE'} end
  if redis.call('ZSCORE', k.open_orders, cid) == false
      or redis.call('EXISTS', k.order) == 0 then
    return {'ORDER_CLOSED'}
  end
  if position_field ~= '' then
    local size = redis.call('HGET', k.positions, position_field) or '0'
    local open = redis.call('HGET', k.open_qty, open_field) or '0'
    if tonumber(size) ~= tonumber(a[8]) or tonumber(open) ~= tonumber(a[10]) then
      return {'RETRY'}
    end
  end

  local held_raw = redis.call('HGET', k.res, cid)
  local held = tonumber(held_raw or '0')
  local raise = math.max(need - held, 0)
  local balance = redis.call('HMGET', k.bal, asset .. ':t', asset .. ':l')
  local total, locked = tonumber(balance[1] or '0'), tonumber(balance[2] or '0')
  if raise > 0 and raise + headroom > total - locked + adjustment then return {short_code} end
  -- LIMIT_EXCEEDED (API.md §2): a locked total of 2^53 quanta or more
  if locked + raise >= 9007199254740992 then return {'LIMIT_EXCEEDED'} end
  return {'OK', string.format('%d', held + raise), string.format('%d', raise), balance[2] or false,
          held_raw or false, redis.call('HGET', k.order, 'pa') or false}
end

local function record_amend(k, a, verdict)
  local cid, asset, replay_ms, aid, new_order = a[1], a[2], a[11], a[12], a[13]
  if k.sig then redis.call('SET', k.sig, '1', 'PX', replay_ms) end
  if tonumber(verdict[3]) > 0 then
    redis.call('HINCRBY', k.bal, asset .. ':l', verdict[3])
    redis.call('HSET', k.res, cid, verdict[2])
  end
  redis.call('HINCRBY', k.order, 'pa', 1)
  redis.call('HSET', k.order, 'amd:' .. aid, new_order)
end

local function restore_field(key, field, raw)
  if raw then redis.call('HSET', key, field, raw) else redis.call('HDEL', key, field) end
end

local function undo_amend(k, a, verdict)
  local cid, asset, aid = a[1], a[2], a[12]
  if k.sig then redis.call('DEL', k.sig) end
  restore_field(k.bal, asset .. ':l', verdict[4])
  restore_field(k.res, cid, verdict[5])
  restore_field(k.order, 'pa', verdict[6])
  redis.call('HDEL', k.order, 'amd:' .. aid)
end
