"""The real matcher process on a real three-master Redis Cluster: every script keeps to its
market's slot, so orders on two markets (different slots) match, reply and keep statistics
exactly as on a single Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.cluster import RedisCluster as ClusterClient
from support.exchange import Exchange
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for

from common import keys
from common.market_reads import read_ticker_sync
from common.markets import load_markets

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
A, B = "0x" + "a" * 40, "0x" + "b" * 40


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    try:
        with RedisCluster() as running:
            yield running
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))


def order(user: str, cid: str, side: str, price: int, qty: int, rid: str, market: str) -> dict:
    return {"op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT",
            "price": price, "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
            "ts": 1, "reserved": 0, "acceptedAt": 1,
            "reply": keys.market_reply(market, rid)}  # fmt: skip


def test_matching_on_a_redis_cluster(cluster: RedisCluster, redis_url: str) -> None:
    client: Any = ClusterClient.from_url(cluster.url, decode_responses=True)
    markets = ["BTC-USDC", "BTC-PERP"]
    slots = {client.keyslot(keys.market_in(m)) for m in markets}
    assert len(slots) == 2
    with Exchange(
        cluster.url,
        DEX_REDIS_CLUSTER="1",
        DEX_BROKER_URL=redis_url,
        DEX_MATCHER_MARKETS=",".join(markets),
    ) as exchange:
        exchange.start("matcher")
        for market in markets:
            assert wait_for(lambda m=market: client.get(keys.market_lease(m)), timeout=30)
            commands = [
                order(A, "s1", "SELL", 3_000_000, 5, "1", market),
                order(B, "b1", "BUY", 3_000_100, 8, "2", market),
            ]
            for command in commands:
                client.xadd(keys.market_in(market), {"c": orjson.dumps(command).decode()})
        for market in markets:
            reply = keys.market_reply(market, "2")
            assert wait_for(lambda k=reply: client.llen(k) > 0, timeout=30), exchange.log("matcher")
            assert orjson.loads(client.lpop(reply)) == {"status": "PARTIAL"}
            trades = [orjson.loads(f["t"]) for _, f in client.xrange(keys.market_trades(market))]
            assert [(t["price"], t["qty"], t["buyer"], t["seller"]) for t in trades] == [
                (3_000_000, 5, B, A)
            ]
            assert client.hgetall(keys.levels_bids(market)) == {"3000100": "3"}
            ticker = read_ticker_sync(client, MARKETS.markets[market])
            assert (ticker["last"], ticker["volume24h"], ticker["bestBid"]) == (
                3_000_000, 5, 3_000_100,
            )  # fmt: skip
        assert client.hgetall(keys.market_positions("BTC-PERP")) == {B: "5", A: "-5"}
    client.close()
