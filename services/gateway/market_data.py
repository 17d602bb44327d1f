"""Public market data reads."""

from __future__ import annotations

from typing import Any

from common.book_reads import read_depth as _read_depth
from services.gateway.context import Gateway

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def read_depth(gateway: Gateway, market: str, limit: int) -> dict[str, Any]:
    return await _read_depth(gateway.redis, market, limit)
