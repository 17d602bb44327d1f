"""Per-IP (every request) and per-user (writes) token buckets in Redis (API.md §1, §5).

A bucket refills at ``DEX_RATE_LIMIT_*`` tokens per second and holds twice that; ``0`` turns
a limit off. ``/v1/health`` and admin calls with the right token are never counted; an admin
call without it draws from the address's bucket (middleware.py). A write draws from the
address's bucket before its body is read and from its user's only once its signature
verifies (:func:`check_user`; an order's is taken by its account script, in the same call,
:func:`user_bucket`), so forged requests cannot spend another user's budget. A refusal is 429
RATE_LIMITED with ``Retry-After`` in whole seconds (rounded up).
"""

from __future__ import annotations

import math

from common import keys
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

WRITE_PATHS = frozenset(
    {"/v1/orders", "/v1/orders/cancel", "/v1/orders/cancel-all", "/v1/withdrawals"}
    | {"/v1/orders/schedule-cancel"}
    | {"/v1/orders/cancel-replace"}
    | {"/v1/accounts/agents", "/v1/accounts/agents/revoke"}
    | {"/v1/orders/batch"}
    | {"/v1/accounts/leverage"}
)
ADMIN_PREFIX = "/v1/admin/"


def exempt(path: str) -> bool:
    return path == "/v1/health"


def buckets(gateway: Gateway, ip: str | None, user: str | None) -> list[tuple[str, int]]:
    """The (key, rate) pairs a request draws from."""
    settings = gateway.settings
    result = []
    if ip is not None and settings.rate_limit_ip > 0:
        result.append((keys.rate_limit_ip(ip), settings.rate_limit_ip))
    if user is not None and settings.rate_limit_user > 0:
        result.append((keys.rate_limit_user(user), settings.rate_limit_user))
    return result


async def check(gateway: Gateway, ip: str | None, user: str | None = None, cost: int = 1) -> None:
    """Take a token from each bucket (one round trip), ``cost`` tokens from the user's; 429 if
    any has too few."""
    wanted = buckets(gateway, ip, user)
    if not wanted:
        return
    script = gateway.transport.scripts["rate_limit"]
    group = Commands()
    for key, rate in wanted:
        args: list[int] = [rate, 2 * rate]
        if user is not None and key == keys.rate_limit_user(user) and cost != 1:
            args.append(cost)
        group.script(script, [key], args)
    results = await gateway.transport.execute(group)
    wait_ms = max(int(r) for r in results)
    if wait_ms > 0:
        raise refused(wait_ms)


def refused(wait_ms: int) -> ApiError:
    """429 RATE_LIMITED, with ``Retry-After`` in whole seconds (rounded up)."""
    error = ApiError(ErrorCode.RATE_LIMITED, f"too many requests; retry in {wait_ms} ms")
    error.headers["Retry-After"] = str(max(1, math.ceil(wait_ms / 1000)))
    return error


def user_bucket(gateway: Gateway, user: str) -> tuple[str, list[int]] | None:
    """The user's bucket and its (rate, burst), for a script that takes the token itself
    (accept_order.lua: an order's token is taken in the account script, first), or None when
    the limit is off."""
    rate = gateway.settings.rate_limit_user
    return (keys.rate_limit_user(user), [rate, 2 * rate]) if rate > 0 else None


async def check_user(gateway: Gateway, user: str, cost: int = 1) -> None:
    """Take a token (``cost`` tokens: a batch's actions) from the user's bucket: call only once
    the request's signature verified."""
    await check(gateway, None, user, cost)
