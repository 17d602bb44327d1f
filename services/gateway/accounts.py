"""Account reads: balances, orders, fills, positions, margin, and the system accounts."""

from __future__ import annotations

from typing import Any, cast

from common import keys
from common.account_reads import read_account_view_async
from common.events import loads
from common.markets import Asset
from common.money import OffQuantum, atomic_text, to_quanta
from common.order_reads import read_open_orders
from services.gateway import orders, parsing
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands, score_pairs

FILL_FIELD = "f"


def balance_view(total: int, locked: int, quantum: int = 1) -> dict[str, str]:
    """``{total, available, locked}`` in atomic units from amounts held in quanta."""
    return {
        "total": str(total * quantum),
        "available": str((total - locked) * quantum),
        "locked": str(locked * quantum),
    }


async def read_balances(gateway: Gateway, user: str) -> dict[str, dict[str, str]]:
    raw = await gateway.redis.hgetall(keys.balances(user))
    result: dict[str, dict[str, str]] = {}
    for asset, spec in gateway.markets.assets.items():
        total = raw.get(keys.total_field(asset))
        locked = raw.get(keys.locked_field(asset))
        if total is None and locked is None:
            continue
        result[asset] = balance_view(int(total or 0), int(locked or 0), spec.quantum)
    return result


def quanta(asset: Asset, amount: int) -> int:
    """An incoming amount in atomic units as quanta; 400 ``INVALID_REQUEST`` if it is not a
    whole number of the asset's quanta (API.md §2: nothing is rounded)."""
    try:
        return to_quanta(asset, amount)
    except OffQuantum as exc:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"amount {exc}") from None


def account_id(value: str) -> str:
    """A user address (lower-cased) or a system account name."""
    if value in keys.SYSTEM_ACCOUNTS:
        return value
    return parsing.user_id(value)


async def list_orders(
    gateway: Gateway, user: str, market: str | None, open_only: bool, limit: int
) -> list[dict[str, Any]]:
    """The user's orders newest first, optionally of one market and only the open ones.

    From indexes, never a scan of the account's history: open ones from the open-order
    index (``read_open_orders``), the others from each market's listing
    ``dex:{u}:orders:<m>``: the newest ``limit`` of each market read (one pipeline), merged.
    """
    if open_only:
        found = await read_open_orders(gateway.redis, gateway.markets, user, market)
        return found[:limit]
    symbols = [market] if market else list(gateway.markets.markets)
    listings = Commands()
    for symbol in symbols:
        listings.zrevrange_with_scores(keys.account_market_orders(user, symbol), 0, limit - 1)
    newest = sorted(
        (
            (score, symbol, cid)
            for symbol, members in zip(
                symbols, await gateway.transport.gather(listings), strict=True
            )
            for cid, score in score_pairs(members)
        ),
        reverse=True,
    )[:limit]
    views = await orders.read_orders(gateway, user, [cid for _, _, cid in newest])
    return [view for view in views if view is not None]


async def list_fills(
    gateway: Gateway, user: str, market: str | None, limit: int
) -> list[dict[str, Any]]:
    """The user's fills newest first (the settler's records), optionally of one market."""
    result: list[dict[str, Any]] = []
    upper = "+"
    while len(result) < limit:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await gateway.redis.xrevrange(
                keys.account_fills(user), max=upper, count=max(limit, 100)
            ),
        )
        if not entries:
            break
        for _, fields in entries:
            record = loads(fields[FILL_FIELD])
            if market and record.get("market") != market:
                continue
            result.append(_fill_view(gateway, record))
            if len(result) == limit:
                break
        if not market:
            break
        upper = "(" + entries[-1][0]
    return result


def _fill_view(gateway: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    """A stored fill record with its fee (kept in quote quanta) in quote atomic units."""
    found = gateway.markets.market(record.get("market", ""))
    if found is not None and found.quote.quantum != 1 and "fee" in record:
        record["fee"] = atomic_text(found.quote, record["fee"])
    return record


async def positions_and_margin(gateway: Gateway, user: str) -> dict[str, Any]:
    return await read_account_view_async(gateway.redis, gateway.markets, user)


async def system_accounts(gateway: Gateway) -> dict[str, Any]:
    fees_raw, insurance_raw = await gateway.transport.gather(
        Commands()
        .hgetall(keys.balances(keys.FEES_ACCOUNT))
        .hgetall(keys.balances(keys.INSURANCE_ACCOUNT))
    )
    view = await positions_and_margin(gateway, keys.INSURANCE_ACCOUNT)
    return {
        "fees": _totals(gateway, fees_raw),
        "insurance": _totals(gateway, insurance_raw),
        "insurancePositions": view["positions"],
    }


def _totals(gateway: Gateway, raw: dict[str, str]) -> dict[str, str]:
    return {
        asset: atomic_text(spec, raw[keys.total_field(asset)])
        for asset, spec in gateway.markets.assets.items()
        if keys.total_field(asset) in raw
    }
