"""A Redis restart under the broadcaster: publications may have been lost with the pub/sub
connection, so every client is closed with 1012 and, reconnecting, gets a fresh snapshot."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis
import websockets
from support.exchange import Exchange
from support.redis_server import RedisServer, RedisServerUnavailable
from support.ws import WsClient

from common import keys

pytestmark = pytest.mark.integration

TOPIC = "trade:BTC-USDC"


def test_clients_are_asked_to_resync_after_redis_restarts() -> None:
    server = RedisServer()
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    exchange = Exchange(server.url)
    try:
        exchange.start("broadcaster")

        async def before() -> int | None:
            ws = await WsClient.connect(exchange.ws)
            assert (await ws.subscribe(TOPIC))["type"] == "snapshot"
            server.stop()
            restarted = RedisServer(port=server.port)
            restarted.start()
            server.proc, server._tmp = restarted.proc, restarted._tmp
            try:
                while True:
                    await asyncio.wait_for(ws.connection.recv(), 60)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

        assert asyncio.run(before()) == 1012

        async def after() -> list[int]:
            async with await WsClient.connect(exchange.ws) as ws:
                snapshot = await ws.subscribe(TOPIC)
                assert snapshot.get("seq") == 0, snapshot
                with redis.Redis.from_url(server.url) as r:
                    r.publish(keys.channel(TOPIC), orjson.dumps({"seq": 1, "data": [{"seq": 1}]}))
                update = await ws.seen(lambda m: m.get("type") == "update")
                return [update["seq"]]

        assert asyncio.run(after()) == [1]
    finally:
        exchange.stop()
        server.stop()
