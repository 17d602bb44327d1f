-- amend_order.lua: admit one signed amend on its account, atomically (docs/api.md "Amend"; the
-- rules are in admission/amend.lua, shared with accept_batch.lua).
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

--#include admission/amend.lua

local k = {
  order = KEYS[1], open_orders = KEYS[2], bal = KEYS[3], res = KEYS[4], positions = KEYS[5],
  open_qty = KEYS[6], sig = KEYS[7], stream = KEYS[8],
}
local verdict = judge_amend(k, ARGV)
if verdict[1] ~= 'OK' then return verdict end
if k.stream then redis.call('XADD', k.stream, '*', 'c', ARGV[14]) end
record_amend(k, ARGV, verdict)
return {'OK', verdict[2], verdict[3]}
