"""Public market data reads: markets with their status, depth, trades, ticker, candles."""

from __future__ import annotations

import importlib
import inspect
import time
from typing import Any

from common import keys
from common.book_reads import read_depth as _read_depth
from common.book_reads import read_trades as _read_trades
from common.events import Trade
from common.markets import Market
from common.types import MarketStatus
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

FALLBACK_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")


def require_market(gateway: Gateway, symbol: str) -> Market:
    """The market named in a path; 404 UNKNOWN_MARKET otherwise."""
    market = gateway.markets.market(symbol)
    if market is None:
        raise ApiError(ErrorCode.UNKNOWN_MARKET, f"no market named {symbol!r}", status=404)
    return market


async def market_view(gateway: Gateway, market: Market, fresh: bool = False) -> dict[str, Any]:
    status = await gateway.market_status(market, fresh=fresh)
    return {"symbol": market.symbol, "status": status, **market.public()}


async def list_markets(gateway: Gateway) -> list[dict[str, Any]]:
    reads = Commands()
    for symbol in gateway.markets.markets:
        reads.hget(keys.market_state(symbol), "status")
    statuses = await gateway.transport.gather(reads)
    result = []
    for market, raw in zip(gateway.markets.markets.values(), statuses, strict=True):
        status = raw or MarketStatus.OPEN.value
        expiry = market.spec.expiryTs
        if status == MarketStatus.OPEN and expiry is not None and expiry <= _now_ms():
            status = MarketStatus.EXPIRED.value
        result.append({"symbol": market.symbol, "status": status, **market.public()})
    return result


def _now_ms() -> int:
    return int(time.time() * 1000)


async def read_depth(gateway: Gateway, market: str, limit: int) -> dict[str, Any]:
    return await _read_depth(gateway.redis, market, limit)


async def read_trades(gateway: Gateway, market: str, limit: int) -> list[Trade]:
    return await _read_trades(gateway.redis, market, limit)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _market_reads() -> Any:
    try:
        market_reads = importlib.import_module("common.market_reads")
    except ImportError:
        raise ApiError(
            ErrorCode.UNAVAILABLE, "market statistics are not available in this build"
        ) from None
    return market_reads


def intervals() -> tuple[str, ...]:
    try:
        market_reads = importlib.import_module("common.market_reads")
    except ImportError:
        return FALLBACK_INTERVALS
    return tuple(market_reads.INTERVALS)


async def read_ticker(gateway: Gateway, market: Market) -> Any:
    return await _maybe_await(_market_reads().read_ticker(gateway.redis, market))


async def read_candles(gateway: Gateway, symbol: str, interval: str, limit: int) -> Any:
    if interval not in intervals():
        raise ApiError(
            ErrorCode.INVALID_REQUEST,
            f"interval must be one of {', '.join(intervals())}, got {interval!r}",
        )
    return await _maybe_await(_market_reads().read_candles(gateway.redis, symbol, interval, limit))
