"""Sharded pub/sub on a Redis Cluster >= 7: SSUBSCRIBE on each channel's owning node.

A topic maps to one shard channel (keys.shard_channels), or for ``orders:<user>`` to one per
market (the matcher publishes it from each market's slot). A shard publication is delivered
only by the node that owns the channel's slot, so the backend keeps one plain pub/sub
connection per node, found through the cluster client's slot map, and SSUBSCRIBEs each
channel on its owner, one command per slot (Redis refuses an SSUBSCRIBE across slots), then
a PING on each connection it used: their replies confirm the subscribe (base.Reader).

A ``sunsubscribe`` nobody asked for means the slot moved to another node: publications may
be lost, so the listener hears ``on_lost`` (as on a reconnect of any node's connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from common import keys
from services.broadcaster.backends.base import (
    KEEPALIVE_TOPIC,
    SHARDED,
    Backend,
    Listener,
    Reader,
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
    """A node's pub/sub connection that re-SSUBSCRIBEs after a reconnect one slot at a time.

    redis-py's ``PubSub.on_connect`` re-sends every shard channel in one SSUBSCRIBE, which
    Redis refuses across slots, and redis-py offers no public hook for the re-subscription:
    this override (of ``on_connect``, reading ``shard_channels`` and
    ``pending_unsubscribe_shard_channels``) is the one place the broadcaster relies on
    redis-py's pub/sub internals, which is why pyproject.toml bounds redis-py's version.
    """

    async def on_connect(self, connection: Any) -> None:
        self.pending_unsubscribe_shard_channels.clear()
        by_slot: dict[int, list[Any]] = {}
        for channel in list(self.shard_channels):
            name = channel if isinstance(channel, bytes) else str(channel).encode()
            by_slot.setdefault(key_slot(name), []).append(channel)
        for group in by_slot.values():
            await self.ssubscribe(*group)


@dataclass
class _Link:
    """One node's pub/sub connection, and its reader once it has subscribed."""

    name: str
    client: Any
    pubsub: PubSub
    reader: Reader | None = None


class ShardedBackend(Backend):
    def __init__(self, client: Any, markets: list[str]) -> None:
        self.client = client  # the asyncio RedisCluster client (slot map)
        self.markets = markets
        self._listener: Listener | None = None
        self._leaving: Counter[str] = Counter()  # channel -> SUNSUBSCRIBE replies expected
        self._owner: dict[str, _Link] = {}  # subscribed channel -> the link that carries it
        self._links: dict[str, _Link] = {}  # node name -> link

    def channels(self, topic: str) -> list[str]:
        return keys.shard_channels(topic, self.markets)

    def topic(self, channel: str) -> str:
        return keys.shard_channel_topic(channel)

    async def connect(self, listener: Listener) -> None:
        self._listener = listener
        await self.client.initialize()
        await self.subscribe([keys.shard_publish_channel(KEEPALIVE_TOPIC)])

    async def disconnect(self) -> None:
        for link in self._links.values():
            if link.reader is not None:
                await link.reader.stop()
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.pubsub.aclose()
            with contextlib.suppress(Exception):
                await link.client.aclose()

    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        """SSUBSCRIBE ``channels``, each on the node that owns its slot, then confirm them
        with a PING on each node's connection."""
        readers: list[Reader] = []
        for link, group in self._by_slot(channels, self._link_for):
            await link.pubsub.ssubscribe(*group)
            for channel in group:
                self._owner[channel] = link
            if link.reader is None:
                link.reader = Reader(
                    link.pubsub, link.name, SHARDED, self._started(), self._unsubscribed
                )
            if link.reader not in readers:
                readers.append(link.reader)
        return asyncio.gather(*[await reader.confirmation() for reader in readers])

    async def unsubscribe(self, channels: list[str]) -> None:
        """SUNSUBSCRIBE ``channels``, each on the node that carried it when subscribed."""
        for link, group in self._by_slot(channels, self._owner.get):
            for channel in group:
                self._leaving[channel] += 1
                self._owner.pop(channel, None)
            await link.pubsub.sunsubscribe(*group)

    def _by_slot(
        self, channels: list[str], link_of: Callable[[str], _Link | None]
    ) -> list[tuple[_Link, list[str]]]:
        """``channels`` grouped by link and slot (one command each, as Redis requires);
        channels ``link_of`` has no link for are left out."""
        groups: dict[tuple[str, int], tuple[_Link, list[str]]] = {}
        for channel in channels:
            link = link_of(channel)
            if link is None:
                continue
            slot = self.client.keyslot(channel)
            groups.setdefault((link.name, slot), (link, []))[1].append(channel)
        return list(groups.values())

    def _link_for(self, channel: str) -> _Link:
        node = self.client.get_node_from_key(channel)
        link = self._links.get(node.name)
        if link is None:
            given = node.connection_kwargs or {}
            options = {k: v for k, v in given.items() if k in _NODE_OPTIONS}
            options.setdefault("decode_responses", True)
            client = aioredis.Redis(host=node.host, port=node.port, **options)
            pubsub = _NodePubSub(client.connection_pool)
            link = self._links[node.name] = _Link(node.name, client, pubsub)
        return link

    def _started(self) -> Listener:
        if self._listener is None:
            raise RuntimeError("the sharded pub/sub backend subscribes only once connected")
        return self._listener

    def _unsubscribed(self, channel: str) -> None:
        if self._leaving[channel] > 0:
            self._leaving[channel] -= 1
            if not self._leaving[channel]:
                del self._leaving[channel]
            return
        # Redis drops the shard channels of a slot that moved to another node.
        log.warning("broadcaster: %s was unsubscribed by the server (slot moved)", channel)
        self._owner.pop(channel, None)
        self._started().on_lost()
