"""The hub's view of Redis pub/sub: a small interface, and the reader both backends share.

A :class:`Backend` subscribes and unsubscribes channels, hands back for each subscribe what
Redis will confirm it by, and tells the :class:`Listener` that connected it (the hub,
services/broadcaster/hub.py) of each publication and each moment publications may have been
lost. Everything else (sinks per topic, the order of commands, decoding, fan-out, reset) is
the hub's, written once for both backends:

- :mod:`~services.broadcaster.backends.classic`: PUBLISH / SUBSCRIBE on ``dex:ch:<topic>``,
  one connection (a single Redis, or a Redis Cluster without sharded pub/sub).
- :mod:`~services.broadcaster.backends.sharded`: SPUBLISH / SSUBSCRIBE on hash-tagged shard
  channels, one connection per node (a Redis Cluster >= 7).

common/pubsub.py decides which one a process uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
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
    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        """Send the subscription of ``channels``; return what is done once Redis has taken
        them, or once a connection that carries them was lost (the listener hears that)."""

    @abstractmethod
    async def unsubscribe(self, channels: list[str]) -> None:
        """Send the unsubscription of ``channels``."""


class Replies(NamedTuple):
    """The ``type`` of a publication and of an unsubscribe confirmation in one flavour."""

    message: str
    unsubscribe: str


CLASSIC = Replies("message", "unsubscribe")
SHARDED = Replies("smessage", "sunsubscribe")


class Reader:
    """Reads one pub/sub connection until stopped and reports what it reads.

    redis-py reconnects (and re-subscribes) by itself, possibly inside a read that then
    succeeds: a connect callback on the connection is the one sure sign that publications may
    be lost. Where there is no connection to watch, a read that succeeds after failing is.
    ``on_unsubscribed`` gets each unsubscribe confirmation (none: they are ignored).

    A subscribe is confirmed by :meth:`confirmation`: a PING with a token of its own, sent
    after the subscribe on the same connection. Its reply proves Redis has taken every command
    sent before it on that connection. Subscribe replies cannot: redis-py's re-subscription
    after a reconnect sends some nobody asked for, and a command it re-sends after a failed
    write answers on the new connection too, so counting them would confirm a later subscribe
    that Redis has not taken yet (an unsubscribe may still lie between). A token is never
    reused; the ones outstanding when the connection is replaced are settled, as their replies
    are lost (and the listener hears ``on_lost``).
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
        self._tokens = itertools.count(1)
        self._confirming: dict[str, asyncio.Future[None]] = {}  # PING token -> its waiter
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
        self._settle()

    async def confirmation(self) -> asyncio.Future[None]:
        """Send a PING after what was sent so far; the future is done when it comes back (or
        when the connection is replaced before)."""
        token = f"hub-confirm-{next(self._tokens)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirming[token] = future
        try:
            await self.pubsub.ping(token)
        except BaseException:
            self._confirming.pop(token, None)
            raise
        return future

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
                    self._settle()
                    listener.on_lost()
            if message is None:
                continue
            kind = message.get("type")
            if kind == "pong":
                self._confirmed(message.get("data"))
                continue
            channel = message.get("channel")
            if not isinstance(channel, str):
                continue
            if kind == replies.message:
                listener.on_published(channel, message["data"])
            elif kind == replies.unsubscribe and self.on_unsubscribed is not None:
                self.on_unsubscribed(channel)

    def _confirmed(self, token: Any) -> None:
        if isinstance(token, bytes):
            token = token.decode(errors="replace")
        future = self._confirming.pop(token, None) if isinstance(token, str) else None
        if future is not None and not future.done():
            future.set_result(None)

    def _settle(self) -> None:
        """Settle every confirmation outstanding: its PING's reply will not come."""
        confirming, self._confirming = self._confirming, {}
        for future in confirming.values():
            if not future.done():
                future.set_result(None)

    def _reconnected(self, _connection: Any) -> None:
        self._settle()
        asyncio.get_running_loop().call_soon(self.listener.on_lost)
