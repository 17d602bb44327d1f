"""The broadcaster on a real three-master Redis Cluster (``DEX_REDIS_CLUSTER=1``, Redis >= 7):
sharded pub/sub. Snapshots read from the market's slot; updates SPUBLISHed on the hash-tagged
shard channels reach the broadcaster's SSUBSCRIBE on the owning node; two broadcasters side by
side each relay everything their own clients asked for; and the real matcher, settler and
oracle publish depth, trade, orders, account and ticker notices on shard channels only. The
sharded backend itself: a slot that moves to another node is a loss (``on_lost``) and the
next subscribe finds the new owner, even after an unsubscribe whose reply a lost connection
took with it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio.cluster
import redis.client
import redis.cluster
import websockets
from redis.crc import key_slot
from support.exchange import Exchange
from support.pubsub import Heard
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for
from support.signing import Trader
from support.ws import WsClient

from common import keys
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.broadcaster.backends.sharded import ShardedBackend

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
                    client.spublish(
                        keys.shard_publish_channel(publication[0]), orjson.dumps(publication[1])
                    )
                client.hset(keys.balances(user), "USDC:t", 2_000_000)
                client.spublish(
                    keys.shard_publish_channel(f"acct:{user}"),
                    orjson.dumps({"seq": 1, "data": {"markets": []}}),
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


def _node(client: redis.cluster.RedisCluster, channel: str) -> redis.Redis:
    """A plain client on the node that owns ``channel``'s slot."""
    node = client.get_node_from_key(channel)
    return redis.Redis(host=node.host, port=node.port, decode_responses=True)


def _shard_subscribers(client: redis.cluster.RedisCluster, channel: str) -> int:
    with _node(client, channel) as owner:
        return int(owner.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])


def _classic_subscribers(cluster: RedisCluster, channel: str) -> int:
    total = 0
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
            total += int(node.pubsub_numsub(channel)[0][1])
    return total


def test_the_real_exchange_publishes_on_shard_channels_and_clients_get_every_topic(
    cluster: RedisCluster, redis_url: str
) -> None:
    client = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
    markets = list(load_markets(DEFAULT_MARKETS_FILE).markets)
    alice, bob = Trader(), Trader()
    b = bob.address.lower()
    price, qty = 3_000_000, 1_000
    deposit, notional, taker_fee = 10_000_000_000, 3_000_000_000, 1_500_000
    topics = [f"depth:{MARKET}", f"trade:{MARKET}", f"ticker:{MARKET}", f"orders:{b}"]
    with Exchange(cluster.url, DEX_REDIS_CLUSTER="1", DEX_BROKER_URL=redis_url) as exchange:
        exchange.start()
        exchange.deposit(alice.address, "BTC", qty * 10_000)
        exchange.deposit(bob.address, "USDC", deposit)
        raw: dict[str, redis.client.PubSub] = {}

        async def scenario() -> None:
            async with await WsClient.connect(exchange.ws) as ws:
                for topic in topics:
                    await ws.subscribe(topic)
                pnl = await ws.subscribe(f"pnl:{b}")
                assert pnl["data"]["margin"]["USDC"]["equity"] == str(deposit)
                # The broadcaster holds shard subscriptions on the owning nodes, no classic one.
                for topic in [*topics, f"acct:{b}"]:
                    for channel in keys.shard_channels(topic, markets):
                        assert _shard_subscribers(client, channel) == 1, channel
                    assert _classic_subscribers(cluster, keys.channel(topic)) == 0, topic
                assert len(keys.shard_channels(f"orders:{b}", markets)) == len(markets)
                # ...and every market's order changes, which it splits by user
                for market in markets:
                    channel = keys.shard_publish_channel(keys.order_changes_topic(market))
                    assert _shard_subscribers(client, channel) == 1, channel
                # Raw shard subscribers prove who publishes the settler's and oracle's notices.
                for topic in (f"acct:{b}", f"ticker:{MARKET}"):
                    channel = keys.shard_publish_channel(topic)
                    raw[topic] = _node(client, channel).pubsub()
                    raw[topic].ssubscribe(channel)
                with exchange.client() as http:
                    for trader, side in ((alice, "SELL"), (bob, "BUY")):
                        body = trader.order(MARKET, side, price, qty)
                        response = http.post("/v1/orders", json=body, params={"wait": 1})
                        assert response.status_code == 200, response.text
                        cid = body["clientOrderId"]
                depth = await ws.seen(_update_of(f"depth:{MARKET}"))
                assert depth["seq"] > 0
                trade = await ws.seen(_update_of(f"trade:{MARKET}"))
                assert trade["data"][0]["price"] == price and trade["data"][0]["qty"] == qty
                await ws.seen(
                    lambda m: (
                        m.get("topic") == f"orders:{b}"
                        and m.get("type") == "update"
                        and m["data"]["clientOrderId"] == cid
                        and m["data"]["status"] == "FILLED"
                    )
                )
                # bob's topic carries his orders only, never alice's SELL of the same call
                assert {m["data"]["userId"] for m in ws.of(f"orders:{b}", "update")} == {b}
                await ws.seen(_update_of(f"ticker:{MARKET}"))
                # The settler's account notice re-reads pnl: bob paid the notional and fee.
                await ws.seen(
                    lambda m: (
                        m.get("topic") == f"pnl:{b}"
                        and m["data"]["margin"]["USDC"]["equity"]
                        == str(deposit - notional - taker_fee)
                    ),
                    timeout=60,
                )

        try:
            asyncio.run(scenario())
            for topic, subscriber in raw.items():
                assert wait_for(lambda s=subscriber: _shard_message(s), 30), topic
        finally:
            for subscriber in raw.values():
                subscriber.close()
    client.close()


def _shard_message(subscriber: redis.client.PubSub) -> bool:
    message = subscriber.get_message(timeout=0.5)
    return message is not None and message["type"] == "smessage"


def _update_of(topic: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("topic") == topic and m.get("type") == "update"


def test_a_lost_node_connection_resets_clients_and_the_hub_resubscribes_per_slot(
    cluster: RedisCluster,
) -> None:
    client = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
    markets = list(load_markets(DEFAULT_MARKETS_FILE).markets)
    user = "0x" + "cd" * 20
    topic = f"orders:{user}"
    exchange = Exchange(cluster.url, DEX_REDIS_CLUSTER="1")
    try:
        exchange.start("broadcaster")

        async def before() -> int | None:
            ws = await WsClient.connect(exchange.ws)
            assert (await ws.subscribe(topic))["type"] == "snapshot"
            assert (await ws.subscribe(f"depth:{MARKET}"))["type"] == "snapshot"
            for port in cluster.ports:  # every node drops its pub/sub connections
                with redis.Redis(host="127.0.0.1", port=port) as node:
                    node.client_kill_filter(_type="pubsub")
            try:
                while True:
                    await asyncio.wait_for(ws.connection.recv(), 60)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

        assert asyncio.run(before()) == 1012

        async def after() -> None:
            async with await WsClient.connect(exchange.ws) as ws:
                assert (await ws.subscribe(topic))["type"] == "snapshot"
                for seq, market in enumerate(markets, start=1):
                    order = {"clientOrderId": f"c{seq}", "market": market, "status": "NEW"}
                    client.spublish(
                        keys.shard_channel(market, topic),
                        orjson.dumps({"seq": seq, "data": order}),
                    )
                for market in markets:
                    await ws.seen(
                        lambda m, mk=market: m.get("type") == "update" and m["data"]["market"] == mk
                    )
                # ...and every market's order changes, split to the user (its own shard channel)
                for seq, market in enumerate(markets, start=1):
                    order = {"clientOrderId": f"x{seq}", "userId": user, "market": market}
                    client.spublish(
                        keys.shard_publish_channel(keys.order_changes_topic(market)),
                        orjson.dumps({"seq": seq, "data": [order]}),
                    )
                for market in markets:
                    await ws.seen(
                        lambda m, mk=market: (
                            m.get("type") == "update" and m["data"]["clientOrderId"].startswith("x")
                            and m["data"]["market"] == mk
                        )
                    )  # fmt: skip

        # Each node's connection reconnects (and resets the clients) on its own next read.
        for attempt in range(5):
            try:
                asyncio.run(after())
                break
            except websockets.ConnectionClosed:
                if attempt == 4:
                    raise
        assert "same slot" not in exchange.log("broadcaster")
    finally:
        exchange.stop()
        client.close()


@contextlib.asynccontextmanager
async def _sharded(
    url: str,
) -> AsyncIterator[tuple[ShardedBackend, Heard]]:
    """A sharded backend connected to the cluster at ``url``, and what it reports."""
    client = redis.asyncio.cluster.RedisCluster.from_url(url)
    backend = ShardedBackend(client, [MARKET])
    heard = Heard()
    try:
        await backend.connect(heard)
        yield backend, heard
    finally:
        await backend.disconnect()
        await client.aclose()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _move_slot(cluster: RedisCluster, channel: str) -> int:
    """Give ``channel``'s slot (which holds no key) to another primary, telling every primary;
    return the port of its new owner."""
    slot = key_slot(channel.encode())
    nodes = {port: redis.Redis(host="127.0.0.1", port=port) for port in cluster.ports}
    try:
        ids = {
            port: node.execute_command("CLUSTER", "MYID").decode() for port, node in nodes.items()
        }
        owner = next(
            int(served[2][1])
            for served in nodes[cluster.ports[0]].execute_command("CLUSTER", "SLOTS")
            if served[0] <= slot <= served[1]
        )
        assert nodes[owner].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        target = next(port for port in cluster.ports if port != owner)
        others = [port for port in cluster.ports if port not in (target, owner)]
        for port in [target, owner, *others]:
            nodes[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return target
    finally:
        for node in nodes.values():
            node.close()


def test_a_slot_that_moves_is_a_loss_and_the_next_subscribe_finds_its_new_owner(
    cluster: RedisCluster,
) -> None:
    channel, other = "dex:ch:{slot-moves}:x", "dex:ch:{slot-stays}:x"
    assert key_slot(channel.encode()) != key_slot(other.encode())

    async def scenario() -> None:
        async with _sharded(cluster.url) as (backend, heard):
            await asyncio.wait_for(await backend.subscribe([channel, other]), 10)
            target = _move_slot(cluster, channel)
            # The old owner drops the channel by itself: a loss, heard once.
            assert await _until(lambda: heard.lost == 1), heard.lost
            # The hub's reset unsubscribes (nothing to send: the channel has no owner now) and
            # subscribes again: on the new owner, which relays its publications.
            await backend.unsubscribe([channel])
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            with redis.Redis(host="127.0.0.1", port=target) as owner:
                assert owner.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1
                assert owner.spublish(channel, "after the move") == 1
            await backend.client.spublish(other, "unmoved")
            assert await _until(lambda: len(heard.published) == 2), heard.published
            assert sorted(heard.published) == [
                (channel, b"after the move"),
                (other, b"unmoved"),
            ]
            assert heard.lost == 1

    asyncio.run(scenario())


def test_an_unsubscribe_whose_reply_died_with_its_connection_hides_no_later_slot_move(
    cluster: RedisCluster,
) -> None:
    channel = "dex:ch:{reply-lost}:x"

    async def scenario() -> None:
        async with _sharded(cluster.url) as (backend, heard):
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            reader = backend._owner[channel]
            # The SUNSUBSCRIBE is written, and its connection dropped in the same loop turn:
            # its reply is never read.
            await backend.unsubscribe([channel])
            assert reader._transport is not None
            reader._transport.abort()
            assert await _until(lambda: heard.lost == 1), "the reconnect is a loss"
            # ...and one sent as the connection goes down never reaches Redis at all.
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            assert reader._transport is not None
            reader._transport.abort()
            await backend.unsubscribe([channel])
            assert await _until(lambda: heard.lost == 2), "the second reconnect is a loss"
            # Subscribed again and confirmed, the channel's slot then moves: a loss.
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            _move_slot(cluster, channel)
            assert await _until(lambda: heard.lost == 3), heard.lost

    asyncio.run(scenario())


def test_a_subscribe_refused_by_a_node_that_lost_the_slot_is_a_loss_then_lands_on_the_owner(
    cluster: RedisCluster,
) -> None:
    channel = "dex:ch:{moved-unheard}:x"

    async def scenario() -> None:
        # The slot map is read as the backend connects...
        async with _sharded(cluster.url) as (backend, heard):
            target = _move_slot(cluster, channel)  # ...and the slot moves unseen (no channel)
            # The old owner refuses the SSUBSCRIBE (MOVED): the channel is subscribed nowhere,
            # so the PING's reply that confirms it comes with a loss.
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            assert await _until(lambda: heard.lost == 1), heard.lost
            await backend.unsubscribe([channel])
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            with redis.Redis(host="127.0.0.1", port=target) as owner:
                assert owner.spublish(channel, "relayed") == 1
            assert await _until(lambda: heard.published == [(channel, b"relayed")])
            assert heard.lost == 1

    asyncio.run(scenario())


def test_a_slot_that_moves_while_its_connection_is_down_is_found_after_the_reconnect(
    cluster: RedisCluster,
) -> None:
    channel = "dex:ch:{moved-while-down}:x"

    async def scenario() -> None:
        async with _sharded(cluster.url) as (backend, heard):
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            reader = backend._owner[channel]
            assert reader._transport is not None
            reader._transport.abort()  # the old owner's sunsubscribe goes to a closed socket
            target = _move_slot(cluster, channel)
            # The reconnect is a loss; its SSUBSCRIBE of the channel is refused (MOVED).
            assert await _until(lambda: heard.lost >= 1 and channel not in reader.channels)
            await backend.unsubscribe([channel])
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            with redis.Redis(host="127.0.0.1", port=target) as owner:
                assert owner.spublish(channel, "relayed") == 1
            assert await _until(lambda: heard.published == [(channel, b"relayed")])

    asyncio.run(scenario())


def test_the_channels_of_a_node_that_died_follow_its_slot_to_the_next_owner() -> None:
    try:
        own = RedisCluster().start()  # one of its nodes dies: not the module's cluster
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    channel = "dex:ch:{node-dies}:x"

    async def scenario() -> None:
        async with _sharded(own.url) as (backend, heard):
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            dead = backend._owner[channel].address.port
            process = own.processes[own.ports.index(dead)]
            process.kill()
            process.wait(10)
            # The survivors give the slot to one of them, as a failover would.
            survivors = [port for port in own.ports if port != dead]
            slot = key_slot(channel.encode())
            successor = redis.Redis(host="127.0.0.1", port=survivors[0])
            successor_id = successor.execute_command("CLUSTER", "MYID").decode()
            for port in survivors:
                with redis.Redis(host="127.0.0.1", port=port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", successor_id)
            # A failed reconnect looks at the slot map: the channel is held there no more.
            assert await _until(lambda: heard.lost == 1), heard.lost
            await backend.unsubscribe([channel])
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            assert successor.spublish(channel, "relayed") == 1
            successor.close()
            assert await _until(lambda: heard.published == [(channel, b"relayed")])
            assert heard.lost == 1

    try:
        asyncio.run(scenario())
    finally:
        own.stop()


def test_an_unsubscribe_that_crosses_its_slot_move_is_no_loss_and_leaves_nothing_due(
    cluster: RedisCluster,
) -> None:
    channel = "dex:ch:{crossing}:x"

    async def scenario() -> None:
        async with _sharded(cluster.url) as (backend, heard):
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            # Before the reader reads again: the slot moves (the old owner drops the channel)
            # and then the SUNSUBSCRIBE reaches it (refused: MOVED). The channel was being left
            # anyway: nothing the hub holds is lost.
            target = _move_slot(cluster, channel)
            await backend.unsubscribe([channel])
            assert await _until(lambda: backend._stale)
            assert heard.lost == 0
            await asyncio.wait_for(await backend.subscribe([channel]), 10)
            with redis.Redis(host="127.0.0.1", port=target) as owner:
                assert owner.spublish(channel, "relayed") == 1
            assert await _until(lambda: heard.published == [(channel, b"relayed")])
            # The next move of the slot is heard: no reply was left due on either connection.
            _move_slot(cluster, channel)
            assert await _until(lambda: heard.lost == 1), heard.lost

    asyncio.run(scenario())
