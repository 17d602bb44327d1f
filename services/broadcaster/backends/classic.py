"""Classic pub/sub: PUBLISH / SUBSCRIBE on ``dex:ch:<topic>``, one connection.

The backend of a single Redis, and of a Redis Cluster whose servers have no sharded pub/sub
(before 7.0), where a classic publication reaches every node, so the one connection (on
the cluster client's default node) hears every channel.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from common import keys
from services.broadcaster.backends.base import (
    CLASSIC,
    KEEPALIVE_TOPIC,
    Address,
    Backend,
    Listener,
    Reader,
)


class ClassicBackend(Backend):
    def __init__(self, client: Any) -> None:
        self.client = client  # an asyncio Redis (or RedisCluster) client: where to connect
        self._prefix = keys.channel("")
        self._prefix_length = len(self._prefix)
        self._reader: Reader | None = None

    def channels(self, topic: str) -> list[str]:
        return [self._prefix + topic]

    def topic(self, channel: str) -> str:
        return channel[self._prefix_length :]

    async def connect(self, listener: Listener) -> None:
        self._reader = Reader(await self._address(), "redis", CLASSIC, listener)
        await self._reader.connected()
        self._reader.subscribe([keys.channel(KEEPALIVE_TOPIC)])

    async def _address(self) -> Address:
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            return Address.of_pool(pool)
        await self.client.initialize()  # a cluster: its default node
        return Address.of_node(self.client.get_default_node())

    async def disconnect(self) -> None:
        if self._reader is not None:
            await self._reader.stop()

    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        reader = self._started()
        reader.subscribe(channels)
        return reader.confirmation()

    async def unsubscribe(self, channels: list[str]) -> None:
        self._started().unsubscribe(channels)

    def _started(self) -> Reader:
        if self._reader is None:
            raise RuntimeError("the classic pub/sub backend subscribes only once connected")
        return self._reader
