-- accept_order.lua: admit one signed order on its account, atomically (the rules are in
-- admission/order.lua, shared with accept_batch.lua).
--
-- Refuses a clientOrderId seen before (ever), checks what the order may lock (the available
-- balance, or for a derivative the free collateral: available + the caller's adjustment =
-- unrealized contribution at mark − initial margin of positions), then the market's status
-- and backlog as the caller read them, in the contract's order of codes (409, 422, 503). If
-- all pass it locks the reservation and records the order. On a single Redis (KEYS[11] given)
-- it also XADDs the command to the market stream (field c, and o = "1": the order's only entry,
-- so the matcher need not look its record up: match/input.lua), first, so that a stream that
-- refuses the entry (or Redis refusing the first write for memory) leaves nothing applied, and
-- reservation and order exist together or not at all. On a cluster the stream lives in
-- another slot: the order goes into the outbox instead, the caller XADDs it and removes it
-- from the outbox; if the caller dies in between, the outbox sweeper re-sends it (the matcher
-- ignores an order it has).
--
-- KEYS[1] dex:{u}:cids      hash  cid -> market
-- KEYS[2] dex:{u}:ord:<cid> hash  the accepted order
-- KEYS[3] dex:{u}:orders:<m> zset cid by time: the account's orders in the market (listing)
-- KEYS[4] dex:{u}:bal       hash  "<asset>:t", "<asset>:l"
-- KEYS[5] dex:{u}:res       hash  cid -> reserved amount still locked
-- KEYS[6] dex:{u}:outbox    zset  cid by time
-- KEYS[7] dex:{u}:open:<m>  zset  cid by time: the account's open orders in the market (the
--                                 settler removes an order when it applies its done event)
-- KEYS[8] dex:{u}:pos       hash  "<market>:size" -> signed position size (read: the guard)
-- KEYS[9] dex:{u}:oq        hash  "<market>:<side>" -> unfilled qty of open derivative orders
-- KEYS[10] dex:{u}:oqo      hash  cid -> "<qty>|<market>:<side>": the order's share of KEYS[9]
-- KEYS[11] dex:{m}:in       stream the market's commands (single Redis only; optional)
-- ARGV[1] cid  ARGV[2] market  ARGV[3] reserve asset
-- ARGV[4] amount to lock, or "ALL" for a budget of everything available (price-0 MARKET)
-- ARGV[5] now (ms)
-- ARGV[6] command: a JSON object (encoded by the caller) without "reserved"; the script
--         appends ,"reserved":<amount> before its closing brace (no text is substituted)
-- ARGV[7] adjustment added to the available balance (0 for SPOT)
-- ARGV[8] code when the amount is not there (INSUFFICIENT_BALANCE / INSUFFICIENT_MARGIN)
-- ARGV[9] market refusal ("" / MARKET_HALTED / MARKET_CLOSED)
-- ARGV[10] the backlog bound: with KEYS[11], the unmatched entries the stream may hold (lag +
--          pending of the matcher's group, counted here); "FULL" refuses outright (Redis near
--          its memory limit, or the caller's own backlog read on the outbox path)
-- (The group is the matcher's, "matcher": common/keys.py MATCHER_GROUP.)
-- ARGV[11] headroom: free collateral needed beyond the amount locked (0 for most orders)
-- ARGV[12] position field "<market>:size" the order was judged on, or "" (no guard)
-- ARGV[13] that position's size as the caller read it
-- ARGV[14] open-quantity field "<market>:<side>", ARGV[15] its value as the caller read it
-- ARGV[16] the order's qty, added to that field while the order is open
--   When the position or the open quantity moved since the caller read them, the script
--   answers {"RETRY"} and changes nothing: the caller judges the order again.
-- ARGV[17] "1" when the caller found the order over the limit of 2^53 quanta (notional,
--          reservation, position value; LIMIT_EXCEEDED)
-- ARGV[18] DEX_MAX_OPEN_ORDERS: orders the account may have open in this market (one more is
--          TOO_MANY_ORDERS, after the market's refusal and before LIMIT_EXCEEDED)
-- ARGV[19] optional: the clientOrderIds of the order's attached TP/SL children, separated by
--          spaces (docs/api.md "Attached TP/SL and position TP/SL"): a used one is DUPLICATE;
--          they are taken in KEYS[1] and counted in KEYS[7] with the order
-- ARGV[20], ARGV[21] optional: the user's rate limit (tokens per second, burst), its bucket
--   dex:{u}:rl the last key (after KEYS[11] where that is given): the script takes a token
--   first (admission/bucket.lua, as rate_limit.lua would), so a user over the limit is
--   {"RATE_LIMITED", wait ms} before any other verdict, and a request the script then refuses
--   has spent its token as it would have in a call of its own. ARGV[19] is given ("" for no
--   children) whenever these are. A caller judging the order again after {"RETRY"} leaves them
--   out: the request took its token once.
-- ARGV[22] optional: a SPOT SELL parent's pair hold asset (the quote), ARGV[23] its amount:
--          locked besides the order's own reservation, as reservation "<cid>|tpsl" (docs/api.md
--          "Attached TP/SL and position TP/SL", "On SPOT"); not there is the same 422 as the
--          order's own amount. ARGV[20..21] are "" when these are given without a rate limit.
-- Returns {"OK", command JSON, "SENT" when it is on the stream, else "OUTBOX"}, {"RETRY"},
-- {"RATE_LIMITED", wait ms} or {code}.

--#include admission/bucket.lua
--#include admission/order.lua

local limited = (ARGV[20] or '') ~= ''
if limited then
  local wait = take_tokens(KEYS[#KEYS], tonumber(ARGV[20]), tonumber(ARGV[21]), 1)
  if wait > 0 then return {'RATE_LIMITED', wait} end
end
local k = {
  cids = KEYS[1], order = KEYS[2], orders = KEYS[3], bal = KEYS[4], res = KEYS[5],
  outbox = KEYS[6], open_orders = KEYS[7], positions = KEYS[8], open_qty = KEYS[9],
  shares = KEYS[10], stream = #KEYS - (limited and 1 or 0) >= 11 and KEYS[11] or nil,
}
local verdict = judge_order(k, ARGV, 0)
if verdict[1] ~= 'OK' then return verdict end
if k.stream then redis.call('XADD', k.stream, '*', 'c', verdict[2], 'o', '1') end
record_order(k, ARGV, verdict)
return {'OK', verdict[2], k.stream and 'SENT' or 'OUTBOX'}
