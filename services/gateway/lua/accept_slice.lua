-- accept_slice.lua: send slice k of a TWAP, or record it skipped, and move the parent's cursor
-- from k to k + 1, in one step (docs/api.md "TWAP orders").
--
-- The slice is an ordinary order (a LIMIT IOC), admitted by the rules of a single order
-- (admission/order.lua, the code accept_order.lua runs): its id "<parent>.<k>" is refused if
-- seen before, its reservation locked, its record written, and on a single Redis its command
-- XADDed first. The script answers ENDED when the parent is no longer ACTIVE (a cancel won)
-- and STALE when its cursor is not at k (another firer sent slice k): nothing changes. So a
-- firer killed anywhere has either sent slice k and moved the cursor, or done neither, and
-- slice k is never sent twice. A slice the caller could not build (ARGV[21]: no opposite book,
-- below the lot…) or that admission refuses (its code) is counted skipped: the cursor moves,
-- the qty is not sent and later slices carry it. A slice sent or skipped publishes the
-- TWAP's progress in the same step (twap/message.lua). A TWAP an agent signed sends no slice
-- once that agent's approval no longer covers it (revoked, expired, or approved again with a
-- scope or markets that leave it out): the script answers AGENT and changes nothing, and the
-- caller ends the TWAP (twap_end.lua, with that reason).
--
-- KEYS[1..10] accept_order.lua's KEYS[1..10] for the slice's order
-- KEYS[11] dex:{u}:twap:<cid>  hash  the parent: status, k (cursor), n, sent, skipped, lastSkip
-- KEYS[12] dex:{u}:agents      hash  agent address -> approval record JSON
-- KEYS[13] dex:{m}:in          stream the market's commands (single Redis only; optional)
-- ARGV[1..18] accept_order.lua's ARGV[1..18] for the slice's order ("" when ARGV[21] is set)
-- ARGV[19] k, the slice the caller read the cursor at  ARGV[20] the slice's qty
-- ARGV[21] "" to admit the slice, else why it is skipped  ARGV[22] now (ms)
-- ARGV[23] userId  ARGV[24] parent cid  ARGV[25] the channel of orders:<userId> ("": the
-- caller publishes)  ARGV[26] filled  ARGV[27] open: the caller's count over slices 0..k-1
-- ARGV[28] the agent that signed the TWAP ("": its owner)  ARGV[29] the TWAP's market
-- Returns {"OK", command JSON, "SENT" or "OUTBOX", message}, {"SKIPPED", reason, message},
-- {"RETRY"} (a derivative slice judged on a position that moved: nothing changes, judge
-- again), {"ENDED", status}, {"STALE", cursor} or {"AGENT", "AGENT_REVOKED" or
-- "AGENT_EXPIRED"}.

--#include admission/order.lua
--#include twap/message.lua

local k = {
  cids = KEYS[1], order = KEYS[2], orders = KEYS[3], bal = KEYS[4], res = KEYS[5],
  outbox = KEYS[6], open_orders = KEYS[7], positions = KEYS[8], open_qty = KEYS[9],
  shares = KEYS[10], stream = KEYS[13],
}
local parent, agents = KEYS[11], KEYS[12]
local slice, qty, reason, now = tonumber(ARGV[19]), ARGV[20], ARGV[21], ARGV[22]
local user, cid, channel, filled, open = ARGV[23], ARGV[24], ARGV[25], ARGV[26], ARGV[27]
local agent, market = ARGV[28], ARGV[29]

-- Why the TWAP's agent may no longer place its slices, or nil (the owner's TWAP, or an agent
-- whose approval still covers it: unexpired, scope TRADE, the TWAP's market among its own;
-- the rules of services/gateway/signed.py authorize).
local function agent_refusal()
  if agent == '' then return nil end
  local raw = redis.call('HGET', agents, agent)
  if not raw then return 'AGENT_REVOKED' end
  local record = cjson.decode(raw)
  local expires = tonumber(record.expiresAt) or 0
  if expires > 0 and expires <= tonumber(now) then return 'AGENT_EXPIRED' end
  local markets = record.markets or ''
  local listed = markets == '' or string.find(',' .. markets .. ',', ',' .. market .. ',', 1, true)
  if record.scope ~= 'TRADE' or not listed then return 'AGENT_REVOKED' end
  return nil
end

local state = redis.call('HMGET', parent, 'status', 'k', 'n')
if state[1] ~= 'ACTIVE' then return {'ENDED', state[1] or ''} end
if tonumber(state[2]) ~= slice or slice >= tonumber(state[3]) then
  return {'STALE', state[2]}
end
local revoked = agent_refusal()
if revoked then return {'AGENT', revoked} end

if reason == '' then
  -- The slice's order is ARGV[1..18] alone: admission/order.lua reads an order's attached
  -- children and pair hold from positions 19, 22 and 23, which are this script's own (k, now,
  -- userId): passed whole, slice k would take the clientOrderId "k" as a child of its own.
  local order_args = {unpack(ARGV, 1, 18)}
  local verdict = judge_order(k, order_args, 0)
  if verdict[1] == 'RETRY' then return {'RETRY'} end
  if verdict[1] == 'OK' then
    if k.stream then redis.call('XADD', k.stream, '*', 'c', verdict[2], 'o', '1') end
    record_order(k, order_args, verdict)
    redis.call('HINCRBY', parent, 'sent', qty)
    redis.call('HSET', parent, 'k', slice + 1, 'updatedTs', now)
    local now_open = string.format('%d', tonumber(open) + 1)  -- this slice, just sent
    local message = twap_message(parent, user, cid, filled, now_open, now)
    return {'OK', verdict[2], k.stream and 'SENT' or 'OUTBOX', twap_publish(channel, message)}
  end
  reason = verdict[1]
end
redis.call('HINCRBY', parent, 'skipped', 1)
redis.call('HSET', parent, 'k', slice + 1, 'lastSkip', reason, 'updatedTs', now)
local message = twap_message(parent, user, cid, filled, open, now)
return {'SKIPPED', reason, twap_publish(channel, message)}
