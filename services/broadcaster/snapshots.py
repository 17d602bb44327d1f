"""What a new subscriber receives first, per topic kind, read from Redis.

Each reader returns ``(seq, data)``: for ``depth:`` and ``trade:`` the ``seq`` is the
matcher's counter the snapshot belongs to; other kinds are numbered by the broadcaster, so
their reader's ``seq`` is ignored.
"""

from __future__ import annotations

import importlib
from typing import Any

from common import keys
from common.account_reads import read_account_view_async
from common.book_reads import read_depth, read_trades
from common.markets import MarketSet
from common.order_reads import read_open_orders

TRADE_SNAPSHOT = 50
WHOLE_BOOK = 2**31  # the depth snapshot is the whole book, so applied updates stay exact


async def depth_snapshot(client: Any, market: str) -> tuple[int, Any]:
    depth = await read_depth(client, market, WHOLE_BOOK)
    return depth["seq"], {"bids": depth["bids"], "asks": depth["asks"]}


async def trade_snapshot(client: Any, market: str) -> tuple[int, Any]:
    trades = await read_trades(client, market, TRADE_SNAPSHOT)
    return (trades[0]["seq"] if trades else 0), trades


async def orders_snapshot(client: Any, markets: MarketSet, user: str) -> tuple[int, Any]:
    return 0, await read_open_orders(client, markets, user)


async def pnl_snapshot(client: Any, markets: MarketSet, user: str) -> tuple[int, Any]:
    return 0, await read_account_view_async(client, markets, user)


async def ticker_snapshot(client: Any, market: str) -> tuple[int, Any]:
    return 0, await read_ticker(client, market)


async def read_ticker(client: Any, market: str) -> dict[str, Any]:
    """The REST ticker through ``common.market_reads`` (the gateway's reader).

    Until that module exists, a partial ticker from the book and ``dex:{m}:px``.
    """
    try:
        market_reads = importlib.import_module("common.market_reads")
    except ImportError:
        return await _partial_ticker(client, market)
    ticker: dict[str, Any] = await market_reads.read_ticker(client, market)
    return ticker


async def _partial_ticker(client: Any, market: str) -> dict[str, Any]:
    depth = await read_depth(client, market, 1)
    px = await client.hgetall(keys.market_prices(market))

    def number(field: str) -> int | None:
        value = px.get(field)
        return int(value) if value not in (None, "") else None

    return {
        "last": None,
        "bestBid": depth["bids"][0][0] if depth["bids"] else None,
        "bestAsk": depth["asks"][0][0] if depth["asks"] else None,
        "open24h": None,
        "high24h": None,
        "low24h": None,
        "volume24h": 0,
        "quoteVolume24h": "0",
        "indexPrice": number("index"),
        "markPrice": number("mark"),
        "fundingRate": number("fundingRate"),
        "nextFundingTs": number("nextFundingTs"),
        "openInterest": None,
    }
