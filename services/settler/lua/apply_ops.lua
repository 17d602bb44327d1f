-- apply_ops.lua: apply one account's share of a run of settlement events, exactly once.
--
-- The settler turns each event of a market into per-account operations; this script applies
-- an account's operations for the events it has not applied yet, skipping every event whose
-- eseq is at or below the account's watermark for that market. Replaying is harmless.
--
-- KEYS[1] dex:{u}:bal    hash  "<asset>:t" total, "<asset>:l" locked
-- KEYS[2] dex:{u}:wm     hash  market -> highest eseq applied
-- KEYS[3] dex:{u}:res    hash  cid -> reservation still locked
-- KEYS[4] dex:{u}:fills  stream the account's fills
-- KEYS[5] dex:{u}:pos    hash  "<market>:<field>" position fields
-- ARGV[1] market
-- ARGV[2] JSON list of [eseq, [op, ...]] in ascending eseq; every amount is a decimal string.
--   ["credit", asset, amount]          total += amount
--   ["debit", asset, amount]           total -= amount (free balance)
--   ["spend", asset, amount, cid]      total -= amount; locked and the cid's reservation fall
--                                      by min(amount, reservation)
--   ["release", asset, cid]            locked -= the cid's reservation; the reservation ends
--   ["pos", field, delta]              HINCRBY "<market>:<field>" delta
--   ["fill", json]                     XADD the fill record to the account's fills
-- Returns the number of events applied.

local bal_key, wm_key, res_key, fills_key, pos_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local market = ARGV[1]
local batches = cjson.decode(ARGV[2])

local watermark = tonumber(redis.call('HGET', wm_key, market) or '0')
local applied = 0

local function reserved_for(cid)
  return tonumber(redis.call('HGET', res_key, cid) or '0')
end

for _, batch in ipairs(batches) do
  local eseq = tonumber(batch[1])
  if eseq > watermark then
    for _, op in ipairs(batch[2]) do
      local kind = op[1]
      if kind == 'credit' then
        redis.call('HINCRBY', bal_key, op[2] .. ':t', op[3])
      elseif kind == 'debit' then
        redis.call('HINCRBY', bal_key, op[2] .. ':t', '-' .. op[3])
      elseif kind == 'spend' then
        local asset, amount, cid = op[2], tonumber(op[3]), op[4]
        local from_lock = math.min(amount, reserved_for(cid))
        redis.call('HINCRBY', bal_key, asset .. ':t', '-' .. op[3])
        if from_lock > 0 then
          redis.call('HINCRBY', bal_key, asset .. ':l', string.format('%d', -from_lock))
          redis.call('HINCRBY', res_key, cid, string.format('%d', -from_lock))
        end
      elseif kind == 'release' then
        local asset, cid = op[2], op[3]
        local left = reserved_for(cid)
        if left > 0 then
          redis.call('HINCRBY', bal_key, asset .. ':l', string.format('%d', -left))
        end
        redis.call('HDEL', res_key, cid)
      elseif kind == 'pos' then
        redis.call('HINCRBY', pos_key, market .. ':' .. op[2], op[3])
      elseif kind == 'fill' then
        redis.call('XADD', fills_key, 'MAXLEN', '~', '10000', '*', 'f', op[2])
      else
        return redis.error_reply('unknown settlement operation ' .. tostring(kind))
      end
    end
    watermark = eseq
    applied = applied + 1
  end
end
redis.call('HSET', wm_key, market, string.format('%d', watermark))
return applied
