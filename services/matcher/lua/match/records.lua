-- match/records.lua: the order record dex:{m}:o:<user>:<cid> and the book member.
--
-- Order record: the immutable part in four fields written once (common/order_reads.py
-- decodes them for every Python reader), the mutable part in its own fields (qty, filled,
-- status, reason, updatedTs, and a resting derivative order's oa), so HGET okey status still
-- works. One small HSET per order instead of eighteen fields (a new hash is a listpack: each
-- field is a scan and a realloc), and no value over 64 bytes, so the hash stays a listpack
-- (hash-max-listpack-value; one longer value makes Redis keep it as a hashtable, about 2.5
-- times the memory):
--   d = side|type|timeInForce|reduceOnly|expiresAt|price|ts   a = aseq|reserved|liquidation|market
--   u = userId   c = clientOrderId   (reduceOnly, liquidation: 0/1)
--   g = the agent key that signed the order (only when one did)
--   t = a trigger order's source|triggerPrice|triggered (0/1)|self-trade prevention mode,
--   tr = a trailing stop's delta|unit|extreme price seen ("" before the first)
--   (match/triggers.lua; type in d is the signed one, e.g. STOP_LIMIT)
--   at = an order's attached take-profit|stop-loss|source (prices 0: none), oc = an attached
--   child's OCO sibling cid ("" none), cp = '1' for a position TP/SL (match/attached.lua)
-- Records of the flat shape (a field per name, written by versions before the packed one)
-- are read as well.
-- In memory an order is a table of those names (price, qty, filled as numbers), its key,
-- oa: what a derivative order may still open (nil: no bound), agent (g; nil: none), and a
-- trigger order's t and tr (the raw fields; nil: none), and at, oc, cp (nil: none).
-- Book member: "<aseq:016d>|<user>|<cid>", so one price level sorts by arrival.

--#include text.lua

local D_PATTERN = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'
local FLAT_FIELDS = {'userId', 'clientOrderId', 'side', 'type', 'timeInForce', 'reduceOnly',
  'expiresAt', 'price', 'qty', 'filled', 'status', 'reason', 'ts', 'aseq'}
local cache  -- key -> order: every order this call read or created
per_call(function() cache = {} end)

-- The order at okey (nil if there is none), read once per call.
local function load(okey)
  local o = cache[okey]
  if o then return o end
  local raw = redis.call('HMGET', okey, 'd', 'qty', 'filled', 'status', 'reason', 'a', 'u', 'c',
                        'oa', 'g', 't', 'tr', 'at', 'oc', 'cp')
  if raw[1] then
    local side, otype, tif, ro, exp, price, ts = string.match(raw[1], D_PATTERN)
    o = {side = side, type = otype, timeInForce = tif, reduceOnly = ro, expiresAt = exp,
      price = tonumber(price), ts = ts, aseq = string.match(raw[6], '^([^|]*)|'),
      userId = raw[7], clientOrderId = raw[8], qty = tonumber(raw[2]),
      filled = tonumber(raw[3]), status = raw[4], reason = raw[5] or '',
      oa = tonumber(raw[9] or ''), agent = raw[10] or nil, t = raw[11] or nil,
      tr = raw[12] or nil, arrival = raw[6], at = raw[13] or nil, oc = raw[14] or nil,
      cp = raw[15] or nil}
  else
    raw = redis.call('HMGET', okey, unpack(FLAT_FIELDS))
    if not raw[1] then return nil end
    o = {}
    for i, name in ipairs(FLAT_FIELDS) do o[name] = raw[i] or nil end
    o.qty, o.filled, o.price = tonumber(o.qty), tonumber(o.filled), tonumber(o.price)
  end
  o.key = okey
  cache[okey] = o
  return o
end

-- Is there an order at okey (read this call, or stored)?
local function known(okey)
  return cache[okey] ~= nil or redis.call('EXISTS', okey) == 1
end

-- A new order, seen this call (its record is written by save_new).
local function remember(o)
  cache[o.key] = o
end

-- A call whose entries hold no cancel_all and no amend (match/input.lua may_defer_open) writes
-- the open-order sets (match/orders.lua open_set_add) and the records of the orders placed in
-- it at its end, so an order placed and then filled or cancelled in the same call costs one
-- record write, not two, and no open-set write at all. Within the call every reader of a
-- record goes through load, whose cache holds the order (the one direct read of a record
-- field, amend.lua's, never runs in such a call).
local defer_open
local new_records, new_list  -- key -> the HSET arguments of a new order's record
per_call(function() defer_open, new_records, new_list = false, {}, {} end)

-- The whole record of an order new in this call, written once its command is done (in a
-- deferring call, at the call's end: save_changed), a trigger order's always at once.
local function save_new(o, reserved, liquidation)
  local fields = {'d', o.side .. '|' .. o.type .. '|' .. o.timeInForce .. '|' ..
    o.reduceOnly .. '|' .. o.expiresAt .. '|' .. int(o.price) .. '|' .. o.ts,
    'a', o.aseq .. '|' .. int(reserved) .. '|' .. (liquidation and '1' or '0') .. '|' .. market,
    'u', o.userId, 'c', o.clientOrderId,
    'qty', int(o.qty), 'filled', int(o.filled), 'status', o.status, 'reason', o.reason,
    'updatedTs', now_text}
  if o.agent then fields[#fields + 1] = 'g'; fields[#fields + 1] = o.agent end
  if o.t then fields[#fields + 1] = 't'; fields[#fields + 1] = o.t end
  if o.tr then fields[#fields + 1] = 'tr'; fields[#fields + 1] = o.tr end
  if o.at then fields[#fields + 1] = 'at'; fields[#fields + 1] = o.at end
  if o.oc then fields[#fields + 1] = 'oc'; fields[#fields + 1] = o.oc end
  if o.cp then fields[#fields + 1] = 'cp'; fields[#fields + 1] = o.cp end
  if o.oa ~= nil and (o.status == 'NEW' or o.status == 'PARTIAL' or o.status == 'UNTRIGGERED') then
    -- a resting derivative order keeps what it may still open (read back by load)
    fields[#fields + 1] = 'oa'
    fields[#fields + 1] = int(o.oa)
  end
  if defer_open and o.t == nil then
    new_records[o.key] = fields
    new_list[#new_list + 1] = o
    return
  end
  redis.call('HSET', o.key, unpack(fields))
end

-- Resting orders whose mutable fields changed this call: written once, at its end
-- (save_changed), however many fills they took. Within the call every reader of an order
-- goes through load, whose cache holds the changed table, so nothing reads the stale record.
local changed_orders, changed_list
per_call(function() changed_orders, changed_list = {}, {} end)

local function mark_changed(o)
  if not changed_orders[o.key] then
    changed_orders[o.key] = true
    changed_list[#changed_list + 1] = o
  end
end

-- A resting order filled in part.
local function save_partial(o)
  mark_changed(o)
end

-- A resting order reached its final status.
local function save_final(o)
  mark_changed(o)
end

-- The mutable fields of a new record (save_new's arguments) as they stand now: qty, filled,
-- status, reason, updatedTs in their places, and an open derivative order's oa.
local function renew_record(fields, o)
  fields[10], fields[12], fields[14], fields[16], fields[18] =
    int(o.qty), int(o.filled), o.status, o.reason or '', now_text
  if o.oa ~= nil and (o.status == 'NEW' or o.status == 'PARTIAL') then
    local n = #fields
    if fields[n - 1] == 'oa' then
      fields[n] = int(o.oa)
    else
      fields[n + 1], fields[n + 2] = 'oa', int(o.oa)
    end
  end
end

-- The call's end: each changed resting order's mutable fields in one HSET (an open
-- derivative order's oa too: what it may still open); a record new in this call is written
-- once, as it stands now.
local function save_changed()
  for i = 1, #changed_list do
    local o = changed_list[i]
    local new = new_records[o.key]
    if new then
      renew_record(new, o)
    else
      local fields = {'status', o.status, 'reason', o.reason or '', 'filled', int(o.filled),
        'qty', int(o.qty), 'updatedTs', now_text}
      if o.oa ~= nil and (o.status == 'NEW' or o.status == 'PARTIAL') then
        fields[#fields + 1] = 'oa'
        fields[#fields + 1] = int(o.oa)
      end
      redis.call('HSET', o.key, unpack(fields))
    end
  end
  for i = 1, #new_list do
    local key = new_list[i].key
    redis.call('HSET', key, unpack(new_records[key]))
  end
end

local function book_member(o)
  return string.format('%016d', tonumber(o.aseq)) .. '|' .. o.userId .. '|' .. o.clientOrderId
end

-- The user and clientOrderId of a book member.
local function parse_member(member)
  return string.match(member, '^%d+|([^|]+)|(.*)$')
end
