"""Commands on ``dex:{m}:in`` (field ``c``) for the matcher, and its replies.

The gateway XADDs orders, cancels and halt/resume; the settler XADDs the liquidation engine's
``cancel_all`` and reduce-only MARKET orders, and ``expire`` at a market's expiry. A command
that names a ``reply`` list gets one JSON reply LPUSHed there (EXPIRE 60 s).
"""

from __future__ import annotations

from typing import Literal, NotRequired

from pydantic import with_config
from typing_extensions import TypedDict

from common.events.names import (
    MESSAGE,
    CancelReason,
    MarketStatusName,
    OrderStatusName,
    OrderTypeName,
    SideName,
    TimeInForceName,
    TrailingUnitName,
    TriggerSourceName,
    TriggerTypeName,
)


@with_config(MESSAGE)
class OrderCommand(TypedDict):
    op: Literal["order"]
    user: str  # lower-case address
    cid: str
    side: SideName
    type: OrderTypeName
    price: int  # 0 for a MARKET order without protection price
    qty: int
    tif: TimeInForceName
    reduceOnly: bool
    expiresAt: int  # ms, 0 = never
    ts: int  # the signed ts
    reserved: int  # what the gateway locked for it (quote or base atomic units); a MARKET
    # buy's budget is this amount
    acceptedAt: int  # gateway clock, ms
    open: NotRequired[int]  # derivatives: the most it may open (margin was reserved for it)
    mp: NotRequired[int]  # derivatives: the price its initial margin was reserved at
    loss: NotRequired[int]  # derivatives: the open loss against the mark it reserved
    im: NotRequired[int]  # derivatives: the initial margin bps it reserved at, when the
    # account chose one (docs/api.md "Leverage"; absent: the market's)
    liquidation: NotRequired[bool]  # placed by the liquidation engine, not a user
    reply: NotRequired[str]  # dex:{m}:reply:<rid>: an OrderReply when done
    agent: NotRequired[str]  # the approved agent key that signed it (absent: the owner)
    replaces: NotRequired[str]  # cancel-replace: the cid of the user's order to cancel first
    stp: NotRequired[str]  # an OrderV3's self-trade prevention mode (absent: the market's)
    # an OrderV4's trigger (docs/api.md "Trigger orders"); ``type`` is what it becomes
    trigger: NotRequired[TriggerTypeName]
    triggerPrice: NotRequired[int]  # 0 for a trailing stop
    triggerSource: NotRequired[TriggerSourceName]  # resolved: never the default ""
    trailingDelta: NotRequired[int]  # a trailing stop's distance (0 for the others)
    trailingUnit: NotRequired[TrailingUnitName]
    # attached TP/SL of a LIMIT or MARKET parent (0: none; with triggerSource, the children's)
    # and a position TP/SL (docs/api.md "Attached TP/SL and position TP/SL")
    takeProfitPrice: NotRequired[int]
    stopLossPrice: NotRequired[int]
    closePosition: NotRequired[Literal[True]]
    # a SPOT SELL parent: the quote locked at admission for its pair ("<cid>|tpsl"), besides
    # ``reserved`` (docs/api.md "Attached TP/SL and position TP/SL", "On SPOT")
    pairHold: NotRequired[int]


@with_config(MESSAGE)
class CancelCommand(TypedDict):
    op: Literal["cancel"]
    user: str
    cid: str
    ts: int
    reason: NotRequired[CancelReason]  # USER when absent
    reply: NotRequired[str]  # a CancelReply


@with_config(MESSAGE)
class CancelAllCommand(TypedDict):
    op: Literal["cancel_all"]
    user: str
    ts: int
    reason: NotRequired[CancelReason]  # USER when absent
    reply: NotRequired[str]  # a CancelAllReply


@with_config(MESSAGE)
class AdminCommand(TypedDict):
    op: Literal["halt", "resume", "status", "expire", "prices"]
    ts: int
    status: NotRequired[MarketStatusName]  # "status": the one to set (docs/api.md "Market states")
    # "prices" (the oracle, after writing new index and mark): fire the market's MARK and INDEX
    # trigger orders whose condition now holds (docs/api.md "Trigger orders")
    reply: NotRequired[str]  # an AdminReply


@with_config(MESSAGE)
class AmendCommand(TypedDict):
    """Amend a resting order (docs/api.md "Amend"): the gateway has raised its reservation to
    cover both versions; the matcher applies or refuses it and says so in an ``amend``
    settlement event, which carries these terms to the settler."""

    op: Literal["amend"]
    user: str
    cid: str
    side: SideName  # the order's, as accepted (the event names it even if the book does not)
    price: int  # the new limit price
    qty: int  # the new total quantity, filled part included
    expectedFilled: int  # -1: no guard; else refused unless the order has filled exactly this
    reserved: int  # what the new terms reserve for the whole new qty (the accepted record's
    # "reserved" once the amend is settled)
    aid: str  # the amend's id: the accepted record holds its new command under "amd:<aid>"
    ts: int  # the signed ts
    open: NotRequired[int]  # derivatives: the most the order may open from now on
    mp: NotRequired[int]  # derivatives: the price its margin is reserved at
    loss: NotRequired[int]  # derivatives: the open loss per unit it reserved
    im: NotRequired[int]  # derivatives: the initial margin bps it reserved at (absent: market's)
    reply: NotRequired[str]  # an AmendReply


Command = OrderCommand | CancelCommand | CancelAllCommand | AdminCommand | AmendCommand


@with_config(MESSAGE)
class OrderReply(TypedDict):
    status: OrderStatusName  # after the command; a cid seen before: its order's status


@with_config(MESSAGE)
class CancelReply(TypedDict):
    result: Literal["CANCELLED", "CLOSED", "UNKNOWN"]


@with_config(MESSAGE)
class CancelAllReply(TypedDict):
    cancelled: int  # orders removed


@with_config(MESSAGE)
class AdminReply(TypedDict):
    status: MarketStatusName  # after the command


AmendResult = Literal[
    "AMENDED",
    "UNKNOWN",  # the book has no such order
    "CLOSED",  # the order is no longer open
    "MARKET_HALTED",
    "MARKET_CANCEL_ONLY",  # the market takes only cancels
    "MARKET_REDUCE_ONLY",  # the market takes only a lower qty at the same price
    "FILLED_CHANGED",  # expectedFilled is not what the order has filled
    "QTY_NOT_ABOVE_FILLED",  # the new qty is at or below what the order has filled
    "POST_ONLY_WOULD_CROSS",  # a POST_ONLY order's new price would take liquidity
]


@with_config(MESSAGE)
class AmendReply(TypedDict):
    amend: AmendResult
    status: NotRequired[OrderStatusName]  # AMENDED: the order's status after the amend
    filled: NotRequired[int]  # what the order has filled (absent: UNKNOWN)


Reply = OrderReply | CancelReply | CancelAllReply | AdminReply | AmendReply
