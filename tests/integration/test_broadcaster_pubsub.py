"""The hub over the classic backend against a real Redis, on asyncio's loop and uvloop (the
broadcaster's): a burst read in bulk arrives whole and in order (a publication larger than one
read included); a connection lost in the middle of a burst resets everyone once, loses nothing
it had delivered, delivers nothing twice, settles an add in flight, and its replacement holds
exactly the hub's channels again; a connection that stops answering is PINGed, dropped and
made again; a password-protected Redis is logged in to, one on a Unix socket reached there."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
import uvloop
from support.pubsub import until
from support.redis_server import RedisServer, RedisServerUnavailable

from common import keys
from services.broadcaster.backends import base
from services.broadcaster.backends.classic import ClassicBackend
from services.broadcaster.hub import Hub

pytestmark = pytest.mark.integration

Run = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS: dict[str, Run] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    return LOOPS[request.param]


class Sink:
    def __init__(self) -> None:
        self.received: list[Any] = []

    def on_publication(self, topic: str, payload: Any) -> None:
        self.received.append(payload)


def test_a_burst_is_read_whole_and_in_order_a_large_publication_included(
    redis_url: str, run: Run
) -> None:
    big = "x" * 1_000_000  # several reads of the socket

    async def scenario() -> list[Any]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        hub, sink = Hub(), Sink()
        await hub.start(ClassicBackend(client))
        await hub.add("trade:BURST", sink)
        pipe = client.pipeline(transaction=False)
        for seq in range(1, 3001):
            data = big if seq == 1500 else seq
            pipe.publish(keys.channel("trade:BURST"), orjson.dumps({"seq": seq, "data": data}))
        await pipe.execute()
        await until(lambda: len(sink.received) == 3000)
        await hub.stop()
        await client.aclose()
        return sink.received

    received = run(scenario())
    assert [p["seq"] for p in received] == list(range(1, 3001))
    assert received[1499]["data"] == big and received[1500]["data"] == 1501


def test_a_connection_lost_mid_burst_resets_once_and_the_new_one_holds_every_channel(
    redis_url: str, run: Run
) -> None:
    channel, late = keys.channel("trade:LOST"), keys.channel("depth:LATE")

    async def scenario() -> tuple[list[int], int, list[Any], list[Any]]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        resets: list[float] = []
        hub, before, after, late_sink = Hub(), Sink(), Sink(), Sink()
        hub.on_reset = lambda: resets.append(time.monotonic())
        await hub.start(ClassicBackend(client))
        await hub.add("trade:LOST", before)
        stop = asyncio.Event()

        sent = [0]

        async def publish() -> int:
            while not stop.is_set():
                sent[0] += 1
                await client.publish(channel, orjson.dumps({"seq": sent[0], "data": 0}))
                if sent[0] % 20 == 0:
                    await asyncio.sleep(0)
            return sent[0]

        publisher = asyncio.create_task(publish())
        await until(lambda: len(before.received) >= 200)
        in_flight = asyncio.create_task(hub.add("depth:LATE", late_sink))
        await client.client_kill_filter(_type="pubsub")
        await until(lambda: bool(resets))
        await in_flight  # settled by the loss: its client is reset with everyone
        # The new connection subscribed the channel again by itself.
        mark = sent[0]
        await until(lambda: before.received[-1]["seq"] > mark)
        stop.set()
        published = await publisher
        # As the reset's clients do: leave, come back, and the feed flows again.
        hub.remove("trade:LOST", before)
        hub.remove("depth:LATE", late_sink)
        await hub.add("trade:LOST", after)
        await hub.add("depth:LATE", late_sink)
        await client.publish(channel, orjson.dumps({"seq": published + 1, "data": 0}))
        await client.publish(late, orjson.dumps({"seq": 1, "data": 0}))
        await until(lambda: bool(after.received) and bool(late_sink.received))
        numsub = dict(await client.pubsub_numsub(channel, late))
        await asyncio.sleep(0.2)
        assert len(resets) == 1
        await hub.stop()
        await client.aclose()
        return [p["seq"] for p in before.received], published, after.received, [numsub]

    seqs, published, after, numsub = run(scenario())
    # In order and never twice; one gap at most: what was published while no connection was
    # subscribed (the reset's clients resync; the feed goes on meanwhile).
    gaps = [b for a, b in itertools.pairwise(seqs) if b != a + 1]
    assert seqs[0] == 1 and all(b > a for a, b in itertools.pairwise(seqs))
    assert len(gaps) <= 1 and seqs[-1] <= published
    assert [p["seq"] for p in after] == [published + 1]
    assert numsub == [{channel: 1, late: 1}]  # one subscription each: nothing stale, none lost


async def relayed_once(url: str, topic: str) -> list[Any]:
    """One publication on ``topic`` through a hub on the Redis at ``url``: what its client
    received."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    hub, sink = Hub(), Sink()
    await hub.start(ClassicBackend(client))
    await hub.add(topic, sink)
    await client.publish(keys.channel(topic), orjson.dumps({"seq": 1, "data": 1}))
    await until(lambda: bool(sink.received))
    await hub.stop()
    await client.aclose()
    return sink.received


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    with redis.Redis.from_url(server.url) as admin:
        admin.acl_setuser(
            "relay", enabled=True, passwords=["+s3cret"], commands=["+@all"], channels=["*"]
        )
        admin.config_set("requirepass", "s3cret")
    yield server
    server.stop()


def test_a_password_protected_redis_is_logged_in_to(locked_redis: RedisServer) -> None:
    url = f"redis://relay:s3cret@127.0.0.1:{locked_redis.port}/0"  # a user and its password

    assert uvloop.run(relayed_once(url, "trade:AUTH")) == [{"seq": 1, "data": 1}]
    with redis.Redis.from_url(url) as plain:
        assert plain.ping()


def test_a_silent_connection_is_pinged_then_dropped_and_made_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "HEALTH_CHECK_S", 0.2)

    async def scenario() -> tuple[int, list[Any]]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        resets: list[float] = []
        hub, sink = Hub(), Sink()
        hub.on_reset = lambda: resets.append(time.monotonic())
        await hub.start(ClassicBackend(client))
        await hub.add("trade:SILENT", sink)
        await asyncio.sleep(1.0)  # quiet but answering its PINGs: kept
        assert not resets
        await client.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis answers nothing
        await until(lambda: bool(resets))  # dropped after 0.4 s, made again, clients reset
        await asyncio.sleep(1.5)  # the pause is over: a connection is up and answering again
        await client.ping()
        hub.remove("trade:SILENT", sink)
        await hub.add("trade:SILENT", sink)
        await client.publish(keys.channel("trade:SILENT"), orjson.dumps({"seq": 1, "data": 1}))
        await until(lambda: bool(sink.received))
        await hub.stop()
        await client.aclose()
        return len(resets), sink.received

    resets, received = asyncio.run(asyncio.wait_for(scenario(), 30))
    # Once per connection made again: the pause outlasted a few of them.
    assert resets >= 1 and received == [{"seq": 1, "data": 1}]


def test_a_redis_on_a_unix_socket_is_reached_there(tmp_path: Any) -> None:
    path = tmp_path / "redis.sock"
    server = RedisServer(extra_args=("--unixsocket", str(path), "--unixsocketperm", "700"))
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))

    try:
        relayed = uvloop.run(relayed_once(f"unix://{path}", "trade:UNIX"))
        assert relayed == [{"seq": 1, "data": 1}]
    finally:
        server.stop()
