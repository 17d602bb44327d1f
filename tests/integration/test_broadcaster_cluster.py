"""The broadcaster on a real three-master Redis Cluster (``DEX_REDIS_CLUSTER=1``): snapshots
read from the market's slot, updates published on any node reach its one pub/sub connection
(classic PUBLISH reaches every node of a cluster), and two broadcasters side by side each relay
everything their own clients asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import redis.cluster
from support.exchange import Exchange
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable
from support.ws import WsClient

from common import keys

pytestmark = pytest.mark.integration

MARKET = "BTC-USDC"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    try:
        running = RedisCluster().start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield running
    finally:
        running.stop()


def test_two_broadcasters_on_a_cluster_relay_depth_trades_and_user_topics(
    cluster: RedisCluster,
) -> None:
    client = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
    client.hset(keys.market_state(MARKET), "seq", 3)
    client.hset(keys.levels_asks(MARKET), mapping={"3000100": 4})
    user = "0x" + "ab" * 20
    client.hset(keys.balances(user), mapping={"USDC:t": 1_000_000, "USDC:l": 0})
    first = Exchange(cluster.url, DEX_REDIS_CLUSTER="1")
    second = Exchange(cluster.url, DEX_REDIS_CLUSTER="1")
    try:
        first.start("broadcaster")
        second.start("broadcaster")

        async def scenario() -> None:
            async with (
                await WsClient.connect(first.ws) as one,
                await WsClient.connect(second.ws) as two,
            ):
                for ws in (one, two):
                    snapshot = await ws.subscribe(f"depth:{MARKET}")
                    assert snapshot["seq"] == 3
                    assert snapshot["data"] == {"bids": [], "asks": [[3000100, 4]]}
                    assert (await ws.subscribe(f"trade:{MARKET}"))["seq"] == 0
                pnl = await two.subscribe(f"pnl:{user}")
                assert pnl["data"]["margin"]["USDC"]["equity"] == "1000000"
                for publication in (
                    (f"depth:{MARKET}", {"seq": 4, "data": {"bids": [], "asks": [[3000100, 0]]}}),
                    (f"trade:{MARKET}", {"seq": 1, "data": [{"seq": 1, "price": 3000100}]}),
                ):
                    client.publish(keys.channel(publication[0]), orjson.dumps(publication[1]))
                client.hset(keys.balances(user), "USDC:t", 2_000_000)
                client.publish(
                    keys.channel(f"acct:{user}"), orjson.dumps({"seq": 1, "data": {"markets": []}})
                )
                for ws in (one, two):
                    await ws.seen(lambda m: m.get("topic") == f"depth:{MARKET}" and m["seq"] == 4)
                    await ws.seen(lambda m: m.get("topic") == f"trade:{MARKET}" and m["seq"] == 1)
                update = await two.seen(lambda m: m.get("topic") == f"pnl:{user}" and m["seq"] == 2)
                assert update["data"]["margin"]["USDC"]["equity"] == "2000000"

        asyncio.run(scenario())
    finally:
        first.stop()
        second.stop()
        client.close()
