"""Classic or sharded pub/sub, decided once per client.

On a single Redis the exchange PUBLISHes on ``dex:ch:<topic>`` (keys.channel). On a Redis
Cluster whose servers have sharded pub/sub (Redis >= 7.0) it SPUBLISHes on the hash-tagged
shard channels instead (keys.shard_channel): a classic publication is copied to every node
of the cluster, a shard publication stays on the node that owns its slot. Every service
asks :func:`sharded` (or :func:`sharded_async`) once and the answer is cached per client, so
publishers and the broadcaster agree as long as they talk to the same cluster.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from common import keys

log = logging.getLogger(__name__)

MIN_VERSION = (7, 0)

_decisions: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _versions(info: Any) -> list[str]:
    """``redis_version`` of one INFO reply, or of each node's reply on a cluster."""
    if isinstance(info, dict) and "redis_version" in info:
        return [str(info["redis_version"])]
    if isinstance(info, dict):
        return [v for node in info.values() for v in _versions(node)]
    return []


def _parse(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _decide(versions: list[str]) -> bool:
    supported = bool(versions) and all(_parse(v) >= MIN_VERSION for v in versions)
    if supported:
        log.info("pub/sub: sharded (SPUBLISH / SSUBSCRIBE) on Redis Cluster %s", versions[0])
    else:
        log.warning(
            "pub/sub: Redis Cluster %s has no sharded pub/sub (needs %d.%d); "
            "using classic PUBLISH / SUBSCRIBE",
            ", ".join(sorted(set(versions))) or "of unknown version",
            *MIN_VERSION,
        )
    return supported


def sharded(client: Any) -> bool:
    """Whether ``client`` (synchronous) publishes on shard channels: a cluster of Redis >= 7."""
    if not isinstance(client, RedisCluster):
        return False
    decided = _decisions.get(client)
    if decided is None:
        info = client.info("server", target_nodes=RedisCluster.PRIMARIES)
        decided = _decisions[client] = _decide(_versions(info))
    return decided


async def sharded_async(client: Any) -> bool:
    """:func:`sharded` for an asyncio client."""
    if not isinstance(client, AsyncRedisCluster):
        return False
    decided = _decisions.get(client)
    if decided is None:
        info = await client.info("server", target_nodes=AsyncRedisCluster.PRIMARIES)
        decided = _decisions[client] = _decide(_versions(info))
    return decided


def publish(client: Any, topic: str, payload: str | bytes) -> None:
    """Publish ``payload`` on ``topic``: SPUBLISH on its shard channel when sharded, else
    PUBLISH on ``dex:ch:<topic>``. Not for ``orders:<u>`` (one shard channel per market:
    the gateway's TWAP progress picks its market's, services/gateway/twap.py)."""
    if sharded(client):
        spublish(client, keys.shard_publish_channel(topic), payload)
    else:
        client.publish(keys.channel(topic), payload)


def spublish(client: Any, channel: str, payload: str | bytes) -> None:
    """SPUBLISH on the node that owns ``channel``'s slot (redis-py routes SPUBLISH by its
    channel, the command's one key)."""
    client.spublish(channel, payload)
