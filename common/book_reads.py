"""Reads of a market's public state shared by the gateway (REST) and the broadcaster
(WebSocket snapshots), so both always describe the book the same way."""

from __future__ import annotations

from typing import Any

from common import keys
from common.events import TRADE_FIELD, Trade, loads


async def read_depth(client: Any, market: str, limit: int) -> dict[str, Any]:
    """Aggregated levels, best first, and the depth ``seq`` they belong to, read atomically."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.hget(keys.market_state(market), "seq")
        pipe.hgetall(keys.levels_bids(market))
        pipe.hgetall(keys.levels_asks(market))
        seq, bids, asks = await pipe.execute()
    return {
        "market": market,
        "seq": int(seq or 0),
        "bids": _levels(bids, descending=True, limit=limit),
        "asks": _levels(asks, descending=False, limit=limit),
    }


async def read_trades(client: Any, market: str, limit: int) -> list[Trade]:
    """The newest ``limit`` trades, newest first, in the REST trade shape."""
    entries = await client.xrevrange(keys.market_trades(market), count=limit)
    return [loads(fields[TRADE_FIELD]) for _, fields in entries]


def _levels(raw: dict[str, str], descending: bool, limit: int) -> list[list[int]]:
    levels = sorted(((int(p), int(q)) for p, q in raw.items()), reverse=descending)
    return [[price, qty] for price, qty in levels[:limit]]
