-- amend_order.lua: admit one signed amend on its account, atomically (docs/api.md "Amend").
--
-- While an amend is in flight the order's reservation never holds less than either version
-- of the order needs: this script raises it to max(what it holds, what the new terms need
-- for the rest), locking the difference from the available balance (a derivative: the free
-- collateral, available + the caller's adjustment), and counts the amend as pending on the
-- accepted record (field "pa"), with the new order command under "amd:<aid>" for the settler
-- to make the order's own once the book takes the amend. The settler settles the reservation
-- to exactly what the terms in force need when the last pending amend's event is applied.
-- It refuses a used signature, an order not open in the account's index, a position or open
-- quantity that moved since the caller judged the amend (RETRY), a lock that is not there.
-- On a single Redis (KEYS[8] given) it XADDs the amend command to the market stream as its
-- first write, so the command and the raised reservation exist together or not at all; on a
-- cluster the caller XADDs it right after.
--
-- KEYS[1] dex:{u}:ord:<cid>  hash   the accepted order: pa, amd:<aid> written here
-- KEYS[2] dex:{u}:open:<m>   zset   the account's open orders in the market (read)
-- KEYS[3] dex:{u}:bal        hash   "<asset>:t" (read), "<asset>:l"
-- KEYS[4] dex:{u}:res        hash   cid -> reserved amount still locked
-- KEYS[5] dex:{u}:pos        hash   "<market>:size" (read: the guard)
-- KEYS[6] dex:{u}:oq         hash   "<market>:<side>" (read: the guard)
-- KEYS[7] dex:{u}:sig:<digest> string the signature's use (SET PX); for an amend whose
--                                  replays the caller guards (an item of a signed batch), a
--                                  key of its own amend id, which nothing else uses
-- KEYS[8] dex:{m}:in         stream the market's commands (single Redis only; optional)
-- ARGV[1] cid  ARGV[2] reserve asset
-- ARGV[3] what the new terms need for the order's rest (quanta)
-- ARGV[4] adjustment added to the available balance (0 for SPOT)
-- ARGV[5] code when the lock is not there (INSUFFICIENT_BALANCE / INSUFFICIENT_MARGIN)
-- ARGV[6] headroom: free collateral needed beyond the amount locked
-- ARGV[7] position field "<market>:size" or "" (no guard), ARGV[8] its size as read
-- ARGV[9] open-quantity field "<market>:<side>", ARGV[10] its value as read
-- ARGV[11] the signature's replay window (ms)
-- ARGV[12] aid, ARGV[13] the new order command (JSON, for "amd:<aid>")
-- ARGV[14] the amend command (JSON) for the stream
-- Returns {"OK", reservation after, amount locked now}, {"RETRY"} or {code}: DUPLICATE,
-- ORDER_CLOSED, the short code, LIMIT_EXCEEDED.

local order_key, open_key, bal_key, res_key, positions_key, open_qty_key, sig_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local stream_key = KEYS[8]
local cid, asset, need, adjustment, short_code =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local headroom, position_field, open_field = tonumber(ARGV[6]), ARGV[7], ARGV[9]
local replay_ms, aid, new_order, command = ARGV[11], ARGV[12], ARGV[13], ARGV[14]

if redis.call('EXISTS', sig_key) == 1 then return {'DUPLICATE'} end
if redis.call('ZSCORE', open_key, cid) == false or redis.call('EXISTS', order_key) == 0 then
  return {'ORDER_CLOSED'}
end
if position_field ~= '' then
  local size = redis.call('HGET', positions_key, position_field) or '0'
  local open = redis.call('HGET', open_qty_key, open_field) or '0'
  if tonumber(size) ~= tonumber(ARGV[8]) or tonumber(open) ~= tonumber(ARGV[10]) then
    return {'RETRY'}
  end
end

local held = tonumber(redis.call('HGET', res_key, cid) or '0')
local raise = math.max(need - held, 0)
local balance = redis.call('HMGET', bal_key, asset .. ':t', asset .. ':l')
local total, locked = tonumber(balance[1] or '0'), tonumber(balance[2] or '0')
if raise > 0 and raise + headroom > total - locked + adjustment then return {short_code} end
-- LIMIT_EXCEEDED (API.md §2): a locked total of 2^53 quanta or more
if locked + raise >= 9007199254740992 then return {'LIMIT_EXCEEDED'} end

if stream_key then redis.call('XADD', stream_key, '*', 'c', command) end
redis.call('SET', sig_key, '1', 'PX', replay_ms)
if raise > 0 then
  redis.call('HINCRBY', bal_key, asset .. ':l', string.format('%d', raise))
  redis.call('HSET', res_key, cid, string.format('%d', held + raise))
end
redis.call('HINCRBY', order_key, 'pa', 1)
redis.call('HSET', order_key, 'amd:' .. aid, new_order)
return {'OK', string.format('%d', held + raise), string.format('%d', raise)}
