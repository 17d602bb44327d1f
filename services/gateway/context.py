"""What every request handler needs, built once per process: settings, markets, the signature
verifier, the Redis transport, and brief caches of what every order reads (market status,
stream backlog, prices, Redis's memory figure)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from redis.exceptions import ResponseError

from common import keys
from common.eip712 import Verifier
from common.markets import Market, MarketSet, load_markets
from common.redis_client import AsyncRedis
from common.settings import DexSettings
from common.types import MarketStatus
from services.gateway.transport import Transport

STATUS_TTL_S = 0.25
"""How long a market's status is trusted; halt/resume through this process clear it at once."""
BACKLOG_TTL_S = 0.5
"""How long a market stream's backlog figure is trusted (one XINFO GROUPS per market per TTL)."""
MEMORY_TTL_S = 0.5
"""How long Redis's memory figure is trusted (one INFO memory per TTL)."""
PRICES_TTL_S = 0.25
"""How long index/mark prices are trusted for an order's margin check."""
T = TypeVar("T")
MEMORY_HIGH_MESSAGE = "the exchange's store is near its memory limit; retry shortly"


@dataclass
class Gateway:
    settings: DexSettings
    markets: MarketSet
    transport: Transport
    verifier: Verifier
    _status: TtlCache[str] = field(default_factory=lambda: TtlCache(STATUS_TTL_S))
    _backlog: TtlCache[int] = field(default_factory=lambda: TtlCache(BACKLOG_TTL_S))
    _prices: TtlCache[dict[str, str]] = field(default_factory=lambda: TtlCache(PRICES_TTL_S))
    _memory: TtlCache[bool] = field(default_factory=lambda: TtlCache(MEMORY_TTL_S))

    @classmethod
    def build(cls, settings: DexSettings) -> Gateway:
        return cls(
            settings=settings,
            markets=load_markets(settings.markets_file),
            transport=Transport.connect(settings),
            verifier=Verifier(settings.chain_id, settings.verifying_contract),
        )

    @property
    def redis(self) -> AsyncRedis:
        """The redis-py client, for single commands and the shared readers of ``common/``."""
        return self.transport.client

    @property
    def via_outbox(self) -> bool:
        """True when an accepted order reaches its market stream through the account's outbox
        (the stream is in another slot on a cluster; ``DEX_ORDER_OUTBOX=1`` asks for the same
        path on a single Redis)."""
        return self.settings.redis_cluster or self.settings.order_outbox

    async def close(self) -> None:
        await self.transport.close()

    async def market_status(self, market: Market, fresh: bool = False) -> str:
        """The status as the matcher wrote it (docs/api.md "Market states"); EXPIRED once
        expiryTs passed (unless HALTED)."""
        symbol = market.symbol

        async def load() -> str:
            return str(await self.redis.hget(keys.market_state(symbol), "status") or "OPEN")

        if fresh:
            self._status.forget(symbol)
        status = self._status.peek(symbol)
        if status is None:
            status = await self._status.get(symbol, load)
        expiry = market.spec.expiryTs
        if status != MarketStatus.HALTED and expiry is not None and expiry <= time.time() * 1000:
            return MarketStatus.EXPIRED.value
        return status

    def forget_status(self, symbol: str) -> None:
        self._status.forget(symbol)

    def forget_prices(self, symbol: str) -> None:
        self._prices.forget(symbol)

    async def backlog(self, symbol: str, fresh: bool = False) -> int:
        """Entries of the market stream the matcher has not matched yet: not yet read (lag)
        plus read and not yet acknowledged (pending); cached briefly unless ``fresh``."""

        async def load() -> int:
            stream = keys.market_in(symbol)
            try:
                groups = await self.redis.xinfo_groups(stream)
                matcher = [g for g in groups if g.get("name") == keys.MATCHER_GROUP]
                value = matcher[0].get("lag") if matcher else None
                if value is not None:
                    return int(value) + int(matcher[0].get("pending") or 0)
                return int(await self.redis.xlen(stream))
            except ResponseError:
                # No stream yet (nothing waits), or not a stream: the XADD will tell, not this.
                return 0

        if fresh:
            self._backlog.forget(symbol)
        return await self._backlog.get(symbol, load)

    async def memory_high(self) -> bool:
        """True when Redis (any node of a cluster) is past ``DEX_MEMORY_HIGH_WATER_PCT`` of its
        ``maxmemory``: new orders and withdrawals are refused before Redis itself must refuse
        writes (cached briefly)."""
        percent = self.settings.memory_high_water_pct

        async def load() -> bool:
            info = await self.redis.info("memory")
            nodes = info.values() if info and "used_memory" not in info else [info]
            return any(memory_over(node, percent) for node in nodes if isinstance(node, dict))

        if percent <= 0:
            return False
        high = self._memory.peek("memory")
        return high if high is not None else await self._memory.get("memory", load)

    async def prices(self, symbol: str) -> dict[str, str]:
        """A market's ``dex:{m}:px`` hash (index, mark, …), cached briefly."""

        async def load() -> dict[str, str]:
            return cast(dict[str, str], await self.redis.hgetall(keys.market_prices(symbol)))

        prices = self._prices.peek(symbol)
        return prices if prices is not None else await self._prices.get(symbol, load)


def memory_over(info: dict[str, Any], percent: int) -> bool:
    """``used_memory`` at or past ``percent`` % of ``maxmemory`` (never, with no maxmemory)."""
    limit = int(info.get("maxmemory") or 0)
    return limit > 0 and int(info.get("used_memory") or 0) * 100 >= limit * percent


class TtlCache(Generic[T]):
    """Values by key for ``ttl_s`` seconds; concurrent misses share one load (single flight)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[str, tuple[float, T]] = {}
        self._loading: dict[str, asyncio.Future[T]] = {}

    def forget(self, key: str) -> None:
        self._values.pop(key, None)

    def peek(self, key: str) -> T | None:
        """The value while it is fresh, else None (no value cached here is None): read without
        the coroutine of :meth:`get`, which every order would pay for a hit."""
        cached = self._values.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        return None

    async def get(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        cached = self._values.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._loading.pop(key, None)
        self._values[key] = (now, value)
        future.set_result(value)
        return value
