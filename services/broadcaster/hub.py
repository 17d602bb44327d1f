"""One Redis pub/sub connection per process, fanned out to in-process sinks.

A channel is subscribed when its first sink arrives and dropped with its last. ``add``
returns only once Redis has confirmed the SUBSCRIBE, so a snapshot read after it can miss no
publication. Subscribe and unsubscribe commands go out in the order they were asked for,
through one writer task, so a quick unsubscribe + subscribe never leaves a channel dropped.

Classic PUBLISH/SUBSCRIBE on ``dex:ch:<topic>``: the hub of a single Redis, and of a Redis
Cluster whose servers have no sharded pub/sub (before 7.0), where a classic publication reaches
every node, so the one connection (on whichever node the client picks) hears every channel. On
a cluster of Redis >= 7 the publishers SPUBLISH on hash-tagged shard channels instead and the
broadcaster uses :class:`services.broadcaster.shardhub.ShardedHub` (one connection per node,
SSUBSCRIBE on each channel's owner) with the same contract (common/pubsub.py decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from common import keys
from common.events import loads

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0
KEEPALIVE_TOPIC = "_"


class Sink(Protocol):
    def on_publication(self, topic: str, payload: Any) -> None:
        """Handle one decoded publication of ``topic`` (never blocks)."""


class TopicSinks:
    """What both hubs keep per topic: its sinks, the future of its live subscription, and the
    ordered queue of subscribe / unsubscribe commands for the writer task."""

    def __init__(self) -> None:
        self.sinks: dict[str, set[Sink]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def subscribed(self, topic: str) -> bool:
        return topic in self.sinks

    async def add(self, topic: str, sink: Sink) -> None:
        """Register ``sink`` for ``topic``; return once the topic's subscription is live."""
        sinks = self.sinks.get(topic)
        if sinks is None:
            sinks = self.sinks[topic] = set()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready[topic] = ready
            self._expect_confirmation(topic, ready)
            self._commands.put_nowait(("subscribe", topic))
        sinks.add(sink)
        await asyncio.wait_for(asyncio.shield(self._ready[topic]), SUBSCRIBE_TIMEOUT_S)

    def _expect_confirmation(self, topic: str, ready: asyncio.Future[None]) -> None:
        """Arrange for ``ready`` to be resolved when Redis confirms ``topic``'s subscription."""
        raise NotImplementedError

    def remove(self, topic: str, sink: Sink) -> None:
        sinks = self.sinks.get(topic)
        if sinks is None:
            return
        sinks.discard(sink)
        if not sinks:
            del self.sinks[topic]
            del self._ready[topic]
            self._commands.put_nowait(("unsubscribe", topic))

    async def _next_batch(self) -> tuple[str, list[str]]:
        """The next command's action and topics, with what queued up meanwhile behind it
        while the action stays the same (sent as one command)."""
        action, topic = await self._commands.get()
        batch = [topic]
        while not self._commands.empty():
            next_action, next_topic = self._commands._queue[0]  # type: ignore[attr-defined]
            if next_action != action:
                break
            self._commands.get_nowait()
            batch.append(next_topic)
        return action, batch


class Hub(TopicSinks):
    def __init__(
        self,
        client: Any,
        on_reset: Callable[[], None] | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.on_message = on_message
        self.pubsub = client.pubsub()
        self.on_reset = on_reset
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._prefix = keys.channel("")
        self._watching_reconnects = False

    async def start(self) -> None:
        # A standing subscription keeps the connection open before any client arrives.
        await self.pubsub.subscribe(keys.channel(KEEPALIVE_TOPIC))
        # redis-py reconnects (and re-subscribes) by itself, possibly inside a read that then
        # succeeds: a connect callback is the one sure sign that publications may be lost.
        connection = getattr(self.pubsub, "connection", None)
        if connection is not None:
            connection.register_connect_callback(self._reconnected)
            self._watching_reconnects = True
        self._tasks = [
            asyncio.create_task(self._pump(), name="hub-pump"),
            asyncio.create_task(self._writer(), name="hub-writer"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()

    def _expect_confirmation(self, topic: str, ready: asyncio.Future[None]) -> None:
        # one SUBSCRIBE confirmation per channel, in command order
        self._confirmations.setdefault(topic, deque()).append(ready)

    async def _writer(self) -> None:
        while True:
            action, batch = await self._next_batch()
            channels = [self._prefix + t for t in batch]
            try:
                if action == "subscribe":
                    await self.pubsub.subscribe(*channels)
                else:
                    await self.pubsub.unsubscribe(*channels)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("broadcaster: %s %s failed", action, channels)
                if action == "subscribe":
                    for t in batch:
                        self._fail_confirmation(t, exc)

    def _fail_confirmation(self, topic: str, exc: Exception) -> None:
        waiting = self._confirmations.get(topic)
        if waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def _confirm(self, topic: str) -> None:
        waiting = self._confirmations.get(topic)
        if waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_result(None)
            if not waiting:
                del self._confirmations[topic]

    async def _pump(self) -> None:
        prefix_length = len(self._prefix)
        failed = False
        while True:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failed:
                    log.exception("broadcaster: pub/sub read failed; reconnecting")
                failed = True
                await asyncio.sleep(0.5)
                continue
            if failed:
                failed = False
                if not self._watching_reconnects:
                    self._reset()
            if message is None:
                continue
            kind = message.get("type")
            channel = message.get("channel")
            if not isinstance(channel, str):
                continue
            topic = channel[prefix_length:]
            if kind == "message":
                if self.on_message is not None:
                    self.on_message(topic)
                sinks = self.sinks.get(topic)
                if not sinks:
                    continue
                try:
                    payload = loads(message["data"])
                except ValueError:
                    log.error("broadcaster: %s carried non-JSON %r", channel, message["data"])
                    continue
                for sink in list(sinks):
                    try:
                        sink.on_publication(topic, payload)
                    except Exception:
                        log.exception("broadcaster: relaying %s failed", channel)
            elif kind == "subscribe":
                self._confirm(topic)

    def _reconnected(self, _connection: Any) -> None:
        asyncio.get_running_loop().call_soon(self._reset)

    def _reset(self) -> None:
        """The connection was lost: publications may be missing, so everyone must resync.

        redis-py re-subscribes every channel on reconnect; pending confirmations are settled.
        """
        for waiting in self._confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._confirmations.clear()
        if self.on_reset is not None:
            self.on_reset()
