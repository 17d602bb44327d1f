"""Expiry of FUTURE and OPTION markets (API.md §8 ``dex.expiry``), settled exactly once.

Past ``expiryTs`` the task XADDs an ``expire`` command to the market stream; the matcher sets
the market ``EXPIRED`` and cancels resting orders (their done events release reservations).
Once the market is ``EXPIRED`` and every event is settled, every position is cash-settled at
the index: a future pays (index·size·k − entry) — exact, zero-sum since sizes sum to zero; an
option pays its intrinsic value size·intrinsic·k, from writers to holders. The per-account
amounts are frozen in ``dex:{m}:expiry`` before any is applied; each account's share is one
``account_step`` keyed ``<m>:expiry``; the matcher's mirror ``dex:{m}:pos`` is cleared last.
"""

from __future__ import annotations

import time
from typing import Any

from common import keys, risk
from common.events import COMMAND_FIELD, AdminCommand, dumps, loads
from common.markets import Market, MarketSet
from common.types import Product
from services.settler.accounts import AccountSteps
from services.settler.ledger import Ledger

RESEND_EXPIRE_MS = 30_000
WAIT_FOR_STATUS_S = 5.0


def run_expiry(
    client: Any, markets: MarketSet, ledger: Ledger, steps: AccountSteps, now_ms: int
) -> list[str]:
    """Expire and settle every due market; return the markets settled by this run."""
    settled = []
    for market in markets.markets.values():
        expiry_ts = market.spec.expiryTs
        if market.product not in (Product.FUTURE, Product.OPTION) or expiry_ts is None:
            continue
        if expiry_ts > now_ms:
            continue
        with steps.lock(keys.market_expiry(market.symbol) + ":lock") as held:
            if held and expire_market(client, market, ledger, steps, now_ms):
                settled.append(market.symbol)
    return settled


def expire_market(
    client: Any, market: Market, ledger: Ledger, steps: AccountSteps, now_ms: int
) -> bool:
    symbol = market.symbol
    state_key = keys.market_expiry(symbol)
    if client.hget(state_key, "settled"):
        return False
    if not _wait_expired(client, symbol, now_ms):
        return False
    ledger.settle_market(market)
    if not ledger.is_settled(symbol):
        return False  # another worker holds the market's settlement; the next run finishes
    frozen = client.hget(state_key, "plan")
    if frozen is None:
        client.hsetnx(state_key, "plan", dumps(expiry_plan(client, market, now_ms)))
        frozen = client.hget(state_key, "plan")
    plan = loads(frozen)
    asset = market.quote.symbol
    for user, amount in plan["amounts"].items():
        steps.step(
            user,
            f"{symbol}:expiry",
            1,
            [
                ["credit", asset, amount],
                ["posincr", symbol, "rpnl", amount],
                ["posset", symbol, "size", "0"],
                ["posset", symbol, "entry", "0"],
            ],
        )
    for user in plan["amounts"]:
        steps.cover(user, asset)
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.market_positions(symbol))
    pipe.hset(state_key, mapping={"settled": now_ms, "index": plan["index"]})
    pipe.execute()
    steps.notify(set(plan["amounts"]), [symbol])
    return True


def _wait_expired(client: Any, symbol: str, now_ms: int) -> bool:
    """Ask the matcher to expire the market (again if it seems lost); wait a little for it."""
    state_key = keys.market_expiry(symbol)
    if client.hget(keys.market_state(symbol), "status") == "EXPIRED":
        return True
    requested = int(client.hget(state_key, "requested") or 0)
    if not requested or now_ms - requested > RESEND_EXPIRE_MS:
        expire: AdminCommand = {"op": "expire", "ts": now_ms}
        client.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(expire)})
        client.hset(state_key, "requested", now_ms)
    deadline = time.monotonic() + WAIT_FOR_STATUS_S
    while time.monotonic() < deadline:
        if client.hget(keys.market_state(symbol), "status") == "EXPIRED":
            return True
        time.sleep(0.2)
    return False


def expiry_plan(client: Any, market: Market, now_ms: int) -> dict[str, Any]:
    """Every holder's signed cash amount at the index (the position's size and entry)."""
    symbol = market.symbol
    prices = risk.parse_prices(market, client.hgetall(keys.market_prices(symbol)))
    holders = sorted(client.smembers(keys.market_holders(symbol)))
    pipe = client.pipeline(transaction=False)
    for user in holders:
        pipe.hmget(keys.positions(user), f"{symbol}:size", f"{symbol}:entry")
    amounts: dict[str, str] = {}
    for user, (size, entry) in zip(holders, pipe.execute(), strict=True):
        size_i, entry_i = int(size or 0), int(entry or 0)
        if size_i == 0 and entry_i == 0:
            continue
        if market.product is Product.OPTION:
            value = risk.signed_notional(market, risk.intrinsic_value(market, prices.index), size_i)
        else:
            value = risk.signed_notional(market, prices.index, size_i) - entry_i
        amounts[user] = str(value)
    return {"index": prices.index, "ts": now_ms, "amounts": amounts}
