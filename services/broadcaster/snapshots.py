"""What a new subscriber receives first, per topic kind, read from Redis.

Each reader returns ``(seq, data)``: for ``depth:`` and ``trade:`` the ``seq`` is the
matcher's counter the snapshot belongs to; other kinds are numbered by the broadcaster, so
their reader's ``seq`` is ignored.
"""

from __future__ import annotations

from typing import Any

from common.account_reads import read_account_view_async
from common.book_reads import read_depth, read_trades
from common.market_reads import read_ticker
from common.markets import Market, MarketSet
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


async def ticker_snapshot(client: Any, market: Market) -> tuple[int, Any]:
    return 0, await read_ticker(client, market)
