"""Settlement events on ``dex:{m}:events``: what the matcher tells the settler.

One stream entry per matcher call, one field per event (name: its ``eseq``, value: the event
JSON); :func:`common.events.codec.events_of` reads an entry. ``eseq`` counts a market's events
contiguously from 1; a fill comes before the ``done`` of an order it finishes, and an
``amend`` before the fills it causes; a ``decrement`` comes where the taker met its own order.
"""

from __future__ import annotations

from typing import Literal, NotRequired

from pydantic import with_config
from typing_extensions import TypedDict

from common.events.commands import AmendResult
from common.events.names import MESSAGE, DoneReason, FinalStatusName, SideName


@with_config(MESSAGE)
class FillEvent(TypedDict):
    """A trade: the settler moves money between buyer, seller and the fee account."""

    k: Literal["fill"]
    eseq: int
    tradeId: str  # "<market>:<tseq>"
    tseq: int
    price: int
    qty: int
    takerSide: SideName
    buyer: str
    seller: str
    buyCid: str
    sellCid: str
    ts: int
    liquidation: NotRequired[Literal[True]]  # the taker is a liquidation order
    # a SPOT parent's fill: its attached TP/SL pair's hold ("<buyCid>|tpsl") takes the base
    # bought (docs/api.md "Attached TP/SL and position TP/SL")
    hold: NotRequired[str]


@with_config(MESSAGE)
class DoneEvent(TypedDict):
    """An order reached a final status; the settler releases what it still has locked."""

    k: Literal["done"]
    eseq: int
    user: str
    cid: str
    side: SideName
    status: FinalStatusName
    reason: DoneReason | None  # None for FILLED
    filled: int
    ts: int
    # a parent with attached TP/SL that ends with nothing filled: the children ids it held
    # and never used (docs/api.md "Attached TP/SL and position TP/SL")
    attached: NotRequired[list[str]]
    # a SPOT attached TP/SL child that ends unfired with no sibling open: its pair's hold
    # ("<parent cid>|tpsl"), released with it; a SPOT SELL parent whose pair is open: its
    # pair's quote hold, which keeps ``keep`` (what buying back the filled qty may spend; 0:
    # released whole)
    hold: NotRequired[str]
    keep: NotRequired[int]


@with_config(MESSAGE)
class AmendEvent(TypedDict):
    """An amend reached the book, taken (``accepted``) or refused (``result`` says why). The
    settler ends the amend's hold on the reservation and, when taken, makes the new terms the
    order's: they come before any fill the amend causes."""

    k: Literal["amend"]
    eseq: int
    user: str
    cid: str
    side: SideName
    accepted: bool
    result: AmendResult
    aid: str
    price: int
    qty: int
    reserved: int
    open: NotRequired[int]  # derivatives: the AmendCommand's open, mp and loss
    mp: NotRequired[int]
    loss: NotRequired[int]
    im: NotRequired[int]  # the AmendCommand's im (docs/api.md "Leverage"; absent: the market's)
    ts: int


@with_config(MESSAGE)
class DecrementEvent(TypedDict):
    """Self-trade prevention's DECREMENT (docs/api.md "Self-trade prevention") took ``cut``
    off an order that goes on: ``qty`` is its qty from now on (no trade). The settler brings
    its reservation down to what ``qty`` − filled needs."""

    k: Literal["decrement"]
    eseq: int
    user: str
    cid: str
    side: SideName
    qty: int
    cut: int
    ts: int


@with_config(MESSAGE)
class TakeEvent(TypedDict):
    """A SPOT attached TP/SL child fires: its pair's hold becomes its reservation (before its
    fills, which spend it; its done releases the rest)."""

    k: Literal["take"]
    eseq: int
    user: str
    cid: str  # the child's
    hold: str  # "<parent cid>|tpsl"
    # a SPOT SELL parent's child (it buys back): the hold comes down to this, its budget, the
    # rest released, before it becomes the child's reservation
    keep: NotRequired[int]
    ts: int


SettlementEvent = FillEvent | DoneEvent | AmendEvent | DecrementEvent | TakeEvent
