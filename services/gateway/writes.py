"""The common path of signed writes: the address's rate limit, then the JSON object, then the
work (which draws from the user's rate limit once the signature verifies).

Shared by the FastAPI routes, the middleware's fast path for ``POST /v1/orders`` (the
hottest route skips the framework's routing and dependency machinery; same code, same
answers) and the WebSocket order entry (wsentry.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.gateway import (
    batches,
    deadman,
    leverage,
    metrics,
    orders,
    parsing,
    ratelimit,
    twap,
)
from services.gateway.context import Gateway
from services.gateway.errors import ApiError

SignedWrite = Callable[[Gateway, dict[str, Any]], Awaitable[tuple[int, Any]]]
"""A signed write's work: the parsed body in, its (status, answer) out (or ApiError)."""


async def admit(gateway: Gateway, raw: bytes, ip: str | None) -> dict[str, Any]:
    """429 (the address's bucket), then the JSON object (400).

    The user the body names is not charged here: anyone can write a name into a body.
    """
    await ratelimit.check(gateway, ip)
    return parsing.parse_json_object(raw)


async def place_order(
    gateway: Gateway, raw: bytes, ip: str | None, wait: str | None
) -> tuple[int, Any]:
    """Admit one order body; (status, JSON payload), counting accepted and rejected orders."""
    try:
        body = await admit(gateway, raw, ip)
        waits = parsing.flag(wait, "wait")
    except ApiError as exc:
        metrics.order_rejected(exc.code)
        raise
    return await submit_order(gateway, body, waits)


async def submit_order(gateway: Gateway, body: dict[str, Any], wait: bool) -> tuple[int, Any]:
    """One parsed order body (REST and WebSocket entry alike): (status, JSON payload),
    counting accepted and rejected orders."""
    try:
        result = await orders.submit_order(gateway, body, wait=wait)
    except ApiError as exc:
        metrics.order_rejected(exc.code)
        raise
    metrics.order_accepted()
    if isinstance(result, tuple):
        return result
    return 202, result


async def place_batch(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Admit a signed batch; count each action accepted or refused as a single order is."""
    try:
        status, answer = await batches.submit_batch(gateway, body)
    except ApiError as exc:
        metrics.order_rejected(exc.code)
        raise
    for result in answer.get("results", ()):
        if result["status"] == 202:
            metrics.order_accepted()
        else:
            metrics.order_rejected(result["error"]["code"])
    if "error" in answer:
        metrics.order_rejected(answer["error"]["code"])
    return status, answer


async def schedule_cancel(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Arm, renew or disarm the account's dead-man's switch; 200 with the switch."""
    return 200, await deadman.schedule(gateway, body)


async def set_leverage(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Set the account's initial margin in one derivative market; 200 with its leverage."""
    return 200, await leverage.set_leverage(gateway, body)


async def place_twap(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Record a signed TWAP (docs/api.md "TWAP orders"); 200 with the TWAP."""
    status, answer = await twap.submit(gateway, body)
    return status, dict(answer)
