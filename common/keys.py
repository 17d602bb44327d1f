"""Every Redis key and pub/sub channel of the exchange, in one place.

Layout (``{...}`` is the Redis Cluster hash tag, so all keys of one market, or of one
account, live in one slot and one Lua script may touch them together)::

    Market keys — tag {market}, e.g. {BTC-USDC}
      dex:{m}:in               stream  commands for the matcher (orders, cancels, admin); the
                                        gateway XADDs, the matcher's group "matcher" reads
      dex:{m}:state            hash    status (OPEN/HALTED/EXPIRED), seq (depth seq),
                                        tseq (trade seq), eseq (event seq), aseq (arrival seq),
                                        last (last processed id of dex:{m}:in)
      dex:{m}:cfg              hash    market constants the Lua scripts need (scales, fees…)
      dex:{m}:bids / :asks     zset    resting orders; score = −price (bids) / price (asks),
                                        member = "<aseq:016d>|<userId>|<clientOrderId>" so one
                                        price level sorts by arrival
      dex:{m}:lvl:bids / :asks hash    price -> aggregated resting qty (depth)
      dex:{m}:o:<user>:<cid>   hash    the order as the matcher knows it (status, filled, …)
      dex:{m}:uo:<user>        set     the user's open order ids in this market (cancel-all)
      dex:{m}:trades           stream  durable trade log, one JSON entry per trade
      dex:{m}:events           stream  settlement events for the settler (fill, done)
      dex:{m}:settled          string  eseq up to which every event has been settled
      dex:{m}:px               hash    index, mark, fundingRate, nextFundingTs
      dex:{m}:settle-queued    string  set by match.lua (SET NX) while a settle task is on its
                                        way or at work
      dex:{m}:pos              hash    user -> signed position size, kept by the matcher
                                        (reduce-only checks happen in the market's slot)
      dex:{m}:reply:<rid>      list    the matcher LPUSHes a command's result here (EXPIRE
                                        60 s) when the command names it in ``reply``
      dex:{m}:stats            hash    ticker state (24 h window, last trade), built from
                                        the trade stream
      dex:{m}:candles:<iv>     hash    bucket start ms -> JSON [o, h, l, c, v]
      dex:{m}:cidx:<iv>        zset    bucket starts of candles:<iv> (newest N without a scan)
      dex:{m}:exp              zset    resting orders with an expiresAt (score), for expiry
      dex:{m}:lease            string  token of the matcher process that owns the market
      dex:{m}:trig:<src>:<U|D> zset    untriggered orders by trigger price (score), member =
                                        book member; U fires at source >= score, D at <=
      dex:{m}:trail:<src>:<B|S> zset   trailing stops by the extreme price seen (score)
      dex:{m}:cp               hash    "<user>|TP" / "<user>|SL" -> cid of the account's latest
                                        position TP/SL (closePosition) in the market

    Account keys — tag {userId}, the lower-case 0x address (or a system account name)
      dex:{u}:bal              hash    "<asset>:t" total, "<asset>:l" locked,
                                        "<asset>:dep" / "<asset>:wd" lifetime deposits /
                                        withdrawals (the auditor sums them)
      dex:{u}:cids             hash    clientOrderId -> market; an id is accepted once, ever
      dex:{u}:orders:<m>       zset    cid by acceptance time: the account's orders in market
                                        m, ever (listing; the unfiltered list merges markets)
      dex:{u}:open:<m>         zset    cid by acceptance time: the account's orders in market
                                        m accepted and not yet finished and settled (open=1,
                                        DEX_MAX_OPEN_ORDERS); the settler removes one when it
                                        applies the order's done event
      dex:{u}:ord:<cid>        hash    the order as accepted: signed fields + reserved amount;
                                        deleted when its done event is settled; while an amend
                                        is in flight also "pa" (amends pending) and
                                        "amd:<aid>" (its new command; docs/api.md "Amend")
      dex:{u}:orders           zset    "<market>|<cid>" by time: the earlier listing, no longer
                                        written or read
      dex:{u}:res              hash    clientOrderId -> reservation still locked for it
                                        (and "<cid>|tpsl": a SPOT attached TP/SL pair's hold)
      dex:{u}:outbox           zset    cids reserved but not yet confirmed on their market
                                        stream, by time; a sweeper re-sends old ones
      dex:{u}:wm               hash    market -> highest event eseq applied to this account
      dex:{u}:pos              hash    "<market>:size|entry|rpnl|funding" position fields
      dex:{u}:oq               hash    "<market>:<BUY|SELL>" -> unfilled qty of the account's
                                        open derivative orders on that side (margin netting)
      dex:{u}:oqo              hash    cid -> "<unfilled qty>|<market>:<side>": each open
                                        derivative order's share of dex:{u}:oq
      dex:{u}:fills            stream  the user's fills
      dex:{u}:waived           hash    "<market>:<eseq>" -> fee units the account could not pay
      dex:{u}:sig:<digest>     string  a used Cancel/CancelAll/Withdraw signature (TTL)
      dex:{u}:agents           hash    agent address -> JSON {name, scope, markets,
                                        expiresAt, approvedAt}: the account's agent keys
      dex:{u}:lev              hash    market -> the initial margin bps the account chose
                                        (SetLeverage; absent: the market's)
      dex:{u}:withdrawals      stream  the account's newest 1000 withdrawals (field w: JSON
                                        record; services/gateway/withdrawals.py)
      dex:{u}:wd-pending       hash    withdrawalId -> record not yet on the relayer stream
      dex:{u}:rl               hash    token bucket of the user's writes (gateway)
      dex:{u}:deposits         hash    depositId -> amount, each credited once (admin deposits;
                                        the bridge's chain deposits as "<txhash>:<logIndex>")
      dex:{u}:wd-state         hash    withdrawalId -> JSON {status, txHash, ...} once the
                                        bridge has taken it past PENDING (services/bridge)
      (dex:{u}:bal also holds "<asset>:cdep" / "<asset>:cwd": quanta deposited through the
       vault / paid out by it, and "<asset>:cdust": atomic units deposited below a quantum)
      dex:{u}:twap:<cid>       hash    a TWAP parent order (services/gateway/twap.py): its
                                        signed terms, cursor k (slices done), sent, skipped,
                                        status; kept after it ends, as orders are
      dex:{u}:twaps            zset    cid by start ms: the account's active TWAPs

    Gateway globals
      dex:withdrawal-requests  stream  withdrawal records for the chain relayer (field w);
                                        a record may appear twice with the same withdrawalId
      dex:rl:ip:{<ip>}         hash    token bucket of one client address
      dex:dep:{<depositId>}    string  [userId, asset, amount] a depositId is bound to, ever
      dex:deadman              zset    "<userId>|<market>" ("" = every market) by deadline
                                        ms: the dead-man's switches the gateways fire
      dex:{wsentry}:sessions   zset    WebSocket entry session id by deadline ms: the
                                        cancel-on-disconnect sessions, renewed by the gateway
                                        holding the connection, fired by any when they lapse
      dex:{wsentry}:session:<id> set   "<userId>|<market>" ("" = every market) a session
                                        cancels when it ends
      dex:{twap}:due           zset    "<userId>|<cid>" by the ms its next step is due: the
                                        TWAPs the gateways fire (a hint; the parent decides)

    Bridge globals (services/bridge)
      dex:bridge:cursor        hash    block, hash: the last block whose deposits are credited
      dex:bridge:halt          string  why the bridge stopped following deposits (a reorg
                                        deeper than its confirmations): an operator clears it
      dex:lease:bridge         string  token of the bridge process in charge

    Settler globals
      dex:oracle:health        hash    the HTTP oracle source's counters and failure streak

    System accounts are ordinary accounts with reserved names: ``fees`` and ``insurance``.

    Channels (PUBLISH; payload {"seq": N, "data": ...})
      dex:ch:<topic>           e.g. dex:ch:depth:BTC-USDC, dex:ch:orders:0xabc…
      dex:ch:orderchanges:<m>  the matcher's order changes of one call, every user's
                                ({"seq": ms, "data": [order, ...]}); the broadcaster splits
                                them into the orders:<u> feeds (the TWAP progress stays on
                                dex:ch:orders:<u>)

    Shard channels (SPUBLISH / SSUBSCRIBE; only with DEX_REDIS_CLUSTER=1 on Redis >= 7.0)
      dex:ch:{<tag>}:<topic>   the same topics and payloads, each channel tagged with the
                                slot it is published from, so a Lua script may SPUBLISH it:
        dex:ch:{m}:depth:<m>, dex:ch:{m}:trade:<m>, dex:ch:{m}:ticker:<m>
        dex:ch:{m}:orderchanges:<m>  the matcher's order changes
        dex:ch:{m}:orders:<u>  a user's TWAP progress, from each market's slot: one shard
                                channel per market for one orders topic
        dex:ch:{u}:acct:<u>    the settler's account notices, from the account's slot
"""

from __future__ import annotations

PREFIX = "dex"
FEES_ACCOUNT = "fees"
INSURANCE_ACCOUNT = "insurance"
SYSTEM_ACCOUNTS = (FEES_ACCOUNT, INSURANCE_ACCOUNT)

MATCHER_GROUP = "matcher"


def _m(market: str) -> str:
    return f"{PREFIX}:{{{market}}}"


def _u(user: str) -> str:
    return f"{PREFIX}:{{{user}}}"


# -- market keys ------------------------------------------------------------------------
def market_in(market: str) -> str:
    return f"{_m(market)}:in"


def market_state(market: str) -> str:
    return f"{_m(market)}:state"


def market_cfg(market: str) -> str:
    return f"{_m(market)}:cfg"


def book_bids(market: str) -> str:
    return f"{_m(market)}:bids"


def book_asks(market: str) -> str:
    return f"{_m(market)}:asks"


def levels_bids(market: str) -> str:
    return f"{_m(market)}:lvl:bids"


def levels_asks(market: str) -> str:
    return f"{_m(market)}:lvl:asks"


def market_order(market: str, user: str, cid: str) -> str:
    return f"{_m(market)}:o:{user}:{cid}"


def market_order_prefix(market: str) -> str:
    """Prefix of :func:`market_order` keys; Lua appends ``<user>:<cid>``."""
    return f"{_m(market)}:o:"


def market_user_open(market: str, user: str) -> str:
    return f"{_m(market)}:uo:{user}"


def market_user_open_prefix(market: str) -> str:
    return f"{_m(market)}:uo:"


def market_trades(market: str) -> str:
    return f"{_m(market)}:trades"


def market_events(market: str) -> str:
    return f"{_m(market)}:events"


def market_settled(market: str) -> str:
    return f"{_m(market)}:settled"


def market_prices(market: str) -> str:
    return f"{_m(market)}:px"


def market_settle_queued(market: str) -> str:
    return f"{_m(market)}:settle-queued"


def market_positions(market: str) -> str:
    return f"{_m(market)}:pos"


def market_reply(market: str, request_id: str) -> str:
    return f"{_m(market)}:reply:{request_id}"


def market_stats(market: str) -> str:
    return f"{_m(market)}:stats"


def market_candles(market: str, interval: str) -> str:
    return f"{_m(market)}:candles:{interval}"


# -- account keys -----------------------------------------------------------------------
def balances(user: str) -> str:
    return f"{_u(user)}:bal"


def account_cids(user: str) -> str:
    return f"{_u(user)}:cids"


def account_orders(user: str) -> str:
    """The earlier all-markets listing zset (no longer written; kept for old stores)."""
    return f"{_u(user)}:orders"


def account_market_orders(user: str, market: str) -> str:
    """Zset cid by acceptance time: every order of the account in ``market`` (listing)."""
    return f"{_u(user)}:orders:{market}"


def account_open_orders(user: str, market: str) -> str:
    """Zset cid by acceptance time: the account's orders in ``market`` not yet finished and
    settled (added at admission, removed when the settler applies the done event)."""
    return f"{_u(user)}:open:{market}"


def account_order(user: str, cid: str) -> str:
    return f"{_u(user)}:ord:{cid}"


def account_order_prefix(user: str) -> str:
    return f"{_u(user)}:ord:"


def reservations(user: str) -> str:
    return f"{_u(user)}:res"


def outbox(user: str) -> str:
    return f"{_u(user)}:outbox"


def watermarks(user: str) -> str:
    return f"{_u(user)}:wm"


def positions(user: str) -> str:
    return f"{_u(user)}:pos"


def open_quantities(user: str) -> str:
    """Hash "<market>:<side>" -> unfilled qty of the account's open derivative orders."""
    return f"{_u(user)}:oq"


def open_quantity_shares(user: str) -> str:
    """Hash cid -> "<unfilled qty>|<market>:<side>": each open order's share of the sums."""
    return f"{_u(user)}:oqo"


def open_quantity_field(market: str, side: str) -> str:
    return f"{market}:{side}"


def account_fills(user: str) -> str:
    return f"{_u(user)}:fills"


def used_signature(user: str, digest_hex: str) -> str:
    return f"{_u(user)}:sig:{digest_hex}"


def account_agents(user: str) -> str:
    """The account's approved agent keys (ApproveAgent / RevokeAgent)."""
    return f"{_u(user)}:agents"


def account_leverage(user: str) -> str:
    """Hash market -> the initial margin bps the account chose there (docs/api.md "Leverage")."""
    return f"{_u(user)}:lev"


# -- balance hash fields ----------------------------------------------------------------
def total_field(asset: str) -> str:
    return f"{asset}:t"


def locked_field(asset: str) -> str:
    return f"{asset}:l"


def deposits_field(asset: str) -> str:
    return f"{asset}:dep"


def withdrawals_field(asset: str) -> str:
    return f"{asset}:wd"


# -- global registries (no hash tag needed: single-key commands only) -------------------
def known_accounts() -> str:
    """Set of every account that ever held a balance (the auditor walks it)."""
    return f"{PREFIX}:accounts"


def outbox_accounts() -> str:
    """Set of accounts whose outbox may be non-empty (the outbox sweeper walks it)."""
    return f"{PREFIX}:outbox-accounts"


# -- pub/sub ----------------------------------------------------------------------------
def channel(topic: str) -> str:
    """The pub/sub channel that carries a WebSocket topic (``depth:BTC-USDC`` …)."""
    return f"{PREFIX}:ch:{topic}"


def depth_topic(market: str) -> str:
    return f"depth:{market}"


def trade_topic(market: str) -> str:
    return f"trade:{market}"


def ticker_topic(market: str) -> str:
    return f"ticker:{market}"


def orders_topic(user: str) -> str:
    return f"orders:{user}"


def order_changes_topic(market: str) -> str:
    """``orderchanges:<m>``: every order change of a matcher call on ``market``, in order
    (``{"seq": ms, "data": [order, ...]}``). Internal: the broadcaster splits it into the
    users' :func:`orders_topic` feeds; no client topic names it."""
    return f"orderchanges:{market}"


def pnl_topic(user: str) -> str:
    return f"pnl:{user}"


# -- matcher additions (additive) -------------------------------------------------------
def market_prefix(market: str) -> str:
    """``dex:{m}:`` — the matcher's Lua derives per-market keys from it (same slot)."""
    return f"{_m(market)}:"


def market_lease(market: str) -> str:
    """String: the token of the matcher process that owns the market (SET NX PX, renewed)."""
    return f"{_m(market)}:lease"


def market_expiries(market: str) -> str:
    """Zset: resting orders with an ``expiresAt`` (score), member = side letter + book member."""
    return f"{_m(market)}:exp"


TRIGGER_DIRECTIONS = ("U", "D")
"""U: fires when the source price is at or above the trigger; D: at or below."""


def market_triggers(market: str, source: str, direction: str) -> str:
    """Zset: the market's untriggered orders of one source (MARK, LAST, INDEX) and direction
    (:data:`TRIGGER_DIRECTIONS`), score = trigger price, member = book member (arrival order
    within a price); written by match.lua (match/triggers.lua)."""
    return f"{_m(market)}:trig:{source}:{direction}"


def market_trailing(market: str, source: str, side_letter: str) -> str:
    """Zset: the market's trailing stops of one source and side (B, S), score = the extreme
    price seen since placement (highest for S, lowest for B), member = book member."""
    return f"{_m(market)}:trail:{source}:{side_letter}"


def market_position_tpsl(market: str) -> str:
    """Hash: per account and kind ("<user>|TP", "<user>|SL") the cid of its latest position
    TP/SL in the market, which a newer one replaces; written by match.lua (match/tpsl.lua)."""
    return f"{_m(market)}:cp"


def market_price_triggers(market: str) -> list[str]:
    """The sets of the market's untriggered orders that fire on its MARK or INDEX price (what
    the oracle checks before it sends the market a ``prices`` command)."""
    return [
        *(market_triggers(market, s, d) for s in ("MARK", "INDEX") for d in TRIGGER_DIRECTIONS),
        *(market_trailing(market, s, side) for s in ("MARK", "INDEX") for side in "BS"),
    ]


def market_candle_index(market: str, interval: str) -> str:
    """Zset: bucket starts (ms) of :func:`market_candles`, so the newest N are read directly."""
    return f"{_m(market)}:cidx:{interval}"


# -- settler keys (additive) -------------------------------------------------------------
def fee_waivers(user: str) -> str:
    """Hash "<market>:<eseq>" -> fee units the account could not pay on that fill (settler)."""
    return f"{_u(user)}:waived"


def reservation_fills(user: str) -> str:
    """Hash cid -> quantity filled so far, while the order's reservation is open (settler)."""
    return f"{_u(user)}:resf"


def account_funding(user: str) -> str:
    """Stream of the account's funding payments (settler)."""
    return f"{_u(user)}:funding"


def account_liquidation(user: str) -> str:
    """Hash of the account's liquidation in progress (settler)."""
    return f"{_u(user)}:liq"


def market_holders(market: str) -> str:
    """Set of accounts that ever held a position in the market (settler; funding, expiry)."""
    return f"{_m(market)}:holders"


def market_premiums(market: str) -> str:
    """Zset of oracle premium samples "<ts>:<mark>:<index>" by ts (funding's time weights)."""
    return f"{_m(market)}:prem"


def market_funding(market: str) -> str:
    """Hash: ``paid`` (last funding period paid), ``plan:<k>`` (the period's frozen plan)."""
    return f"{_m(market)}:funding"


def market_funding_history(market: str) -> str:
    """Stream of the market's funding payments, one entry per period."""
    return f"{_m(market)}:fundhist"


def market_expiry(market: str) -> str:
    """Hash: ``requested`` (expire command sent), ``plan`` (frozen), ``settled`` (done)."""
    return f"{_m(market)}:expiry"


def settler_lease(name: str) -> str:
    """A lease held by one settler process (e.g. the beat in charge)."""
    return f"{PREFIX}:lease:{name}"


def oracle_health() -> str:
    """Hash of the HTTP oracle source's health: counters, failures in a row, last success
    (written by ``dex.oracle``, exposed by the gateway's ``/metrics``; common/oracle_health.py)."""
    return f"{PREFIX}:oracle:health"


def account_topic(user: str) -> str:
    """Account-changed notices (settler → broadcaster)."""
    return f"acct:{user}"


# -- gateway: withdrawals, rate limits, outbox registry ----------------------------------
def account_withdrawals(user: str) -> str:
    """Stream of the account's withdrawals (field ``w``: JSON record), for listing."""
    return f"{_u(user)}:withdrawals"


def withdrawals_pending(user: str) -> str:
    """Hash withdrawalId -> JSON record not yet copied to :func:`withdrawal_requests`."""
    return f"{_u(user)}:wd-pending"


def withdrawal_requests() -> str:
    """Stream (field ``w``) the chain relayer reads; a record may appear twice, same id."""
    return f"{PREFIX}:withdrawal-requests"


def rate_limit_user(user: str) -> str:
    """Token bucket (hash: tokens, ts) of one user's writes, in the account's slot."""
    return f"{_u(user)}:rl"


def rate_limit_ip(ip: str) -> str:
    """Token bucket (hash: tokens, ts) of one client address."""
    return f"{PREFIX}:rl:ip:{{{ip}}}"


def deposit_claim(deposit_id: str) -> str:
    """String: the JSON ``[userId, asset, amount]`` an admin ``depositId`` is bound to, ever
    (exchange-wide; its own slot, tagged by the id)."""
    return f"{PREFIX}:dep:{{{deposit_id}}}"


def account_deposits(user: str) -> str:
    """Hash: depositId -> amount of every deposit credited with an id, in the account's slot."""
    return f"{_u(user)}:deposits"


# -- sharded pub/sub (Redis Cluster, Redis >= 7.0) --------------------------------------
def shard_channel(tag: str, topic: str) -> str:
    """The shard channel of ``topic`` published from the slot of hash tag ``tag``."""
    return f"{PREFIX}:ch:{{{tag}}}:{topic}"


def shard_channel_prefix(tag: str) -> str:
    """What precedes the topic in every shard channel of ``tag`` (``dex:ch:{BTC-USDC}:``)."""
    return shard_channel(tag, "")


def shard_publish_channel(topic: str) -> str:
    """The shard channel of a topic that names its own slot: ``depth:``, ``trade:``,
    ``ticker:`` (market) and ``acct:`` (account). ``orders:`` needs a market: use
    :func:`shard_channels` or ``shard_channel(market, topic)``."""
    _, _, name = topic.partition(":")
    return shard_channel(name or topic, topic)


def shard_channels(topic: str, markets: list[str]) -> list[str]:
    """Every shard channel that carries ``topic`` (``orders:<u>``: one per market)."""
    kind, _, _ = topic.partition(":")
    if kind == "orders":
        return [shard_channel(market, topic) for market in markets]
    return [shard_publish_channel(topic)]


def shard_channel_topic(channel: str) -> str:
    """The topic a shard channel carries (what follows ``dex:ch:{<tag>}:``)."""
    return channel.partition("}:")[2]


def deadman_switches() -> str:
    """Zset ``"<userId>|<market>"`` -> deadline ms of every armed dead-man's switch (one key,
    one slot: arming, listing and firing never touch an account's or a market's slot)."""
    return f"{PREFIX}:deadman"


def deadman_member(user: str, market: str) -> str:
    """The member of :func:`deadman_switches` for ``user``'s switch on ``market`` ("" = all)."""
    return f"{user}|{market}"


def entry_sessions() -> str:
    """Zset session id -> deadline ms of every cancel-on-disconnect WebSocket entry session
    (renewed by the gateway holding the connection; any gateway fires a lapsed one)."""
    return f"{PREFIX}:{{wsentry}}:sessions"


def entry_session(session: str) -> str:
    """Set of ``"<userId>|<market>"`` (:func:`deadman_member`) a session cancels when it ends;
    same slot as :func:`entry_sessions`."""
    return f"{PREFIX}:{{wsentry}}:session:{session}"


# -- the bridge (services/bridge) ---------------------------------------------------------
BRIDGE_GROUP = "bridge"
"""Consumer group of the bridge on :func:`withdrawal_requests`."""


def withdrawal_states(user: str) -> str:
    """Hash withdrawalId -> JSON state the bridge recorded (SENT, CONFIRMED, FAILED)."""
    return f"{_u(user)}:wd-state"


def bridge_cursor() -> str:
    """Hash ``block``, ``hash``: the last block whose vault deposits are all credited."""
    return f"{PREFIX}:bridge:cursor"


def bridge_halt() -> str:
    """String: why the bridge stopped following deposits; cleared by an operator."""
    return f"{PREFIX}:bridge:halt"


def bridge_lease() -> str:
    """The lease of the one bridge process in charge."""
    return f"{PREFIX}:lease:bridge"


def chain_deposits_field(asset: str) -> str:
    """Balance-hash field: quanta deposited through the vault (the chain invariant)."""
    return f"{asset}:cdep"


def chain_dust_field(asset: str) -> str:
    """Balance-hash field: atomic units deposited through the vault below one quantum."""
    return f"{asset}:cdust"


def chain_withdrawals_field(asset: str) -> str:
    """Balance-hash field: quanta the vault paid out (CONFIRMED withdrawals)."""
    return f"{asset}:cwd"


def twap_parent(user: str, cid: str) -> str:
    """Hash: the TWAP parent order ``cid`` of ``user`` (docs/api.md "TWAP orders")."""
    return f"{_u(user)}:twap:{cid}"


def account_twaps(user: str) -> str:
    """Zset cid -> start ms of ``user``'s active TWAPs (at most ``twap.MAX_ACTIVE``)."""
    return f"{_u(user)}:twaps"


def twap_due() -> str:
    """Zset ``"<userId>|<cid>"`` -> ms its next step is due, of every active TWAP (one slot of
    its own: the gateways' firer reads it; each parent's own cursor decides what is sent)."""
    return f"{PREFIX}:{{twap}}:due"


def twap_member(user: str, cid: str) -> str:
    """The member of :func:`twap_due` for ``user``'s TWAP ``cid``."""
    return f"{user}|{cid}"
