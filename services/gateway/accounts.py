"""Balances and admin deposits."""

from __future__ import annotations

import hmac
from typing import Any

from common import keys
from common.events import MAX_SAFE_INTEGER
from services.gateway import parsing
from services.gateway.context import Gateway
from services.gateway.errors import ApiError


def require_admin(gateway: Gateway, authorization: str | None) -> None:
    """Admit only ``Bearer <DEX_ADMIN_TOKEN>``, compared in constant time; no token, no admin."""
    token = gateway.settings.admin_token
    given = (authorization or "").removeprefix("Bearer ").strip()
    if token is None or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise ApiError("FORBIDDEN", "admin endpoints need 'Authorization: Bearer <admin token>'")


def balance_view(total: int, locked: int) -> dict[str, str]:
    return {"total": str(total), "available": str(total - locked), "locked": str(locked)}


async def read_balances(gateway: Gateway, user: str) -> dict[str, dict[str, str]]:
    raw = await gateway.redis.hgetall(keys.balances(user))
    result: dict[str, dict[str, str]] = {}
    for asset in gateway.markets.assets:
        total = raw.get(keys.total_field(asset))
        locked = raw.get(keys.locked_field(asset))
        if total is None and locked is None:
            continue
        result[asset] = balance_view(int(total or 0), int(locked or 0))
    return result


def account_id(value: str) -> str:
    """A user address (lower-cased) or a system account name."""
    if value in keys.SYSTEM_ACCOUNTS:
        return value
    return parsing.user_id(value)


async def deposit(gateway: Gateway, body: dict[str, Any]) -> dict[str, str]:
    parsing.require_fields(body, {"userId", "asset", "amount"})
    user = account_id(parsing.string(body, "userId"))
    asset = parsing.string(body, "asset")
    amount = parsing.uint(body, "amount")
    if asset not in gateway.markets.assets:
        raise ApiError("UNKNOWN_ASSET", f"no asset named {asset!r}")
    if amount <= 0 or amount > MAX_SAFE_INTEGER:
        raise ApiError("INVALID_REQUEST", f"amount must be between 1 and {MAX_SAFE_INTEGER}")
    try:
        total, locked = await gateway.scripts["deposit"](
            keys=[keys.balances(user)], args=[asset, amount, MAX_SAFE_INTEGER]
        )
    except Exception as exc:
        if "BALANCE_CEILING" in str(exc):
            raise ApiError("INVALID_REQUEST", str(exc)) from None
        raise
    await gateway.redis.sadd(keys.known_accounts(), user)
    return balance_view(int(total), int(locked))
