"""Sharded pub/sub on a Redis Cluster >= 7: SSUBSCRIBE on each channel's owning node.

A topic maps to one shard channel (keys.shard_channels), or for ``orders:<user>`` to one per
market (the matcher publishes it from each market's slot). A shard publication is delivered
only by the node that owns the channel's slot, so the backend keeps one pub/sub
connection per node (a base.Reader), found through the cluster client's slot map, and
SSUBSCRIBEs each channel on its owner, one command per slot (Redis refuses an SSUBSCRIBE
across slots, so a new connection subscribes again slot by slot too), then a PING on each
connection it used: their replies confirm the subscribe (base.Reader).

A slot can move to another node. Its old owner then drops its shard channels, with a
``sunsubscribe`` nobody asked for (the reader tells it from the replies to its own
SUNSUBSCRIBEs, counted per connection, base.Reader), and refuses a later SSUBSCRIBE of the
slot with ``MOVED`` (the slot map was older than the move, or the connection that would have
heard the ``sunsubscribe`` was lost). Either way, as on a reconnect of any node's connection,
publications may be lost: the listener hears ``on_lost``, the channels are no longer held
there, and the next subscribe first reads the cluster's slot map again, so the channels go to
their new owner. A node that cannot be reached is asked about in the slot map at each failed
attempt to connect to it: once its channels' slots are served by other nodes (a failover, or
slots given away), it holds them no more and that is a loss too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError, SlotNotCoveredError

from common import keys
from services.broadcaster.backends.base import (
    KEEPALIVE_TOPIC,
    SHARDED,
    Address,
    Backend,
    Listener,
    Reader,
)

log = logging.getLogger(__name__)


def per_slot(channels: Iterable[str]) -> list[list[str]]:
    """``channels`` grouped by slot: Redis refuses an SSUBSCRIBE across slots."""
    groups: dict[int, list[str]] = {}
    for channel in sorted(channels):
        groups.setdefault(key_slot(channel.encode()), []).append(channel)
    return list(groups.values())


class _Relay:
    """What each node's reader reports to: publications straight to the listener, losses
    through the backend (its slot map may be out of date)."""

    def __init__(self, listener: Listener, on_lost: Callable[[], None]) -> None:
        self.on_published = listener.on_published
        self.on_lost = on_lost


class ShardedBackend(Backend):
    def __init__(self, client: Any, markets: list[str]) -> None:
        self.client = client  # the asyncio RedisCluster client (slot map)
        self.markets = markets
        self._listener: Listener | None = None
        self._stale = False  # publications were lost since the slot map was read
        self._owner: dict[str, Reader] = {}  # subscribed channel -> the node's connection
        self._readers: dict[str, Reader] = {}  # node name -> its connection
        self._rehoming: asyncio.Task[None] | None = None  # reading the slot map for a lost node

    def channels(self, topic: str) -> list[str]:
        return keys.shard_channels(topic, self.markets)

    def topic(self, channel: str) -> str:
        return keys.shard_channel_topic(channel)

    async def connect(self, listener: Listener) -> None:
        self._listener = listener
        await self.client.initialize()
        await self.subscribe([keys.shard_publish_channel(KEEPALIVE_TOPIC)])

    async def disconnect(self) -> None:
        if self._rehoming is not None:
            self._rehoming.cancel()
        for reader in self._readers.values():
            with contextlib.suppress(Exception):
                await reader.stop()

    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        """SSUBSCRIBE ``channels``, each on the node that owns its slot, then confirm them
        with a PING on each node's connection."""
        if self._stale:
            await self.client.nodes_manager.initialize()  # where moved slots are now
            self._stale = False
        readers: list[Reader] = []
        for reader, group in self._by_slot(channels, self._reader_for):
            reader.subscribe(group)
            for channel in group:
                self._owner[channel] = reader
            if reader not in readers:
                readers.append(reader)
        for reader in readers:
            await reader.connected()  # a new node's first connection subscribes the channels
        return asyncio.gather(*[reader.confirmation() for reader in readers])

    async def unsubscribe(self, channels: list[str]) -> None:
        """SUNSUBSCRIBE ``channels``, each on the node that carried it when subscribed."""
        for reader, group in self._by_slot(channels, self._owner.get):
            for channel in group:
                self._owner.pop(channel, None)
            reader.unsubscribe(group)

    def _by_slot(
        self, channels: list[str], reader_of: Callable[[str], Reader | None]
    ) -> list[tuple[Reader, list[str]]]:
        """``channels`` grouped by connection and slot (one command each, as Redis requires);
        channels ``reader_of`` has no connection for are left out."""
        groups: dict[tuple[str, int], tuple[Reader, list[str]]] = {}
        for channel in channels:
            reader = reader_of(channel)
            if reader is None:
                continue
            slot = self.client.keyslot(channel)
            groups.setdefault((reader.name, slot), (reader, []))[1].append(channel)
        return list(groups.values())

    def _reader_for(self, channel: str) -> Reader:
        node = self.client.get_node_from_key(channel)
        name = node.name
        reader = self._readers.get(name)
        if reader is None:
            reader = self._readers[name] = Reader(
                Address.of_node(node),
                name,
                SHARDED,
                _Relay(self._started(), self._lost),
                on_unsubscribed=functools.partial(self._unsubscribed, name),
                regroup=per_slot,
                on_refused=functools.partial(self._refused, name),
                on_unreachable=functools.partial(self._unreachable, name),
            )
        return reader

    def _started(self) -> Listener:
        if self._listener is None:
            raise RuntimeError("the sharded pub/sub backend subscribes only once connected")
        return self._listener

    def _lost(self) -> None:
        """Publications may be lost (a reconnect, a slot that moved): read the slot map again
        before the next subscribe, and tell the listener."""
        self._stale = True
        self._started().on_lost()

    def _unsubscribed(self, name: str, channel: str) -> None:
        """Node ``name`` dropped ``channel`` by itself: Redis drops the shard channels of a
        slot that moved to another node."""
        log.warning("broadcaster: %s unsubscribed %s by itself (slot moved)", name, channel)
        self._drop(name, [channel])
        self._lost()

    def _refused(self, name: str, error: str) -> None:
        """Node ``name`` refused a command: on ``MOVED <slot> ...`` the slot is served
        elsewhere, so the slot's channels it was to hold are subscribed nowhere, and none of
        them will be confirmed unsubscribed there. (A slot being migrated answers no ASK for
        shard channels: its old owner serves them until the move is done.)"""
        words = error.split()
        if len(words) < 2 or words[0] != "MOVED" or not words[1].isdigit():
            return
        slot = int(words[1])
        channels = self._readers[name].drop(lambda channel: key_slot(channel.encode()) == slot)
        if not channels:  # an unsubscribe refused: nothing held is lost, the slot map is old
            self._stale = True
            return
        log.warning("broadcaster: %s no longer serves slot %d (%s)", name, slot, channels)
        self._drop(name, channels)
        self._lost()

    def _unreachable(self, name: str) -> None:
        """An attempt to connect to node ``name`` failed: if it holds channels, see (one look
        at a time) whether the cluster serves them elsewhere now."""
        if self._readers[name].channels and (self._rehoming is None or self._rehoming.done()):
            self._rehoming = asyncio.create_task(self._rehome(name), name=f"hub-rehome-{name}")

    async def _rehome(self, name: str) -> None:
        """Read the slot map again; the channels of node ``name`` whose slots other nodes
        serve now are held there no more: a loss (the next subscribe goes to the new owner)."""
        try:
            await self.client.nodes_manager.initialize()
        except (RedisClusterException, RedisError, OSError) as exc:
            # No node answered: the next failed attempt asks again (the reader has warned).
            log.debug("broadcaster: reading the slot map for %s failed: %s", name, exc)
            return
        gone = self._readers[name].drop(lambda channel: not self._serves(name, channel))
        if gone:
            log.warning("broadcaster: %s is unreachable; its slots of %s moved", name, gone)
            self._drop(name, gone)
            self._lost()

    def _serves(self, name: str, channel: str) -> bool:
        """Whether the slot map says node ``name`` serves ``channel`` (or says no one does)."""
        try:
            return bool(self.client.get_node_from_key(channel).name == name)
        except SlotNotCoveredError:  # nowhere better to go
            return True

    def _drop(self, name: str, channels: list[str]) -> None:
        """Forget that node ``name`` carries ``channels``."""
        reader = self._readers.get(name)
        for channel in channels:
            if self._owner.get(channel) is reader:
                del self._owner[channel]
