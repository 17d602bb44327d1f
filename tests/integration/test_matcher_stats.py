"""Market statistics written by match.lua: candles per interval and the 24 h window, whose
minute buckets leave as they age (high/low recomputed when the extreme leaves)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from common import keys
from common.lua import ScriptSet
from common.market_reads import read_ticker_sync
from common.markets import load_markets
from services.matcher.consumer import LUA_DIR, match_args, match_keys, write_market_cfg

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
PERP = MARKETS.markets["BTC-PERP"]
M = PERP.symbol
DAY = 86_400_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY  # a day boundary


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    write_market_cfg(connection, PERP)
    yield connection
    connection.close()


class Driver:
    def __init__(self, client: redis.Redis) -> None:
        self.scripts = ScriptSet(client, LUA_DIR)
        self.n = 0

    def run(self, now: int, *commands: dict[str, Any]) -> None:
        args = match_args(M, now, "")
        for command in commands:
            self.n += 1
            args.extend((f"1-{self.n}", orjson.dumps(command).decode()))
        self.scripts["match"](keys=match_keys(M), args=args)

    def trade(self, now: int, price: int, qty: int) -> None:
        base = {"op": "order", "type": "LIMIT", "tif": "GTC", "reduceOnly": False,
                "expiresAt": 0, "ts": now, "reserved": 0, "acceptedAt": now, "price": price,
                "qty": qty}  # fmt: skip
        self.run(
            now,
            {**base, "user": "0xaa", "cid": f"s{self.n}", "side": "SELL"},
            {**base, "user": "0xbb", "cid": f"b{self.n}", "side": "BUY"},
        )


def candles(client: redis.Redis, interval: str) -> dict[int, list[int]]:
    raw = client.hgetall(keys.market_candles(M, interval))
    return {int(t): orjson.loads(v)[:5] for t, v in raw.items()}


def test_candles_and_the_rolling_24h_window(client: redis.Redis) -> None:
    driver = Driver(client)
    driver.trade(T0 + 1_000, 100, 2)
    driver.trade(T0 + 61_000, 105, 1)
    driver.trade(T0 + 62_000, 104, 1)
    driver.trade(T0 + 120_000, 95, 3)
    assert candles(client, "1m") == {
        T0: [100, 100, 100, 100, 2],
        T0 + 60_000: [105, 105, 104, 104, 2],
        T0 + 120_000: [95, 95, 95, 95, 3],
    }
    assert candles(client, "5m") == {T0: [100, 105, 95, 95, 7]}
    assert candles(client, "1d") == {T0: [100, 105, 95, 95, 7]}
    assert client.zrange(keys.market_candle_index(M, "1h"), 0, -1) == [str(T0)]
    ticker = read_ticker_sync(client, PERP)
    assert (ticker["last"], ticker["open24h"], ticker["high24h"], ticker["low24h"]) == (
        95, 100, 105, 95,
    )  # fmt: skip
    assert (ticker["volume24h"], ticker["quoteVolume24h"]) == (7, 200 + 105 + 104 + 285)
    assert ticker["openInterest"] == 7  # 0xbb long 7, 0xaa short 7

    # the first minute leaves the window: open moves on, volume falls, extremes stay
    driver.run(T0 + DAY + 60_000 + 1_000)
    ticker = read_ticker_sync(client, PERP)
    assert (ticker["open24h"], ticker["high24h"], ticker["low24h"]) == (105, 105, 95)
    assert (ticker["volume24h"], ticker["quoteVolume24h"]) == (5, 105 + 104 + 285)
    # the minute that held the high leaves: the high is recomputed from what remains
    driver.run(T0 + DAY + 120_000 + 1_000)
    ticker = read_ticker_sync(client, PERP)
    assert (ticker["open24h"], ticker["high24h"], ticker["low24h"]) == (95, 95, 95)
    assert ticker["volume24h"] == 3
    # everything aged out: the last trade stays, the window is empty
    driver.run(T0 + 3 * DAY)
    ticker = read_ticker_sync(client, PERP)
    assert ticker["last"] == 95
    assert (ticker["open24h"], ticker["high24h"], ticker["volume24h"]) == (None, None, 0)
    # a new trade opens a new window
    driver.trade(T0 + 3 * DAY + 5, 90, 1)
    ticker = read_ticker_sync(client, PERP)
    assert (ticker["open24h"], ticker["high24h"], ticker["low24h"], ticker["volume24h"]) == (
        90, 90, 90, 1,
    )  # fmt: skip
