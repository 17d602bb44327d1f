"""Reads of a market's statistics (REST ticker and candles) for the gateway and the broadcaster.

``match.lua`` keeps them as trades happen: ``dex:{m}:stats`` holds the last trade and the
24 h window's running figures (minute buckets leave the window as they age, so nothing scans
the trades), and each candle interval has a hash ``dex:{m}:candles:<iv>`` (bucket start ms ->
``[o, h, l, c, v, quoteVolume]``) with a zset index ``dex:{m}:cidx:<iv>`` of bucket starts, so
the newest N buckets are read directly. Index, mark and funding come from ``dex:{m}:px``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import orjson

from common import keys
from common.events import Ticker
from common.events.names import MarketStatusName
from common.markets import Market
from common.money import to_atomic
from common.risk import mark_price
from common.types import Product

INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


def _int_or_none(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def open_interest(position_sizes: Iterable[str]) -> int:
    """Sum of the long sizes in the positions mirror (every long faces an equal short)."""
    return sum(size for size in (int(v) for v in position_sizes) if size > 0)


def ticker_view(
    market: Market,
    stats: Mapping[str, str],
    px: Mapping[str, str],
    best_bid: int | None,
    best_ask: int | None,
    status: str = "OPEN",
) -> Ticker:
    """The REST ticker (API.md §5) from the stats hash, the prices hash and the best prices.

    ``stats`` may carry ``openInterest`` (the reader adds it from the positions mirror).
    ``null`` where nothing has traded (ever for ``last``; in the 24 h window for
    open/high/low); volumes are 0 once anything traded. ``qvol`` is kept in quote quanta and
    answered in quote atomic units. Before the oracle's first run the
    index is the markets file's and the mark is ``common.risk.mark_price`` of it.
    """
    last = _int_or_none(stats.get("last"))
    volume = int(stats.get("vol") or 0)
    in_window = volume > 0
    index = int(px.get("index") or market.spec.indexPrice)
    mark = _int_or_none(px.get("mark"))
    if mark is None:
        mark = mark_price(market, index, best_bid, best_ask)
    derivative = market.product is not Product.SPOT
    return {
        "last": last,
        "bestBid": best_bid,
        "bestAsk": best_ask,
        "open24h": _int_or_none(stats.get("open")) if in_window else None,
        "high24h": _int_or_none(stats.get("high")) if in_window else None,
        "low24h": _int_or_none(stats.get("low")) if in_window else None,
        "volume24h": volume if last is not None else None,
        "quoteVolume24h": to_atomic(market.quote, stats.get("qvol") or 0)
        if last is not None
        else None,
        "indexPrice": index,
        "markPrice": mark,
        "fundingRate": _int_or_none(px.get("fundingRate")),
        "nextFundingTs": _int_or_none(px.get("nextFundingTs")),
        "openInterest": int(stats.get("openInterest") or 0) if derivative else None,
        "status": cast(MarketStatusName, status),
    }


def _best(entries: list[Any], negate: bool) -> int | None:
    if not entries:
        return None
    score = int(entries[0][1])
    return -score if negate else score


def market_status(market: Market, stored: str | None, now_ms: float) -> str:
    """The market's status as the matcher wrote it (OPEN before its first call), EXPIRED once
    its expiryTs passed unless HALTED (docs/api.md "Market states")."""
    status = stored or "OPEN"
    expiry = market.spec.expiryTs
    if status != "HALTED" and expiry is not None and expiry <= now_ms:
        return "EXPIRED"
    return status


def _ticker_from(market: Market, replies: list[Any]) -> Ticker:
    stats, px, bids, asks, sizes, stored = replies
    stats = dict(stats)
    stats["openInterest"] = str(open_interest(sizes))
    status = market_status(market, stored, time.time() * 1000)
    return ticker_view(market, stats, px, _best(bids, True), _best(asks, False), status)


def _queue_ticker_reads(pipe: Any, symbol: str) -> None:
    pipe.hgetall(keys.market_stats(symbol))
    pipe.hgetall(keys.market_prices(symbol))
    pipe.zrange(keys.book_bids(symbol), 0, 0, withscores=True)
    pipe.zrange(keys.book_asks(symbol), 0, 0, withscores=True)
    pipe.hvals(keys.market_positions(symbol))
    pipe.hget(keys.market_state(symbol), "status")


async def read_ticker(client: Any, market: Market) -> Ticker:
    """The REST ticker, read in one round trip (asyncio client; all keys in the market slot)."""
    async with client.pipeline(transaction=False) as pipe:
        _queue_ticker_reads(pipe, market.symbol)
        replies = await pipe.execute()
    return _ticker_from(market, replies)


def read_ticker_sync(client: Any, market: Market) -> Ticker:
    """:func:`read_ticker` for a synchronous client (settler tasks)."""
    with client.pipeline(transaction=False) as pipe:
        _queue_ticker_reads(pipe, market.symbol)
        replies = pipe.execute()
    return _ticker_from(market, replies)


def candle_rows(buckets: list[str], values: list[str | None]) -> list[dict[str, int]]:
    """``[{t, o, h, l, c, v}]`` oldest first from bucket starts (newest first) and their JSON."""
    rows = []
    for bucket, raw in zip(buckets, values, strict=True):
        if raw is None:
            continue
        o, h, low, c, v = orjson.loads(raw)[:5]
        rows.append({"t": int(bucket), "o": o, "h": h, "l": low, "c": c, "v": v})
    rows.sort(key=lambda row: row["t"])
    return rows


async def read_candles(client: Any, market: str, interval: str, limit: int) -> list[dict[str, int]]:
    """The newest ``limit`` candles of ``interval``, oldest first; ValueError for an unknown
    interval (the gateway answers INVALID_REQUEST)."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown candle interval {interval!r}; use one of {', '.join(INTERVALS)}")
    if limit < 1:
        return []
    buckets = await client.zrevrange(keys.market_candle_index(market, interval), 0, limit - 1)
    if not buckets:
        return []
    values = await client.hmget(keys.market_candles(market, interval), buckets)
    return candle_rows(buckets, values)
