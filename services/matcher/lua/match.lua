-- match.lua: apply a batch of commands from one market's stream, atomically.
--
-- Price-time priority: the book is two sorted sets whose score is the price (bids negated)
-- and whose member "<aseq:016d>|<user>|<cid>" sorts one price level by arrival. Trades print
-- at the maker's price. One call first expires resting orders whose expiresAt has passed,
-- then applies every command it is given, in order, and records the last stream id it
-- applied, so replaying a batch after a crash changes nothing; an order whose record exists
-- is never applied twice either (the gateway's outbox may re-send it; an entry the admission
-- XADDed itself, field o = "1", is the order's only one and skips that lookup: match/input.lua).
--
-- Commands (field "op"): order (LIMIT/MARKET; GTC, IOC, FOK, POST_ONLY; reduceOnly;
-- expiresAt; self-trade prevention cancels the resting order; a trigger order waits untriggered
-- in dex:{m}:trig:* / dex:{m}:trail:* until its source crosses its trigger: match/triggers.lua),
-- cancel, cancel_all, amend (match/amend.lua), prices (the oracle's: trigger orders fire), halt,
-- resume, status (OPEN/HALTED/CANCEL_ONLY/POST_ONLY/REDUCE_ONLY,
-- docs/api.md "Market states"), expire. Outputs, all in this call: order records, the
-- open-order sets, trades, settlement events, positions mirror (derivatives), depth seq (+1
-- per command or expiry that changed the book; cancel_all and expire: +1 per order
-- removed), level totals, market
-- statistics and candles, PUBLISH on depth: (per call, in chunks of about 7 KB: a single
-- seq's message, or with several seqs {"seq": last, "batch": [{"seq", "data"} per seq, in
-- order]}), orderchanges:<m> (every order change of the call, in order, in chunks of about
-- 7 KB: {"seq": now, "data": [order, ...]}; the broadcaster splits it into the users'
-- orders:<userId> feeds), ticker: (a status change, its seq from
-- dex:{m}:px tickerSeq) and trade: (every trade of the call, in order, in
-- chunks of about 7 KB, seq = the last one's of each), replies.
--
-- KEYS[1]  dex:{m}:state    hash   status, seq, tseq, eseq, aseq, last, and what the next
--                                  call need not look up (nexp, nage, ltrig, untrimmed:
--                                  match/state.lua)
-- KEYS[2]  dex:{m}:bids     zset
-- KEYS[3]  dex:{m}:asks     zset
-- KEYS[4]  dex:{m}:lvl:bids hash   price -> qty
-- KEYS[5]  dex:{m}:lvl:asks hash   price -> qty
-- KEYS[6]  dex:{m}:trades   stream
-- KEYS[7]  dex:{m}:events   stream  one entry per call (per 1000 events): eseq -> event JSON
-- KEYS[8]  dex:{m}:cfg      hash   product, mult, takerFeeBps, initialMarginBps, lotSize
-- KEYS[9]  dex:{m}:pos      hash   user -> signed position (derivatives)
-- KEYS[10] dex:{m}:stats    hash   last, lastTs, open, high, low, vol, qvol, evicted, and
--                                  each interval's newest candle c:<iv> (match/statistics.lua)
-- KEYS[11] dex:{m}:exp      zset   expiresAt -> "<B|S><book member>"
-- KEYS[12] dex:{m}:lease    string the token of the matcher that owns the market
-- KEYS[13] dex:{m}:in       stream the market's commands
-- Order records dex:{m}:o:<user>:<cid>, the prices hash dex:{m}:px (tickerSeq), open sets
-- dex:{m}:uo:<user>, candles
-- dex:{m}:candles:<iv> / dex:{m}:cidx:<iv>, the trigger sets dex:{m}:trig:<src>:<U|D> and
-- dex:{m}:trail:<src>:<B|S> (match/triggers.lua), the position TP/SL hash dex:{m}:cp
-- (match/tpsl.lua) and reply lists dex:{m}:reply:<rid> are derived
-- from the prefixes in ARGV and the commands (same hash tag, so the same slot).
-- ARGV[1]  market symbol
-- ARGV[2]  order key prefix "dex:{m}:o:"
-- ARGV[3]  user-open key prefix "dex:{m}:uo:"
-- ARGV[4]  channel prefix "dex:ch:"
-- ARGV[5]  now (ms)
-- ARGV[6]  trades stream max length
-- ARGV[7]  market key prefix "dex:{m}:"
-- ARGV[8]  lease token: unless empty, the call is refused (error LEASE_LOST, nothing
--          changed) when KEYS[12] holds another token, so a matcher that lost its lease
--          while paused can never apply a batch behind its successor's back
-- ARGV[9]  read count: when above 0 the script itself reads up to that many new entries
--          of KEYS[13] for its consumer (XREADGROUP ">"), applies and acknowledges them, all
--          in this one atomic call, so no entry is ever read without being applied
-- ARGV[10] consumer group, ARGV[11] consumer name (for the read above)
-- ARGV[12] publish command: PUBLISH on "dex:ch:", SPUBLISH on "dex:ch:{m}:" (cluster)
-- ARGV[13..] pairs: stream id, command JSON (entries read earlier, e.g. pending ones)
-- Returns {commands applied, events written, entries read here, last applied stream id,
-- 1 if this call set the market's settle-queued flag (the caller then queues one settle
-- task; while the flag stands a task is on its way or at work, so none is queued) else 0}.
--
-- The script is assembled (common/lua.py) from the modules in match/, one concern each, and
-- the money rules shared with the settler (common/lua/money.lua), joined into this one atomic
-- chunk; below them, the flow of one call.

-- The script runs as a Redis function library where the server has them (common/lua.py
-- Library): its top level then runs once, when the library is loaded, and every call runs
-- main() on functions made at load; where it runs as a plain script, the chunk runs whole on
-- every call, as before. Either way a call starts from the same state: what a module keeps
-- for one call is declared without a value and set by the function it hands to per_call,
-- and main() runs those, in the order they were handed in, before anything else (the first
-- binds the call's keys and arguments).
local starts = {}
local function per_call(start) starts[#starts + 1] = start end

local K_STATE, K_BIDS, K_ASKS, K_LB, K_LA
local K_TRADES, K_EVENTS, K_CFG, K_POS, K_STATS, K_EXP
local K_LEASE, K_IN
local market, oprefix, uprefix, chprefix
local now, now_text
local trades_maxlen
local mprefix
local lease_token
local read_count
local group, consumer
local publish
local argv  -- the call's ARGV
local FIRST_ENTRY_ARG = 13
per_call(function(keys, args)
  K_STATE, K_BIDS, K_ASKS, K_LB, K_LA = keys[1], keys[2], keys[3], keys[4], keys[5]
  K_TRADES, K_EVENTS, K_CFG, K_POS, K_STATS, K_EXP =
    keys[6], keys[7], keys[8], keys[9], keys[10], keys[11]
  K_LEASE, K_IN = keys[12], keys[13]
  market, oprefix, uprefix, chprefix = args[1], args[2], args[3], args[4]
  now = tonumber(args[5])
  now_text = string.format('%d', now)
  trades_maxlen = args[6]
  mprefix = args[7]
  lease_token = args[8]
  read_count = tonumber(args[9]) or 0
  group, consumer = args[10], args[11]
  publish = args[12]
  argv = args
end)

--#include money.lua
--#include match/text.lua
--#include match/state.lua

-- The rest is made by one function, once per library load (or per call as a plain script).
-- Lua 5.1 links each local a closure uses by walking the list of the chunk's captured locals
-- (~190 in one flat chunk), so the modules' functions live in this function's scope; the
-- values above are its upvalues, which its closures take by reference. A Lua function has at
-- most 60 upvalues: what the modules below use of the part above stays under that
-- (docs/performance.md "The fixed cost of a call at small batches").
local function build()
--#include match/market.lua
--#include match/margin.lua
--#include match/records.lua
--#include match/depth.lua
--#include match/events.lua
--#include match/statistics.lua
--#include match/publication.lua
--#include match/orders.lua
--#include match/trades.lua
--#include match/matching.lua
--#include match/triggers.lua
--#include match/tpsl.lua
--#include match/commands.lua
--#include match/expiry.lua
--#include match/input.lua

  -- One call, on the state per_call set up.
  local function main(keys, args)
    for i = 1, #starts do starts[i](keys, args) end
    -- 1. Refuse the call, changing nothing, when another matcher holds the market's lease.
    if lease_token ~= '' and redis.call('GET', K_LEASE) ~= lease_token then
      return redis.error_reply('LEASE_LOST this matcher no longer holds the market lease')
    end
    -- 2. The market's constants and state, read once.
    load_market()
    load_state()
    trig.start()
    -- 3. Resting orders whose time has passed leave the book.
    expire_due()
    -- 4. The commands, in stream order, each applied once.
    local entries, read_ids = input_entries()
    local applied = apply_entries(entries)
    -- 5. What the call leaves behind: the changed resting orders' records, the open sets of the
    -- orders placed in it that rest, statistics, level totals, settlement events.
    save_changed()
    write_open_sets()
    write_statistics()
    write_all_levels()
    write_events()
    -- 6. Its publications: the order changes, depth and trades.
    publish_orders()
    publish_depth()
    publish_trades()
    -- 7. The acknowledgement of the entries read here, the state, the settle request.
    acknowledge(read_ids)
    save_state()
    return {applied, events_written, #read_ids, last or '', request_settlement()}
  end
  return main
end

local main = build()
return main(KEYS, ARGV)
