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
    liquidation: NotRequired[bool]  # placed by the liquidation engine, not a user
    reply: NotRequired[str]  # dex:{m}:reply:<rid>: an OrderReply when done
    agent: NotRequired[str]  # the approved agent key that signed it (absent: the owner)
    replaces: NotRequired[str]  # cancel-replace: the cid of the user's order to cancel first


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
    op: Literal["halt", "resume", "expire"]
    ts: int
    reply: NotRequired[str]  # an AdminReply


Command = OrderCommand | CancelCommand | CancelAllCommand | AdminCommand


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


Reply = OrderReply | CancelReply | CancelAllReply | AdminReply
