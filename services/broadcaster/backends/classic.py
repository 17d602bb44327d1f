"""Classic pub/sub: PUBLISH / SUBSCRIBE on ``dex:ch:<topic>``, one connection.

The backend of a single Redis, and of a Redis Cluster whose servers have no sharded pub/sub
(before 7.0), where a classic publication reaches every node, so the one connection (on
whichever node the client picks) hears every channel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any

from common import keys
from services.broadcaster.backends.base import (
    CLASSIC,
    KEEPALIVE_TOPIC,
    Backend,
    Listener,
    Reader,
)


class ClassicBackend(Backend):
    def __init__(self, client: Any) -> None:
        self.client = client  # an asyncio Redis (or RedisCluster) client
        self.pubsub = client.pubsub()
        self._prefix = keys.channel("")
        self._prefix_length = len(self._prefix)
        self._reader: Reader | None = None

    def channels(self, topic: str) -> list[str]:
        return [self._prefix + topic]

    def topic(self, channel: str) -> str:
        return channel[self._prefix_length :]

    async def connect(self, listener: Listener) -> None:
        await self.pubsub.subscribe(keys.channel(KEEPALIVE_TOPIC))
        self._reader = Reader(self.pubsub, "redis", CLASSIC, listener)

    async def disconnect(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()

    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        await self.pubsub.subscribe(*channels)
        if self._reader is None:
            raise RuntimeError("the classic pub/sub backend subscribes only once connected")
        return await self._reader.confirmation()

    async def unsubscribe(self, channels: list[str]) -> None:
        await self.pubsub.unsubscribe(*channels)
