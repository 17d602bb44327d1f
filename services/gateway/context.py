"""What every request handler needs, built once per process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from common import keys
from common.eip712 import Verifier
from common.lua import ScriptSet
from common.markets import Market, MarketSet, load_markets
from common.redis_client import connect_async
from common.settings import DexSettings
from common.types import MarketStatus
from services.gateway.batching import Batcher, run_with_script_retry
from services.gateway.fastpack import connection_options
from services.gateway.lane import lane_for

LUA_DIR = Path(__file__).parent / "lua"
STATUS_TTL_S = 0.25
"""How long a market's status is trusted; halt/resume through this process clear it at once."""
BLOCKING_READ_TIMEOUT_S = 15.0
BACKLOG_TTL_S = 0.5
MEMORY_TTL_S = 0.5
"""How long Redis's memory figure is trusted (one INFO memory per TTL)."""
PRICES_TTL_S = 0.25
"""How long index/mark prices are trusted for an order's margin check."""
T = TypeVar("T")
"""How long a market stream's backlog figure is trusted (one XINFO GROUPS per market per TTL)."""


@dataclass
class Gateway:
    settings: DexSettings
    markets: MarketSet
    redis: Any
    blocking: Any
    """A second client for BLPOP on reply keys: its own pool, a read timeout past the wait."""
    scripts: ScriptSet
    verifier: Verifier
    outbox_clearer: Any = None
    batcher: Any = None
    _status: TtlCache[str] = field(default_factory=lambda: TtlCache(STATUS_TTL_S))
    _backlog: TtlCache[int] = field(default_factory=lambda: TtlCache(BACKLOG_TTL_S))
    _prices: TtlCache[dict[str, str]] = field(default_factory=lambda: TtlCache(PRICES_TTL_S))
    _memory: TtlCache[bool] = field(default_factory=lambda: TtlCache(MEMORY_TTL_S))

    def __post_init__(self) -> None:
        if self.batcher is None:
            lane = lane_for(self.settings.redis_url, self.settings.redis_cluster)
            self.batcher = Batcher(self.redis, lane)
        if self.outbox_clearer is None:
            from services.gateway.outbox import Clearer

            self.outbox_clearer = Clearer(self.redis)

    @classmethod
    def build(cls, settings: DexSettings) -> Gateway:
        fast = connection_options(settings.redis_cluster)
        client = connect_async(settings, **fast)
        return cls(
            settings=settings,
            markets=load_markets(settings.markets_file),
            redis=client,
            blocking=connect_async(settings, socket_timeout=BLOCKING_READ_TIMEOUT_S, **fast),
            scripts=ScriptSet(client, LUA_DIR),
            verifier=Verifier(settings.chain_id, settings.verifying_contract),
        )

    async def pipelined_script(
        self,
        name: str,
        script_keys: list[str],
        args: list[Any],
        before: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        """Run the command queued by ``before`` (if any) and then one script, in one round
        trip, batched with other requests' commands on a single Redis.

        EVALSHA goes straight into the pipeline (redis-py would add a SCRIPT EXISTS round
        trip); on NOSCRIPT — a restarted Redis — the script is loaded and the group re-sent.
        """
        script = self.scripts[name]

        def queue(pipe: Any) -> None:
            if before is not None:
                before(pipe)
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)

        count = 2 if before is not None else 1
        if not self.settings.redis_cluster:
            return await run_with_script_retry(self.batcher, script, queue, count)
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            queue(pipe)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    async def batched(self, queue: Callable[[Any], Any], count: int = 1) -> list[Any]:
        """Commands batched with other requests' (single Redis) or sent as they are."""
        if not self.settings.redis_cluster:
            return await self.batcher.submit(queue, count)
        pipe = self.redis.pipeline(transaction=False)
        queue(pipe)
        return list(await pipe.execute())

    async def market_status(self, market: Market, fresh: bool = False) -> str:
        """``OPEN``/``HALTED``/``EXPIRED`` as the matcher wrote it; EXPIRED once expiryTs passed."""
        symbol = market.symbol

        async def load() -> str:
            return str(await self.redis.hget(keys.market_state(symbol), "status") or "OPEN")

        if fresh:
            self._status.forget(symbol)
        status = await self._status.get(symbol, load)
        expiry = market.spec.expiryTs
        if status == MarketStatus.OPEN and expiry is not None and expiry <= time.time() * 1000:
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
        return await self._memory.get("memory", load)

    async def prices(self, symbol: str) -> dict[str, str]:
        """A market's ``dex:{m}:px`` hash (index, mark, …), cached briefly."""

        async def load() -> dict[str, str]:
            return dict(await self.redis.hgetall(keys.market_prices(symbol)))

        return await self._prices.get(symbol, load)


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
