"""Ticker and candle reads (common/market_reads.py): the pure view and the readers on fakeredis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import fakeredis
import pytest

from common import keys
from common.market_reads import (
    INTERVALS,
    candle_rows,
    open_interest,
    read_candles,
    read_ticker,
    read_ticker_sync,
    ticker_view,
)
from common.markets import load_markets

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
SPOT = MARKETS.markets["BTC-USDC"]
PERP = MARKETS.markets["BTC-PERP"]
OPTION = MARKETS.markets["BTC-C-40000-20270326"]


def test_intervals_in_ms() -> None:
    assert INTERVALS == {
        "1m": 60_000, "5m": 300_000, "15m": 900_000,
        "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000,
    }  # fmt: skip


def test_nothing_traded_is_null_and_mark_comes_from_the_file_index() -> None:
    view = ticker_view(SPOT, {}, {}, None, None)
    assert view == {
        "last": None, "bestBid": None, "bestAsk": None, "open24h": None, "high24h": None,
        "low24h": None, "volume24h": None, "quoteVolume24h": None, "indexPrice": 3_000_000,
        "markPrice": 3_000_000, "fundingRate": None, "nextFundingTs": None,
        "openInterest": None, "status": "OPEN",
    }  # fmt: skip


def test_mark_is_the_median_before_the_oracle_ran() -> None:
    view = ticker_view(PERP, {}, {}, 3_100_000, 3_200_000)
    assert view["markPrice"] == 3_100_000  # median(3,000,000, 3,100,000, 3,200,000)
    assert view["openInterest"] == 0
    # an option's first term is its intrinsic value at the underlying's index
    option = ticker_view(OPTION, {}, {"index": "4100000"}, 50_000, 200_000)
    assert option["markPrice"] == 100_000
    assert option["indexPrice"] == 4_100_000


def test_traded_window_and_prices_hash() -> None:
    stats = {"last": "101", "lastTs": "5", "open": "99", "high": "103", "low": "98",
             "vol": "40", "qvol": "4010", "openInterest": "7"}  # fmt: skip
    px = {"index": "100", "mark": "102", "fundingRate": "-25", "nextFundingTs": "3600000"}
    view = ticker_view(PERP, stats, px, 100, 102)
    assert view == {
        "last": 101, "bestBid": 100, "bestAsk": 102, "open24h": 99, "high24h": 103,
        "low24h": 98, "volume24h": 40, "quoteVolume24h": 4010, "indexPrice": 100,
        "markPrice": 102, "fundingRate": -25, "nextFundingTs": 3_600_000, "openInterest": 7,
        "status": "OPEN",
    }  # fmt: skip


def test_window_emptied_keeps_last_but_nulls_the_24h_prices() -> None:
    stats = {"last": "101", "open": "", "high": "", "low": "", "vol": "0", "qvol": "0"}
    view = ticker_view(SPOT, stats, {}, None, None)
    assert (view["last"], view["open24h"], view["high24h"], view["low24h"]) == (
        101, None, None, None,
    )  # fmt: skip
    assert (view["volume24h"], view["quoteVolume24h"]) == (0, 0)


def test_open_interest_counts_longs_only() -> None:
    assert open_interest(["5", "-3", "0", "-2", "4"]) == 9


def test_candle_rows_oldest_first_and_missing_skipped() -> None:
    rows = candle_rows(["120000", "60000", "0"], ["[5,6,4,5,2,10]", None, "[1,2,1,2,3,6]"])
    assert rows == [
        {"t": 0, "o": 1, "h": 2, "l": 1, "c": 2, "v": 3},
        {"t": 120000, "o": 5, "h": 6, "l": 4, "c": 5, "v": 2},
    ]


def test_readers_on_fakeredis() -> None:
    m = PERP.symbol
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server, decode_responses=True)
    sync.hset(
        keys.market_stats(m),
        mapping={
            "last": "100",
            "open": "99",
            "high": "100",
            "low": "99",
            "vol": "3",
            "qvol": "299",
        },
    )
    sync.zadd(keys.book_bids(m), {"0000000000000001|0xaa|b": -98})
    sync.zadd(keys.book_asks(m), {"0000000000000002|0xbb|a": 103})
    sync.hset(keys.market_positions(m), mapping={"0xaa": "2", "0xbb": "-3", "0xcc": "1"})
    for i in range(5):
        bucket = 60_000 * i
        sync.zadd(keys.market_candle_index(m, "1m"), {str(bucket): bucket})
        sync.hset(keys.market_candles(m, "1m"), str(bucket), f"[{i},{i + 1},{i},{i},1,{i}]")
    ticker = read_ticker_sync(sync, PERP)
    assert (ticker["bestBid"], ticker["bestAsk"], ticker["openInterest"]) == (98, 103, 3)
    assert ticker["markPrice"] == 103  # median(3,000,000, 98, 103)

    async def go() -> tuple[dict, list, list]:
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        t = await read_ticker(client, PERP)
        candles = await read_candles(client, m, "1m", 2)
        empty = await read_candles(client, m, "1h", 10)
        return t, candles, empty

    async_ticker, candles, empty = asyncio.run(go())
    assert async_ticker == ticker
    assert candles == [
        {"t": 180_000, "o": 3, "h": 4, "l": 3, "c": 3, "v": 1},
        {"t": 240_000, "o": 4, "h": 5, "l": 4, "c": 4, "v": 1},
    ]
    assert empty == []
    with pytest.raises(ValueError, match="unknown candle interval"):
        asyncio.run(read_candles(sync, m, "2m", 5))
