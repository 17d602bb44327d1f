"""The messages that cross service boundaries, as typed dicts, and their codec.

These are the interfaces between services (docs/architecture.md):

* a **command** the gateway XADDs to ``dex:{m}:in`` (field ``c``) for the matcher;
* **settlement events** the matcher XADDs to ``dex:{m}:events`` for the settler: one entry per
  script call, one field per event (name: its ``eseq``; value: the event JSON); an entry
  holding a single event in field ``e`` is read the same way (:func:`events_of`);
* a **trade** the matcher XADDs to ``dex:{m}:trades`` (field ``t``), in the REST trade shape;
* a **publication** on ``dex:ch:<topic>``: ``{"seq": N, "data": ...}``; on ``depth:`` the
  matcher publishes once per script call, several seqs as ``{"seq": last, "batch": [{"seq",
  "data"}, ...]}`` (:func:`depth_updates` splits it).

Every integer is a JSON number below 2^53 (Lua reads them exactly) unless noted.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import orjson

COMMAND_FIELD = "c"
EVENT_FIELD = "e"
EVENT_BATCH_FIELD = "b"
TRADE_FIELD = "t"

MAX_SAFE_INTEGER = 2**53 - 1


class OrderCommand(TypedDict):
    op: Literal["order"]
    user: str  # lower-case address
    cid: str
    side: str  # BUY / SELL
    type: str  # LIMIT / MARKET
    price: int  # 0 for a MARKET order without protection price
    qty: int
    tif: str  # GTC / IOC / FOK / POST_ONLY
    reduceOnly: bool
    expiresAt: int  # ms, 0 = never
    ts: int  # the signed ts
    reserved: int  # what the gateway locked for it (quote or base atomic units); a MARKET
    # buy's budget is this amount
    acceptedAt: int  # gateway clock, ms
    liquidation: NotRequired[bool]  # placed by the liquidation engine, not a user
    reply: NotRequired[str]  # dex:{m}:reply:<rid>: LPUSH {"status": <order status>} when done


class CancelCommand(TypedDict):
    op: Literal["cancel"]
    user: str
    cid: str
    ts: int
    reason: NotRequired[str]  # USER (default) or LIQUIDATION
    reply: NotRequired[str]  # LPUSH {"result": "CANCELLED" | "CLOSED" | "UNKNOWN"}


class CancelAllCommand(TypedDict):
    op: Literal["cancel_all"]
    user: str
    ts: int
    reason: NotRequired[str]  # USER (default) or LIQUIDATION
    reply: NotRequired[str]  # LPUSH {"cancelled": N}


class AdminCommand(TypedDict):
    op: Literal["halt", "resume", "expire"]
    ts: int
    reply: NotRequired[str]  # LPUSH {"status": <market status>}


class FillEvent(TypedDict):
    k: Literal["fill"]
    eseq: int  # per-market event sequence, contiguous from 1
    tradeId: str  # "<market>:<tseq>"
    tseq: int
    price: int
    qty: int
    takerSide: str
    buyer: str
    seller: str
    buyCid: str
    sellCid: str
    ts: int


class DoneEvent(TypedDict):
    """An order reached a final status; the settler releases what it still has locked."""

    k: Literal["done"]
    eseq: int
    user: str
    cid: str
    side: str
    status: str  # FILLED / CXL / EXP / REJECTED
    reason: str | None
    filled: int
    ts: int


class Trade(TypedDict):
    tradeId: str
    market: str
    price: int
    qty: int
    takerSide: str
    buyer: str
    seller: str
    buyOid: str
    sellOid: str
    ts: int
    seq: int


def dumps(value: Any) -> str:
    """JSON text for a stream field or a publication."""
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def events_of(fields: Any) -> list[Any]:
    """The settlement events of one ``dex:{m}:events`` entry, in ``eseq`` order. The matcher
    writes every event of a script call into one entry, one field per event: the field's name
    is the event's ``eseq``, its value the event JSON (fields come back in the order written).
    Also read: the single event in field ``e`` and a JSON array in field ``b``. Every reader
    of the stream decodes entries here."""
    events: list[Any] = []
    for name, value in fields.items():
        key = name.decode() if isinstance(name, bytes) else name
        if key == EVENT_BATCH_FIELD:
            events.extend(orjson.loads(value))
        else:  # "e" or an eseq
            events.append(orjson.loads(value))
    return events


def depth_updates(payload: Any) -> list[Any]:
    """The ``{"seq", "data"}`` updates of one ``depth:`` publication, in seq order: the items
    of a batch (``{"seq": last, "batch": [...]}``, one per seq of a matcher call) or the
    publication itself. Every subscriber of the depth channel splits publications here."""
    batch = payload.get("batch") if isinstance(payload, dict) else None
    if batch is None:
        return [payload]
    updates: list[Any] = batch
    return updates
