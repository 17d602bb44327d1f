"""Redis connections for a single node or a Redis Cluster, chosen by settings.

Services call :func:`connect` / :func:`connect_async` and never construct clients
themselves, so the same code runs on both topologies (DESIGN.md, "Scaling past one machine").
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from common.settings import DexSettings, get_settings

log = logging.getLogger(__name__)

SyncRedis: TypeAlias = "redis.Redis | RedisCluster"
AsyncRedis: TypeAlias = "aioredis.Redis | AsyncRedisCluster"

_CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 2.0,
    "socket_keepalive": True,
    "health_check_interval": 30,
}


def connect(settings: DexSettings | None = None, **overrides: Any) -> Any:
    """A synchronous client for ``DEX_REDIS_URL`` (cluster-aware with ``DEX_REDIS_CLUSTER``)."""
    settings = settings or get_settings()
    options = {**_CLIENT_OPTIONS, **overrides}
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def connect_async(settings: DexSettings | None = None, **overrides: Any) -> Any:
    """An asyncio client for ``DEX_REDIS_URL`` (cluster-aware with ``DEX_REDIS_CLUSTER``)."""
    settings = settings or get_settings()
    options = {**_CLIENT_OPTIONS, **overrides}
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        return AsyncRedisCluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(settings.redis_url, **options)


def wait_for_redis(client: Any, timeout_s: float = 30.0, what: str = "service") -> None:
    """Block until Redis answers PING, retrying with back-off; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{what}: Redis did not answer within {timeout_s:.0f} s: {exc}"
                ) from exc
            log.warning("%s: waiting for Redis (%s)", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
