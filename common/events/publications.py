"""Publications on ``dex:ch:<topic>`` (or its shard channel): ``{"seq": N, "data": ...}``.

======================  ===========================  =========================================
topic                   publisher                    declaration
======================  ===========================  =========================================
``depth:<m>``           matcher, once per call       :data:`DepthPublication` (or a batch)
``trade:<m>``           matcher, once per call       :class:`TradePublication`
``orderchanges:<m>``    matcher, once per call       :class:`OrderChangesPublication`
``orders:<u>``          broadcaster (its split of    :class:`OrderPublication`; the gateway's
                        ``orderchanges:``), gateway  :class:`TwapPublication`
``ticker:<m>``          settler's oracle, matcher    :class:`TickerPublication`
``acct:<u>``            settler, per account moved   :class:`AccountPublication`
======================  ===========================  =========================================

:data:`TOPIC_MESSAGES` maps a topic's kind (what precedes the first ``:``) to its declaration.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from pydantic import with_config
from typing_extensions import TypedDict

from common.events.names import (
    MESSAGE,
    DoneReason,
    MarketStatusName,
    OrderStatusName,
    OrderTypeName,
    SideName,
    TimeInForceName,
    TrailingUnitName,
    TriggerSourceName,
    TriggerTypeName,
)
from common.events.records import Trade

Level = tuple[int, int]
"""A price level's new total quantity: [price, qty]; qty 0 removes the level."""


@with_config(MESSAGE)
class DepthChange(TypedDict):
    bids: list[Level]  # best (highest) first
    asks: list[Level]  # best (lowest) first


@with_config(MESSAGE)
class DepthUpdate(TypedDict):
    """The levels one depth seq changed (one command, one expiry or one order removed)."""

    seq: int  # the market's depth seq, contiguous
    data: DepthChange


@with_config(MESSAGE)
class DepthBatch(TypedDict):
    """Several depth seqs of one matcher call in one publication
    (:func:`common.events.codec.depth_updates` splits it)."""

    seq: int  # the last update's
    batch: list[DepthUpdate]


DepthPublication = DepthUpdate | DepthBatch


@with_config(MESSAGE)
class TradePublication(TypedDict):
    seq: int  # the last trade's
    data: list[Trade]  # in trade order


@with_config(MESSAGE)
class OrderUpdate(TypedDict):
    """An order after a change, in the REST order shape (API.md §5)."""

    clientOrderId: str
    userId: str
    market: str
    side: SideName
    type: OrderTypeName | TriggerTypeName
    timeInForce: TimeInForceName
    reduceOnly: bool
    expiresAt: int
    price: int
    qty: int
    filled: int
    status: OrderStatusName
    reason: DoneReason | None
    ts: int
    updatedTs: int
    agent: NotRequired[str]  # the agent key that signed the order (absent: the owner)
    amended: NotRequired[Literal[True]]  # this update is an amend's (docs/api.md "Amend")
    # a trigger order's (docs/api.md "Trigger orders")
    triggerPrice: NotRequired[int]  # a trailing stop's current one (0: none yet)
    triggerSource: NotRequired[TriggerSourceName]
    triggered: NotRequired[bool]
    trailingDelta: NotRequired[int]
    trailingUnit: NotRequired[TrailingUnitName]


@with_config(MESSAGE)
class OrderPublication(TypedDict):
    seq: int  # the matcher's clock (ms); orders only move forward, see the broadcaster
    data: OrderUpdate


@with_config(MESSAGE)
class OrderChangesPublication(TypedDict):
    """Every order change of one matcher call on one market, in order (a call's changes go
    in chunks of about 7 KB, each its own publication). Not a client topic: the broadcaster
    hands each order to its user's ``orders:`` feed as an :class:`OrderPublication` with the
    same ``seq``."""

    seq: int  # the matcher's clock (ms)
    data: list[OrderUpdate]


@with_config(MESSAGE)
class TwapUpdate(TypedDict):
    """A TWAP parent order after a step, as GET /v1/twaps/{userId}/{clientOrderId} shows it
    (docs/api.md "TWAP orders"): the gateway publishes it on ``orders:<u>``, beside the
    matcher's :class:`OrderUpdate` of each slice."""

    clientOrderId: str
    userId: str
    market: str
    type: Literal["TWAP"]
    side: SideName
    qty: int
    durationMinutes: int
    randomize: bool
    slippageBps: int
    reduceOnly: bool
    sent: int
    filled: int
    slicesDone: int
    slicesTotal: int
    slicesSkipped: int
    lastSkip: str | None
    open: int
    status: Literal["ACTIVE", "FILLED", "EXP", "CXL"]
    reason: Literal["USER", "DEADMAN", "DISCONNECT", "AGENT_REVOKED", "AGENT_EXPIRED"] | None
    nextSliceAt: int | None
    ts: int
    updatedTs: int
    agent: NotRequired[str]


@with_config(MESSAGE)
class TwapPublication(TypedDict):
    seq: int  # the gateway's clock (ms)
    data: TwapUpdate


@with_config(MESSAGE)
class Ticker(TypedDict):
    """The REST ticker (API.md §5; common.market_reads.ticker_view)."""

    last: int | None
    bestBid: int | None
    bestAsk: int | None
    open24h: int | None
    high24h: int | None
    low24h: int | None
    volume24h: int | None
    quoteVolume24h: int | None  # quote atomic units (may pass 2^53)
    indexPrice: int
    markPrice: int
    fundingRate: int | None
    nextFundingTs: int | None
    openInterest: int | None  # None for SPOT
    status: MarketStatusName  # docs/api.md "Market states"


@with_config(MESSAGE)
class PriceTicker(TypedDict):
    """The prices part of the ticker alone: what the oracle publishes without a ticker reader."""

    indexPrice: int | None
    markPrice: int | None
    fundingRate: int | None
    nextFundingTs: int | None


@with_config(MESSAGE)
class StatusTicker(TypedDict):
    """The market's new status alone: what the matcher publishes when it changes (the
    broadcaster reads the whole ticker again on it)."""

    status: MarketStatusName


@with_config(MESSAGE)
class TickerPublication(TypedDict):
    seq: int  # per market (dex:{m}:px tickerSeq)
    data: Ticker | PriceTicker | StatusTicker


@with_config(MESSAGE)
class AccountNotice(TypedDict):
    """An account's balances or positions moved: read them again."""

    markets: list[str]  # the markets whose settlement moved it


@with_config(MESSAGE)
class AccountPublication(TypedDict):
    seq: int  # the last settled event's eseq, or the clock (ms) for a step outside the stream
    data: AccountNotice


Publication = (
    DepthUpdate
    | DepthBatch
    | TradePublication
    | OrderPublication
    | OrderChangesPublication
    | TickerPublication
    | AccountPublication
)

TOPIC_MESSAGES: dict[str, Any] = {
    "depth": DepthPublication,
    "trade": TradePublication,
    "orders": OrderPublication,
    "orderchanges": OrderChangesPublication,
    "ticker": TickerPublication,
    "acct": AccountPublication,
}
"""The declaration of every topic kind published on ``dex:ch:``."""


def topic_message(topic: str) -> Any:
    """The declaration of what is published on ``topic`` (``depth:BTC-USDC`` …)."""
    kind = topic.partition(":")[0]
    try:
        return TOPIC_MESSAGES[kind]
    except KeyError:
        raise ValueError(
            f"topic {topic!r} has kind {kind!r}, which has no declared message "
            f"(declared: {', '.join(TOPIC_MESSAGES)})"
        ) from None
