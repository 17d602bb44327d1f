"""Records one service writes and another reads back for REST: trades (``dex:{m}:trades``,
field ``t``), candles (``dex:{m}:candles:<iv>``, bucket start -> JSON) from the matcher, and
an account's fills (``dex:{u}:fills``, field ``f``) from the settler."""

from __future__ import annotations

from pydantic import with_config
from typing_extensions import TypedDict

from common.events.names import MESSAGE, LiquidityName, SideName


@with_config(MESSAGE)
class Trade(TypedDict):
    """A trade in the REST shape (API.md §5), also the items of a ``trade:`` publication."""

    tradeId: str  # "<market>:<seq>"
    market: str
    price: int
    qty: int
    takerSide: SideName
    buyer: str
    seller: str
    buyOid: str  # the buyer's clientOrderId
    sellOid: str
    ts: int
    seq: int  # the market's trade seq (tseq)


Candle = tuple[int, int, int, int, int, int]
"""One candle bucket: open, high, low, close, volume (qty), quote volume (price·qty·mult)."""


@with_config(MESSAGE)
class FillRecord(TypedDict):
    """One side of a fill, as the account's fills list keeps it."""

    tradeId: str
    market: str
    clientOrderId: str
    side: SideName
    price: int
    qty: int
    fee: str  # quote atomic units, as text (may pass 2^53)
    liquidity: LiquidityName
    ts: int
