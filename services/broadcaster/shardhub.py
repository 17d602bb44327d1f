"""The hub on a Redis Cluster with sharded pub/sub: SSUBSCRIBE per node, fanned out to sinks.

Same contract as :class:`services.broadcaster.hub.Hub` (``add`` / ``remove`` / ``subscribed``,
``on_reset``, ``on_message``), on shard channels (keys.shard_channels): a topic maps to one
shard channel, or for ``orders:<user>`` to one per market (the matcher publishes it from each
market's slot). A shard publication is delivered only by the node that owns the channel's
slot, so the hub keeps one plain pub/sub connection per node, found through the cluster
client's slot map, and SSUBSCRIBEs each channel on its owner.

- ``add`` returns once every channel of the topic is confirmed (``ssubscribe`` replies), so a
  snapshot read after it can miss no publication.
- Subscribe and unsubscribe commands go out in the order they were asked for, through one
  writer task; one connection carries a given channel, so its replies come back in order.
- A reconnect of any node's connection (redis-py re-SSUBSCRIBEs by itself), or a
  ``sunsubscribe`` nobody asked for (the slot moved to another node), calls ``on_reset``:
  publications may be lost, everyone resyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from common import keys
from common.events import loads
from services.broadcaster.hub import (
    KEEPALIVE_TOPIC,
    Hub,
    TopicSinks,
)

log = logging.getLogger(__name__)

# Connection options of a node's client taken over from the cluster client's node.
_NODE_OPTIONS = (
    "username",
    "password",
    "db",
    "decode_responses",
    "encoding",
    "encoding_errors",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "ssl",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "client_name",
)


class _NodePubSub(PubSub):
    """A node's pub/sub connection that re-SSUBSCRIBEs after a reconnect one slot at a time:
    Redis refuses an SSUBSCRIBE across slots, redis-py would send every channel in one."""

    async def on_connect(self, connection: Any) -> None:
        self.pending_unsubscribe_shard_channels.clear()
        by_slot: dict[int, list[Any]] = {}
        for channel in list(self.shard_channels):
            name = channel if isinstance(channel, bytes) else str(channel).encode()
            by_slot.setdefault(key_slot(name), []).append(channel)
        for group in by_slot.values():
            await self.ssubscribe(*group)


@dataclass
class _Waiter:
    """``add`` of one topic, waiting for the confirmation of each of its channels."""

    future: asyncio.Future[None]
    remaining: int


@dataclass
class _Link:
    """One node's pub/sub connection."""

    name: str
    client: Any
    pubsub: Any
    task: asyncio.Task[None] | None = None
    channels: set[str] = field(default_factory=set)


class ShardedHub(TopicSinks):
    def __init__(
        self,
        client: Any,
        markets: list[str],
        on_reset: Callable[[], None] | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client  # the asyncio RedisCluster client (slot map)
        self.markets = markets
        self.on_reset = on_reset
        self.on_message = on_message
        self._waiting: dict[str, deque[_Waiter]] = {}  # channel -> adds waiting for it
        self._leaving: Counter[str] = Counter()  # channel -> SUNSUBSCRIBE replies expected
        self._owner: dict[str, _Link] = {}  # subscribed channel -> the link that carries it
        self._links: dict[str, _Link] = {}  # node name -> link
        self._writer_task: asyncio.Task[None] | None = None

    def channels(self, topic: str) -> list[str]:
        """The shard channels that carry ``topic``."""
        return keys.shard_channels(topic, self.markets)

    async def start(self) -> None:
        await self.client.initialize()
        # A standing subscription keeps one connection open before any client arrives.
        await self._send("subscribe", [keys.shard_publish_channel(KEEPALIVE_TOPIC)])
        self._writer_task = asyncio.create_task(self._writer(), name="hub-writer")

    async def stop(self) -> None:
        tasks = [self._writer_task] + [link.task for link in self._links.values()]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.pubsub.aclose()
            with contextlib.suppress(Exception):
                await link.client.aclose()

    def _expect_confirmation(self, topic: str, ready: asyncio.Future[None]) -> None:
        # ``ready`` resolves once every shard channel of the topic is confirmed; confirmations
        # come back in command order, so each add waits for its own.
        channels = self.channels(topic)
        waiter = _Waiter(ready, len(channels))
        for channel in channels:
            self._waiting.setdefault(channel, deque()).append(waiter)

    # -- commands ------------------------------------------------------------------------
    async def _writer(self) -> None:
        while True:
            action, batch = await self._next_batch()
            channels = [c for t in batch for c in self.channels(t)]
            try:
                await self._send(action, channels)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("broadcaster: %s %s failed", action, channels)
                if action == "subscribe":
                    for channel in channels:
                        self._fail(channel, exc)

    async def _send(self, action: str, channels: list[str]) -> None:
        """SSUBSCRIBE / SUNSUBSCRIBE ``channels``, each on the node that owns (or owned,
        when it was subscribed) its slot: one command per slot, as Redis requires."""
        by_slot: dict[tuple[str, int], tuple[_Link, list[str]]] = {}
        for channel in channels:
            if action == "subscribe":
                link = self._link_for(channel)
            else:
                owner = self._owner.get(channel)
                if owner is None:
                    continue
                link = owner
            slot = self.client.keyslot(channel)
            by_slot.setdefault((link.name, slot), (link, []))[1].append(channel)
        for link, group in by_slot.values():
            if action == "subscribe":
                await link.pubsub.ssubscribe(*group)
                for channel in group:
                    self._owner[channel] = link
                    link.channels.add(channel)
                if link.task is None:
                    self._watch(link)
            else:
                for channel in group:
                    self._leaving[channel] += 1
                    self._owner.pop(channel, None)
                    link.channels.discard(channel)
                await link.pubsub.sunsubscribe(*group)

    def _link_for(self, channel: str) -> _Link:
        node = self.client.get_node_from_key(channel)
        link = self._links.get(node.name)
        if link is None:
            given = getattr(node, "connection_kwargs", {}) or {}
            options = {k: v for k, v in given.items() if k in _NODE_OPTIONS}
            options.setdefault("decode_responses", True)
            client = aioredis.Redis(host=node.host, port=node.port, **options)
            pubsub = _NodePubSub(client.connection_pool)
            link = self._links[node.name] = _Link(node.name, client, pubsub)
        return link

    def _watch(self, link: _Link) -> None:
        """After the link's first SSUBSCRIBE: read it, and hear about its reconnects."""
        connection = getattr(link.pubsub, "connection", None)
        if connection is not None:
            connection.register_connect_callback(self._reconnected)
        link.task = asyncio.create_task(self._pump(link), name=f"hub-pump-{link.name}")

    # -- confirmations -------------------------------------------------------------------
    def _fail(self, channel: str, exc: Exception) -> None:
        waiting = self._waiting.get(channel)
        if waiting:
            waiter = waiting.popleft()
            if not waiting:
                del self._waiting[channel]
            if not waiter.future.done():
                waiter.future.set_exception(exc)

    def _confirm(self, channel: str) -> None:
        waiting = self._waiting.get(channel)
        if waiting:
            waiter = waiting.popleft()
            if not waiting:
                del self._waiting[channel]
            waiter.remaining -= 1
            if waiter.remaining <= 0 and not waiter.future.done():
                waiter.future.set_result(None)

    def _unsubscribed(self, channel: str) -> None:
        if self._leaving[channel] > 0:
            self._leaving[channel] -= 1
            if not self._leaving[channel]:
                del self._leaving[channel]
            return
        # Redis drops the shard channels of a slot that moved to another node.
        log.warning("broadcaster: %s was unsubscribed by the server (slot moved)", channel)
        link = self._owner.pop(channel, None)
        if link is not None:
            link.channels.discard(channel)
        self._reset()

    # -- reading -------------------------------------------------------------------------
    async def _pump(self, link: _Link) -> None:
        failed = False
        while True:
            try:
                message = await link.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failed:
                    log.exception("broadcaster: pub/sub read on %s failed; reconnecting", link.name)
                failed = True
                await asyncio.sleep(0.5)
                continue
            failed = False
            if message is None:
                continue
            kind = message.get("type")
            channel = message.get("channel")
            if not isinstance(channel, str):
                continue
            if kind == "smessage":
                self._relay(channel, message["data"])
            elif kind == "ssubscribe":
                self._confirm(channel)
            elif kind == "sunsubscribe":
                self._unsubscribed(channel)

    def _relay(self, channel: str, data: Any) -> None:
        topic = keys.shard_channel_topic(channel)
        if self.on_message is not None:
            self.on_message(topic)
        sinks = self.sinks.get(topic)
        if not sinks:
            return
        try:
            payload = loads(data)
        except ValueError:
            log.error("broadcaster: %s carried non-JSON %r", channel, data)
            return
        for sink in list(sinks):
            try:
                sink.on_publication(topic, payload)
            except Exception:
                log.exception("broadcaster: relaying %s failed", channel)

    def _reconnected(self, _connection: Any) -> None:
        asyncio.get_running_loop().call_soon(self._reset)

    def _reset(self) -> None:
        """A connection was lost (or a slot moved): publications may be missing, so everyone
        must resync. Pending confirmations are settled."""
        for waiting in self._waiting.values():
            for waiter in waiting:
                if not waiter.future.done():
                    waiter.future.set_result(None)
        self._waiting.clear()
        if self.on_reset is not None:
            self.on_reset()


AnyHub: TypeAlias = "Hub | ShardedHub"
