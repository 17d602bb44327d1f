-- apply_ops.lua: apply accounts' shares of a run of settlement events, exactly once.
--
-- The settler turns each event of a market into per-account operations; this script applies
-- each account's operations for the events it has not applied yet, skipping every event whose
-- eseq is at or below the account's watermark for that market. Replaying is harmless.
--
-- One call applies one or more accounts of one market, one after the other: account i has
-- the 10 keys KEYS[10*(i-1)+1 .. 10*i] below and its operations in ARGV[i+1] (so #KEYS is
-- 10 * (#ARGV - 1)). Each account is applied as if alone (its own watermark); the keys below
-- are numbered as the first account's.
-- On a single Redis the settler sends a round's accounts in a second form, with no KEYS: the
-- ten keys as templates from common/keys.py, then each account's name (see the end of this
-- file). Its keys are not declared and span many accounts' slots, which only a single Redis
-- allows: on a cluster every call names its account's keys in KEYS.
-- KEYS[1] dex:{u}:bal    hash  "<asset>:t" total, "<asset>:l" locked
-- KEYS[2] dex:{u}:wm     hash  market -> highest eseq applied
-- KEYS[3] dex:{u}:res    hash  cid -> reservation still locked
-- KEYS[4] dex:{u}:fills  stream the account's fills
-- KEYS[5] dex:{u}:pos    hash  "<market>:<field>" position fields (size, entry, rpnl, funding)
-- KEYS[6] dex:{u}:resf   hash  cid -> quantity filled so far (while the order is open)
-- KEYS[7] dex:{u}:waived hash  "<market>:<eseq>" -> fee waived on that event (rare, kept)
-- KEYS[8] dex:{u}:open:<market> zset cid: the account's open orders in the market
-- KEYS[9] dex:{u}:oq     hash  "<market>:<side>" -> unfilled qty of open derivative orders
-- KEYS[10] dex:{u}:oqo   hash  cid -> "<qty>|<market>:<side>": each order's share of KEYS[9]
-- ARGV[1] market
-- ARGV[i+1] the account's JSON list of [eseq, [op, ...]] in ascending eseq; every amount is a
--   decimal string.
--   ["credit", asset, amount]          total += amount
--   ["debit", asset, amount]           total -= amount (free balance)
--   ["spend", asset, amount, cid, fee] total -= amount; locked and the cid's reservation fall
--                                      by min(amount, reservation). amount includes fee (if
--                                      given). Fees round up per fill, so an order's fills can
--                                      need a few units more than its reservation held; when
--                                      the reservation and the free balance together cannot
--                                      pay, the fee is cut by the difference (waived: the
--                                      account never goes below zero), the cut is recorded in
--                                      KEYS[7] and returned, and the event's fill record shows
--                                      the fee actually charged
--   ["release", asset, cid]            locked -= the cid's reservation; the reservation ends,
--                                      and so does the order's unfilled qty in dex:{u}:oq
--   ["trim", asset, cid, fillqty, kind, price, qty, mult, bps1, bps2, reserved, open,
--    margin price, loss, record key]
--                                      the order filled fillqty more; its reservation becomes
--                                      what its unfilled rest needs (never less while an amend
--                                      of it is pending: field "pa" of its accepted record
--                                      dex:{u}:ord:<cid>, same slot): the surplus is released;
--                                      a shortfall (fees round up per fill, so a fill can use
--                                      more than its share) is locked from the available
--                                      balance, as far as it goes:
--                                        quote  N + ceil(N*bps2/1e4)            (spot buy)
--                                        base   rest*mult                        (spot sell)
--                                        margin ceil(N*bps1/1e4)+ceil(N*bps2/1e4) (derivative)
--                                        fee    ceil(N*bps2/1e4)          (reduce-only, fee)
--                                        deriv  ceil(N*bps2/1e4) + ceil(M*bps1/1e4) + L
--                                               with O = min(rest, open),
--                                               M = margin price*O*mult, L = loss*O*mult
--                                        prop   ceil(reserved*rest/qty)
--                                        none   unchanged (released by the done event)
--                                      with N = price*rest*mult; the order's unfilled
--                                      qty in dex:{u}:oq falls by fillqty
--   ["position", asset, delta, price, mult, cash]
--                                      signed size += delta at price; the entry notional moves
--                                      by the exact notional on opening, falls by
--                                      entry*closed/|size| (rounded toward zero) on closing;
--                                      realized PnL = closing notional signed − entry removed,
--                                      credited to asset's total when cash = 1 (PERP, FUTURE)
--   ["pos", field, delta]              HINCRBY "<market>:<field>" delta
--   ["fill", json]                     XADD the fill record to the account's fills
--   ["amend", asset, cid, record key, aid, accepted, kind, price, qty, mult, bps1, bps2,
--    reserved, open, margin price, loss]
--                                      an amend reached the book (docs/api.md "Amend"): one
--                                      pending amend fewer ("pa"); when accepted, the command
--                                      the gateway left under "amd:<aid>" becomes the order's
--                                      "cmd" (and "reserved" the given one), and a derivative
--                                      order's share of dex:{u}:oq becomes qty − filled; with
--                                      none pending the reservation becomes what the terms
--                                      given (those in force) need for qty − filled, as trim
--                                      sets it. Nothing when the record is gone (settled done).
--   ["decrement", asset, cid, cut, kind, price, qty, mult, bps1, bps2, reserved, open,
--    margin price, loss, record key]
--                                      self-trade prevention's DECREMENT left the order qty
--                                      (the terms given): its unfilled qty in dex:{u}:oq falls
--                                      by cut, and its reservation becomes what qty − filled
--                                      needs, as trim sets it (never less while an amend of it
--                                      is pending)
--   ["hold", asset, hold, amount]      a SPOT attached TP/SL pair holds amount more of the
--                                      base its parent bought (docs/api.md "Attached TP/SL
--                                      and position TP/SL"): locked and the hold's reservation
--                                      (field hold, "<parent cid>|tpsl") grow by it, taken from
--                                      the available balance as far as it goes (the same
--                                      event's credit brought it)
--   ["keep", asset, hold, amount]      a SPOT SELL parent's pair hold (quote) comes down to
--                                      amount: locked and the hold fall by the rest (none
--                                      when it holds no more); 0 ends the hold
--   ["take", hold, cid]                the pair's child cid fired: the hold becomes its
--                                      reservation (locked unchanged); its fills spend it and
--                                      its release ends it
--   ["finished", cid, record key]      the order is finished and its done event settled: it
--                                      leaves the open index (KEYS[8]) and its accepted record
--                                      dex:{u}:ord:<cid> (same slot; key from common/keys.py)
--                                      is deleted: no read or recovery needs it any more
-- Every value stays below 2^53; the money rules are common/lua/money.lua's.
-- Returns one reply per account, in order: {events applied, eseq, waived, eseq, waived, ...},
-- every fee cut of its events, those applied now and those applied by an earlier call (so the
-- caller can credit the fee account with what was charged even when it re-runs a batch after
-- a crash).

local KEYS_PER_ACCOUNT = 10
-- The keys of the account being applied (set for each account before its operations run).
local bal_key, wm_key, res_key, fills_key, pos_key, resf_key, waived_key
local open_key, open_qty_key, shares_key
local market = ARGV[1]

local function int(n) return string.format('%d', n) end

local function reserved_for(cid)
  return tonumber(redis.call('HGET', res_key, cid) or '0')
end

--#include money.lua
--#include position.lua

-- An open derivative order's unfilled qty falls by qty (nil: all of it, the order is done).
local function open_qty_falls(cid, qty)
  local share = redis.call('HGET', shares_key, cid)
  if not share then return end
  local left, field = string.match(share, '^(%d+)|(.*)$')
  left = tonumber(left)
  local fall = qty and math.min(qty, left) or left
  if fall > 0 then redis.call('HINCRBY', open_qty_key, field, int(-fall)) end
  if qty == nil or left - fall <= 0 then
    redis.call('HDEL', shares_key, cid)
  else
    redis.call('HSET', shares_key, cid, int(left - fall) .. '|' .. field)
  end
end

-- The account's free balance of asset (total - locked; negative when it owes).
local function free_of(asset)
  local held = redis.call('HMGET', bal_key, asset .. ':t', asset .. ':l')
  return tonumber(held[1] or '0') - tonumber(held[2] or '0')
end

-- An open derivative order's unfilled qty becomes rest (an amend changed its qty).
local function open_qty_becomes(cid, rest)
  local share = redis.call('HGET', shares_key, cid)
  if not share then return end
  local left, field = string.match(share, '^(%d+)|(.*)$')
  local delta = rest - tonumber(left)
  if delta ~= 0 then redis.call('HINCRBY', open_qty_key, field, int(delta)) end
  redis.call('HSET', shares_key, cid, int(rest) .. '|' .. field)
end

-- The order's reservation becomes keep (nil: unchanged): the surplus is released; a shortfall
-- is locked from the available balance as far as it goes.
local function settle_reservation(asset, cid, keep)
  local left = reserved_for(cid)
  if keep ~= nil and left ~= keep and redis.call('HEXISTS', res_key, cid) == 1 then
    if keep > left then
      keep = left + math.max(math.min(keep - left, free_of(asset)), 0)
    end
    if keep ~= left then
      redis.call('HINCRBY', bal_key, asset .. ':l', int(keep - left))
      redis.call('HSET', res_key, cid, int(keep))
    end
  end
end

-- What the fee of a spend must be cut by so that the account can pay it: the reservation and
-- the free balance are all it has for this order.
local function fee_cut(asset, amount, fee, reserved)
  if fee <= 0 or amount <= reserved then return 0 end
  local can = reserved + math.max(free_of(asset), 0)
  if amount <= can then return 0 end
  return math.min(fee, amount - can)
end

-- Apply one account's batches (its keys set above); its reply.
local function apply_account(batches)
  local watermark = tonumber(redis.call('HGET', wm_key, market) or '0')
  local applied = 0
  local waivers = {}  -- flat: eseq, amount
  local skipped = {}  -- "<market>:<eseq>" of events applied before (their cuts are looked up)
  for _, batch in ipairs(batches) do
    local eseq = tonumber(batch[1])
    if eseq <= watermark then
      skipped[#skipped + 1] = market .. ':' .. int(eseq)
    else
      local cut_in_event = 0
      for _, op in ipairs(batch[2]) do
        local kind = op[1]
        if kind == 'credit' then
          redis.call('HINCRBY', bal_key, op[2] .. ':t', op[3])
        elseif kind == 'debit' then
          redis.call('HINCRBY', bal_key, op[2] .. ':t', '-' .. op[3])
        elseif kind == 'spend' then
          local asset, amount, cid = op[2], tonumber(op[3]), op[4]
          local reserved = reserved_for(cid)
          local cut = fee_cut(asset, amount, tonumber(op[5] or '0'), reserved)
          if cut > 0 then
            amount = amount - cut
            cut_in_event = cut_in_event + cut
          end
          local from_lock = math.min(amount, reserved)
          redis.call('HINCRBY', bal_key, asset .. ':t', int(-amount))
          if from_lock > 0 then
            redis.call('HINCRBY', bal_key, asset .. ':l', int(-from_lock))
            redis.call('HINCRBY', res_key, cid, int(-from_lock))
          end
        elseif kind == 'release' then
          local asset, cid = op[2], op[3]
          local left = reserved_for(cid)
          if left > 0 then
            redis.call('HINCRBY', bal_key, asset .. ':l', int(-left))
          end
          redis.call('HDEL', res_key, cid)
          redis.call('HDEL', resf_key, cid)
          open_qty_falls(cid, nil)
        elseif kind == 'trim' then
          local asset, cid = op[2], op[3]
          local filled = redis.call('HINCRBY', resf_key, cid, op[4])
          local qty = tonumber(op[7])
          local rest = math.max(qty - filled, 0)
          open_qty_falls(cid, tonumber(op[4]))
          local keep = reservation_need(op[5], rest, tonumber(op[6]), qty, tonumber(op[8]),
            tonumber(op[9]), tonumber(op[10]), tonumber(op[11]), tonumber(op[12] or '0'),
            tonumber(op[13] or '0'), tonumber(op[14] or '0'))
          local pending = op[15] and tonumber(redis.call('HGET', op[15], 'pa') or '0') or 0
          if keep ~= nil and pending > 0 then keep = math.max(keep, reserved_for(cid)) end
          settle_reservation(asset, cid, keep)
        elseif kind == 'decrement' then
          local asset, cid = op[2], op[3]
          local qty = tonumber(op[7])
          local rest = math.max(qty - tonumber(redis.call('HGET', resf_key, cid) or '0'), 0)
          open_qty_falls(cid, tonumber(op[4]))
          local keep = reservation_need(op[5], rest, tonumber(op[6]), qty, tonumber(op[8]),
            tonumber(op[9]), tonumber(op[10]), tonumber(op[11]), tonumber(op[12]),
            tonumber(op[13]), tonumber(op[14]))
          local pending = tonumber(redis.call('HGET', op[15], 'pa') or '0')
          if keep ~= nil and pending > 0 then keep = math.max(keep, reserved_for(cid)) end
          settle_reservation(asset, cid, keep)
        elseif kind == 'amend' then
          local asset, cid, record, aid = op[2], op[3], op[4], op[5]
          if redis.call('EXISTS', record) == 1 then
            local pending = redis.call('HINCRBY', record, 'pa', -1)
            if pending < 0 then redis.call('HSET', record, 'pa', 0); pending = 0 end
            local command = redis.call('HGET', record, 'amd:' .. aid)
            redis.call('HDEL', record, 'amd:' .. aid)
            local qty = tonumber(op[9])
            local rest = math.max(qty - tonumber(redis.call('HGET', resf_key, cid) or '0'), 0)
            if op[6] == '1' and command then
              redis.call('HSET', record, 'cmd', command, 'reserved', op[13])
              open_qty_becomes(cid, rest)
            end
            if pending == 0 then
              settle_reservation(asset, cid, reservation_need(op[7], rest, tonumber(op[8]), qty,
                tonumber(op[10]), tonumber(op[11]), tonumber(op[12]), tonumber(op[13]),
                tonumber(op[14]), tonumber(op[15]), tonumber(op[16])))
            end
          end
        elseif kind == 'hold' then
          local asset, hold = op[2], op[3]
          local amount = math.max(math.min(tonumber(op[4]), free_of(asset)), 0)
          if amount > 0 then
            redis.call('HINCRBY', bal_key, asset .. ':l', int(amount))
            redis.call('HINCRBY', res_key, hold, int(amount))
          end
        elseif kind == 'keep' then
          local asset, hold = op[2], op[3]
          local held = reserved_for(hold)
          local keep = math.min(tonumber(op[4]), held)
          if held > keep then redis.call('HINCRBY', bal_key, asset .. ':l', int(keep - held)) end
          if keep > 0 then
            redis.call('HSET', res_key, hold, int(keep))
          else
            redis.call('HDEL', res_key, hold)
          end
        elseif kind == 'take' then
          local held = reserved_for(op[2])
          redis.call('HDEL', res_key, op[2])
          if held > 0 then redis.call('HINCRBY', res_key, op[3], int(held)) end
        elseif kind == 'finished' then
          redis.call('ZREM', open_key, op[2])
          redis.call('DEL', op[3])
        elseif kind == 'position' then
          apply_position(pos_key, bal_key, market, op[2], tonumber(op[3]), tonumber(op[4]),
                         tonumber(op[5]), tonumber(op[6]))
        elseif kind == 'pos' then
          redis.call('HINCRBY', pos_key, market .. ':' .. op[2], op[3])
        elseif kind == 'fill' then
          local record = op[2]
          if cut_in_event > 0 then
            local fee = tonumber(string.match(record, '"fee":"(%d+)"'))
            local charged = '"fee":"' .. int(fee - cut_in_event) .. '"'
            record = string.gsub(record, '"fee":"%d+"', charged, 1)
          end
          redis.call('XADD', fills_key, 'MAXLEN', '~', '10000', '*', 'f', record)
        else
          error('unknown settlement operation ' .. tostring(kind))
        end
      end
      if cut_in_event > 0 then
        redis.call('HSET', waived_key, market .. ':' .. int(eseq), int(cut_in_event))
        waivers[#waivers + 1] = int(eseq)
        waivers[#waivers + 1] = int(cut_in_event)
      end
      watermark = eseq
      applied = applied + 1
    end
  end
  redis.call('HSET', wm_key, market, int(watermark))
  for from = 1, #skipped, 1000 do  -- only when a batch is re-run
    local upto = math.min(from + 999, #skipped)
    local before = redis.call('HMGET', waived_key, unpack(skipped, from, upto))
    for i, amount in ipairs(before) do
      if amount then
        waivers[#waivers + 1] = string.match(skipped[from + i - 1], ':(%d+)$')
        waivers[#waivers + 1] = amount
      end
    end
  end
  local result = {applied}
  for _, v in ipairs(waivers) do result[#result + 1] = v end
  return result
end

local replies = {}
if #KEYS > 0 then
  local accounts = #ARGV - 1
  if accounts < 1 or #KEYS ~= KEYS_PER_ACCOUNT * accounts then
    return redis.error_reply('apply_ops: ' .. KEYS_PER_ACCOUNT .. ' keys per account argument')
  end
  for i = 1, accounts do
    local k = KEYS_PER_ACCOUNT * (i - 1)
    bal_key, wm_key, res_key, fills_key, pos_key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
      KEYS[k + 4], KEYS[k + 5]
    resf_key, waived_key, open_key, open_qty_key, shares_key = KEYS[k + 6], KEYS[k + 7],
      KEYS[k + 8], KEYS[k + 9], KEYS[k + 10]
    replies[i] = apply_account(cjson.decode(ARGV[i + 1]))
  end
  return replies
end
-- Single Redis only (no KEYS): ARGV[2..11] the ten keys above with ACCOUNT_MARK where the
-- account goes, then the accounts and their operations in pairs.
local ACCOUNT_MARK = '<account>'
local templates = {}
for t = 1, KEYS_PER_ACCOUNT do
  local template = ARGV[t + 1]
  local at = string.find(template, ACCOUNT_MARK, 1, true)
  templates[t] = {string.sub(template, 1, at - 1), string.sub(template, at + #ACCOUNT_MARK)}
end
local function key(t, account) return templates[t][1] .. account .. templates[t][2] end
local first = KEYS_PER_ACCOUNT + 2
if #ARGV < first + 1 or (#ARGV - first) % 2 ~= 1 then
  return redis.error_reply('apply_ops: an account and its operations per pair')
end
for i = first, #ARGV, 2 do
  local account = ARGV[i]
  bal_key, wm_key, res_key, fills_key, pos_key = key(1, account), key(2, account),
    key(3, account), key(4, account), key(5, account)
  resf_key, waived_key, open_key, open_qty_key, shares_key = key(6, account), key(7, account),
    key(8, account), key(9, account), key(10, account)
  replies[#replies + 1] = apply_account(cjson.decode(ARGV[i + 1]))
end
return replies
