"""One Redis pub/sub connection per process, fanned out to the subscribed WebSocket clients.

A topic's channel is subscribed when its first client arrives and dropped with its last.
Each client has a bounded queue; a client that lets it fill is closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from common import keys
from common.events import loads

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.listeners: dict[str, set[Any]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        # A placeholder subscription keeps the connection open before any client arrives.
        await self.pubsub.subscribe(keys.channel("_"))
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()

    async def add(self, topic: str, listener: Any) -> None:
        """Register ``listener`` for ``topic``; returns once the channel is subscribed."""
        async with self._lock:
            first = not self.listeners[topic]
            self.listeners[topic].add(listener)
            if first:
                await self.pubsub.subscribe(keys.channel(topic))

    async def remove(self, topic: str, listener: Any) -> None:
        async with self._lock:
            members = self.listeners.get(topic)
            if not members:
                return
            members.discard(listener)
            if not members:
                del self.listeners[topic]
                await self.pubsub.unsubscribe(keys.channel(topic))

    async def _pump(self) -> None:
        prefix = keys.channel("")
        while True:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("broadcaster: pub/sub read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            topic = message["channel"].removeprefix(prefix)
            payload = loads(message["data"])
            for listener in list(self.listeners.get(topic, ())):
                listener.deliver(topic, payload)
