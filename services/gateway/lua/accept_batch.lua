-- accept_batch.lua: admit the actions of one signed batch on their account, in order, in one
-- step (docs/api.md "Signed batches").
--
-- A PLACE action is judged and recorded by the rules of a single order (admission/order.lua,
-- the same code accept_order.lua runs); an AMEND action by the rules of a single amend
-- (admission/amend.lua, the code amend_order.lua runs: the raised reservation, the pending
-- count, the new command); a CANCEL action, checked by the caller, only puts its command on
-- the stream. Atomic: at the first refused action the script undoes, in reverse, what the
-- actions before it wrote (a journal of the raw values they replaced; nothing else runs
-- meanwhile) and answers {"FAIL", position, code}, so none is applied and nothing is sent.
-- Otherwise each action answers for itself. A {"RETRY"} from any action (a position judged on
-- moved) undoes every action and answers {"RETRY"}: the caller judges them again (not
-- atomic: only that market's actions from there on). Once every action is judged the script
-- XADDs the accepted commands to their streams in the batch's order (single Redis: each
-- action's stream key given); on the outbox path (no stream keys) the PLACE commands wait in
-- the outbox and the caller sends every command.
--
-- KEYS[1] dex:{u}:cids  KEYS[2] dex:{u}:bal  KEYS[3] dex:{u}:res  KEYS[4] dex:{u}:outbox
-- KEYS[5] dex:{u}:pos   KEYS[6] dex:{u}:oq   KEYS[7] dex:{u}:oqo
-- then per action, ARGV[3] keys: dex:{u}:ord:<cid>, dex:{u}:orders:<m>, dex:{u}:open:<m>
--   and, on a single Redis, dex:{m}:in (accept_order.lua's KEYS[2], [3], [7] and [11])
-- ARGV[1] "1" atomic, "0" each action for itself  ARGV[2] the number of actions
-- ARGV[3] keys per action (3 on the outbox path, 4 with the stream)
-- then per action 19 values: kind (PLACE / CANCEL / AMEND), then for a PLACE
--   accept_order.lua's ARGV[1..18]; for an AMEND amend_order.lua's ARGV[1..14] and 4 ""; for
--   a CANCEL only [1] cid, [2] market and [6] its command, the rest ""
-- Returns {"OK", {code}, {"RETRY"} or {"OK", command} per action}, {"FAIL", position, code}
-- or {"RETRY"}.

--#include admission/order.lua
--#include admission/amend.lua

local ARG_STRIDE = 19
local atomic, count, key_stride = ARGV[1] == '1', tonumber(ARGV[2]), tonumber(ARGV[3])

local actions = {}
for i = 1, count do
  local base, args = 7 + (i - 1) * key_stride, {}
  for j = 1, ARG_STRIDE - 1 do args[j] = ARGV[3 + (i - 1) * ARG_STRIDE + 1 + j] end
  actions[i] = {
    kind = ARGV[3 + (i - 1) * ARG_STRIDE + 1],
    args = args,
    k = {
      cids = KEYS[1], bal = KEYS[2], res = KEYS[3], outbox = KEYS[4], positions = KEYS[5],
      open_qty = KEYS[6], shares = KEYS[7], order = KEYS[base + 1], orders = KEYS[base + 2],
      open_orders = KEYS[base + 3], stream = key_stride == 4 and KEYS[base + 4] or nil,
    },
  }
end

local recorded, results, ahead, deferred, waiting = {}, {}, {}, {}, {}

local function waiting_of(stream)
  if waiting[stream] == nil then waiting[stream] = stream_waiting(stream) end  -- false: none
  return waiting[stream]
end

local function undo_all()
  for j = #recorded, 1, -1 do
    local action = recorded[j]
    if action.kind == 'AMEND' then
      undo_amend(action.k, action.args, action.verdict)
    else
      undo_order(action.k, action.args, action.verdict)
    end
  end
end

for i, action in ipairs(actions) do
  -- the market, by its open-orders key (every kind has it)
  local stream, market = action.k.stream or '', action.k.open_orders
  local verdict
  if deferred[market] then
    verdict = {'RETRY'}
  elseif action.kind == 'CANCEL' then
    verdict = {'OK', action.args[6]}
  elseif action.kind == 'AMEND' then
    verdict = judge_amend(action.k, action.args)
  else
    verdict = judge_order(action.k, action.args, ahead[stream] or 0, waiting_of)
  end
  if action.kind ~= 'CANCEL' then
    if verdict[1] == 'RETRY' and atomic then
      undo_all()
      return {'RETRY'}
    end
    if verdict[1] == 'RETRY' then deferred[market] = true end
    if verdict[1] == 'OK' and action.kind == 'AMEND' then
      record_amend(action.k, action.args, verdict)
      action.verdict = verdict
      recorded[#recorded + 1] = action
      verdict = {'OK', action.args[14]}
    elseif verdict[1] == 'OK' then
      record_order(action.k, action.args, verdict)
      action.verdict = verdict
      recorded[#recorded + 1] = action
    elseif atomic then
      undo_all()
      return {'FAIL', i, verdict[1]}
    end
  end
  if verdict[1] == 'OK' then ahead[stream] = (ahead[stream] or 0) + 1 end
  results[i] = verdict[1] == 'OK' and {'OK', verdict[2]} or {verdict[1]}
end

for i, action in ipairs(actions) do
  if action.k.stream and results[i][1] == 'OK' then
    redis.call('XADD', action.k.stream, '*', 'c', results[i][2], 'o', '1')
  end
end
return {'OK', results}
