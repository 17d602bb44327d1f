"""The hub's view of Redis pub/sub: a small interface, and the reader both backends share.

A :class:`Backend` subscribes and unsubscribes channels and tells the :class:`Listener` that
connected it (the hub, services/broadcaster/hub.py) of each publication, each confirmed
subscription and each moment publications may have been lost. Everything else (sinks per
topic, the order of commands, waiting for confirmations, decoding, fan-out, reset) is the
hub's, written once for both backends:

- :mod:`~services.broadcaster.backends.classic`: PUBLISH / SUBSCRIBE on ``dex:ch:<topic>``,
  one connection (a single Redis, or a Redis Cluster without sharded pub/sub).
- :mod:`~services.broadcaster.backends.sharded`: SPUBLISH / SSUBSCRIBE on hash-tagged shard
  channels, one connection per node (a Redis Cluster >= 7).

common/pubsub.py decides which one a process uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection

log = logging.getLogger(__name__)

# A standing subscription on this topic keeps a connection open before any client arrives.
KEEPALIVE_TOPIC = "_"
RETRY_READ_S = 0.5


class Listener(Protocol):
    """What a backend reports to (the hub)."""

    def on_published(self, channel: str, data: Any) -> None:
        """One publication on ``channel``, undecoded."""

    def on_subscribed(self, channel: str) -> None:
        """Redis confirmed the subscription of ``channel`` (in command order per channel)."""

    def on_lost(self) -> None:
        """Publications may have been lost (a reconnect, a slot that moved)."""


class Backend(ABC):
    """One flavour of Redis pub/sub, seen as channels."""

    @abstractmethod
    def channels(self, topic: str) -> list[str]:
        """The channels that carry ``topic``."""

    @abstractmethod
    def topic(self, channel: str) -> str:
        """The topic ``channel`` carries."""

    @abstractmethod
    async def connect(self, listener: Listener) -> None:
        """Open the standing subscription and start reporting to ``listener``."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Stop reading and close every connection."""

    @abstractmethod
    async def subscribe(self, channels: list[str]) -> None:
        """Send the subscription of ``channels``; each is confirmed through the listener."""

    @abstractmethod
    async def unsubscribe(self, channels: list[str]) -> None:
        """Send the unsubscription of ``channels``."""


class Replies(NamedTuple):
    """The ``type`` of a publication and of the two confirmations in one flavour."""

    message: str
    subscribe: str
    unsubscribe: str


CLASSIC = Replies("message", "subscribe", "unsubscribe")
SHARDED = Replies("smessage", "ssubscribe", "sunsubscribe")


class Reader:
    """Reads one pub/sub connection until stopped and reports what it reads.

    redis-py reconnects (and re-subscribes) by itself, possibly inside a read that then
    succeeds: a connect callback on the connection is the one sure sign that publications may
    be lost. Where there is no connection to watch, a read that succeeds after failing is.
    ``on_unsubscribed`` gets each unsubscribe confirmation (none: they are ignored).
    """

    def __init__(
        self,
        pubsub: PubSub,
        name: str,
        replies: Replies,
        listener: Listener,
        on_unsubscribed: Callable[[str], None] | None = None,
    ) -> None:
        self.pubsub = pubsub
        self.name = name
        self.replies = replies
        self.listener = listener
        self.on_unsubscribed = on_unsubscribed
        connection: AbstractConnection | None = pubsub.connection
        self._watching = connection is not None
        if connection is not None:
            # redis-py keeps a weak reference to this method: the reader lives as long as
            # the backend that holds it.
            connection.register_connect_callback(self._reconnected)
        self.task = asyncio.create_task(self._read(), name=f"hub-pump-{name}")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _read(self) -> None:
        pubsub, listener, replies = self.pubsub, self.listener, self.replies
        failed = False
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failed:
                    log.exception("broadcaster: pub/sub read on %s failed; reconnecting", self.name)
                failed = True
                await asyncio.sleep(RETRY_READ_S)
                continue
            if failed:
                failed = False
                if not self._watching:
                    listener.on_lost()
            if message is None:
                continue
            kind = message.get("type")
            channel = message.get("channel")
            if not isinstance(channel, str):
                continue
            if kind == replies.message:
                listener.on_published(channel, message["data"])
            elif kind == replies.subscribe:
                listener.on_subscribed(channel)
            elif kind == replies.unsubscribe and self.on_unsubscribed is not None:
                self.on_unsubscribed(channel)

    def _reconnected(self, _connection: Any) -> None:
        asyncio.get_running_loop().call_soon(self.listener.on_lost)
