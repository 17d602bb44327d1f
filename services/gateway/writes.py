"""The common path of signed writes: rate limits, then the JSON object, then the work.

Shared by the FastAPI routes and the middleware's fast path for ``POST /v1/orders`` (the
hottest route skips the framework's routing and dependency machinery; same code, same
answers).
"""

from __future__ import annotations

from typing import Any

import orjson

from services.gateway import metrics, orders, parsing, ratelimit
from services.gateway.context import Gateway
from services.gateway.errors import ApiError


async def admit(gateway: Gateway, raw: bytes, ip: str | None) -> dict[str, Any]:
    """429 (the IP and the user the body names), then the JSON object (400)."""
    user = None
    try:
        loose = orjson.loads(raw)
    except orjson.JSONDecodeError:
        loose = None
    if isinstance(loose, dict):
        candidate = loose.get("userId")
        if isinstance(candidate, str) and parsing.ADDRESS.match(candidate):
            user = candidate.lower()
    await ratelimit.check(gateway, ip, user)
    if not isinstance(loose, dict):
        return parsing.parse_json_object(raw)  # raises the precise 400
    return loose


async def place_order(
    gateway: Gateway, raw: bytes, ip: str | None, wait: str | None
) -> tuple[int, Any]:
    """Admit one order body; (status, JSON payload), counting accepted and rejected orders."""
    try:
        body = await admit(gateway, raw, ip)
        result = await orders.submit_order(gateway, body, wait=parsing.flag(wait, "wait"))
    except ApiError as exc:
        metrics.order_rejected(exc.code)
        raise
    metrics.order_accepted()
    if isinstance(result, tuple):
        return result
    return 202, result
