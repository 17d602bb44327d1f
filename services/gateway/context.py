"""What every request handler needs, built once per process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from common import keys
from common.eip712 import Verifier
from common.lua import ScriptSet
from common.markets import Market, MarketSet, load_markets
from common.redis_client import connect_async
from common.settings import DexSettings
from common.types import MarketStatus

LUA_DIR = Path(__file__).parent / "lua"
STATUS_TTL_S = 0.25
"""How long a market's status is trusted; halt/resume through this process clear it at once."""
BLOCKING_READ_TIMEOUT_S = 15.0
BACKLOG_TTL_S = 0.5
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
    _status: dict[str, tuple[float, str]] = field(default_factory=dict)
    _backlog: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outbox_clearer is None:
            from services.gateway.outbox import Clearer

            self.outbox_clearer = Clearer(self.redis)

    @classmethod
    def build(cls, settings: DexSettings) -> Gateway:
        client = connect_async(settings)
        return cls(
            settings=settings,
            markets=load_markets(settings.markets_file),
            redis=client,
            blocking=connect_async(settings, socket_timeout=BLOCKING_READ_TIMEOUT_S),
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
        """Run commands queued by ``before`` and then one script, in one round trip.

        EVALSHA goes straight into the pipeline (redis-py would add a SCRIPT EXISTS round
        trip); on NOSCRIPT — a restarted Redis — the script is loaded and the batch re-sent.
        """
        script = self.scripts[name]
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            if before is not None:
                before(pipe)
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    async def market_status(self, market: Market, fresh: bool = False) -> str:
        """``OPEN``/``HALTED``/``EXPIRED`` as the matcher wrote it; EXPIRED once expiryTs passed."""
        now = time.monotonic()
        cached = self._status.get(market.symbol)
        if cached is not None and not fresh and now - cached[0] < STATUS_TTL_S:
            status = cached[1]
        else:
            status = await self.redis.hget(keys.market_state(market.symbol), "status") or "OPEN"
            self._status[market.symbol] = (now, status)
        expiry = market.spec.expiryTs
        if status == MarketStatus.OPEN and expiry is not None and expiry <= time.time() * 1000:
            return MarketStatus.EXPIRED.value
        return str(status)

    def forget_status(self, symbol: str) -> None:
        self._status.pop(symbol, None)

    async def backlog(self, symbol: str) -> int:
        """Entries of the market stream the matcher has not read yet (cached briefly)."""
        now = time.monotonic()
        cached = self._backlog.get(symbol)
        if cached is not None and now - cached[0] < BACKLOG_TTL_S:
            return cached[1]
        stream = keys.market_in(symbol)
        lag = 0
        try:
            groups = await self.redis.xinfo_groups(stream)
            matcher = [g for g in groups if g.get("name") == keys.MATCHER_GROUP]
            if matcher:
                value = matcher[0].get("lag")
                lag = int(value) if value is not None else int(await self.redis.xlen(stream))
            else:
                lag = int(await self.redis.xlen(stream))
        except ResponseError:
            # No stream yet (nothing waits), or not a stream: the XADD will tell, not this.
            lag = 0
        self._backlog[symbol] = (now, lag)
        return lag
