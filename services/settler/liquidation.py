"""Liquidation (API.md §8 ``dex.liquidation``): close accounts below maintenance margin.

For an account whose equity in a collateral asset is below its maintenance margin:

1. Start (liquidation number n, in ``dex:{u}:liq``): a ``cancel_all`` with reason
   ``LIQUIDATION`` to every market where it has open orders, and per position a reduce-only
   ``MARKET`` order (``liquidation: true``, cid ``liq-<n>-<market>``) protected at the
   position's bankruptcy price (where the account's equity would reach zero; rounded to the
   tick on the safe side). The matcher ignores a cid it has seen, so re-sending is harmless.
2. Once those orders are done and settled, or after a grace period, the insurance fund takes
   over what is left at the mark price: the positions and marks are frozen in the liq hash,
   the account closes them (``account_step`` keyed ``liq`` = n), the insurance fund opens them
   (keyed ``liq:<user>`` = n), and the matcher's mirror is set from the accounts' truth.
3. Collateral below zero is made whole by the insurance fund (``AccountSteps.cover``).

Only maintenance margin decides, and it is the market's: an account's leverage (its initial
margin choice, docs/api.md "Leverage") enters neither the test nor the orders, so an account
whose free collateral is below zero at a higher initial margin is not liquidated for that.
"""

from __future__ import annotations

import time
from typing import Any

from common import keys, money, risk
from common.account_reads import derivative_markets
from common.events import COMMAND_FIELD, CancelAllCommand, OrderCommand, dumps, loads
from common.markets import Market, MarketSet
from common.types import Product
from services.settler.accounts import AccountSteps
from services.settler.ledger import Ledger

FINAL = {"FILLED", "CXL", "EXP", "REJECTED"}
WAIT_FOR_ORDERS_S = 3.0


def run_liquidation(
    client: Any,
    markets: MarketSet,
    ledger: Ledger,
    steps: AccountSteps,
    now_ms: int,
    grace_ms: int,
) -> list[str]:
    """Liquidate every account below maintenance margin; return the accounts taken over."""
    with steps.lock(keys.settler_lease("liquidation")) as held:
        if not held:
            return []
        return _run(client, markets, ledger, steps, now_ms, grace_ms)


def _run(
    client: Any,
    markets: MarketSet,
    ledger: Ledger,
    steps: AccountSteps,
    now_ms: int,
    grace_ms: int,
) -> list[str]:
    symbols = derivative_markets(markets)
    users: set[str] = set()
    for symbol in symbols:
        users |= set(client.smembers(keys.market_holders(symbol)))
    users -= set(keys.SYSTEM_ACCOUNTS)
    done = []
    for user in sorted(users):
        liq = client.hgetall(keys.account_liquidation(user))
        if not liq.get("active"):
            if not _below_maintenance(client, markets, user):
                continue
            number = client.hincrby(keys.account_liquidation(user), "n", 1)
            start(client, markets, user, number, now_ms)
            client.hset(
                keys.account_liquidation(user), mapping={"active": number, "started": now_ms}
            )
            liq = client.hgetall(keys.account_liquidation(user))
        number = int(liq["active"])
        if _orders_finished(client, markets, ledger, user, number) or (
            now_ms - int(liq.get("started", now_ms)) >= grace_ms
        ):
            take_over(client, markets, ledger, steps, user, number)
            done.append(user)
    return done


def _below_maintenance(client: Any, markets: MarketSet, user: str) -> bool:
    view = _account(client, markets, user)
    margin = risk.account_margin(markets, *view)
    return any(
        m.maintenance_margin > 0 and m.equity < m.maintenance_margin for m in margin.values()
    )


def _account(
    client: Any, markets: MarketSet, user: str
) -> tuple[dict[str, str], list[risk.Position], dict[str, risk.MarketPrices]]:
    symbols = derivative_markets(markets)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.balances(user))
    pipe.hgetall(keys.positions(user))
    for symbol in symbols:
        pipe.hgetall(keys.market_prices(symbol))
    balances, raw_positions, *px = pipe.execute()
    positions = [p for p in risk.parse_positions(raw_positions) if p.market in markets.markets]
    prices = {
        s: risk.parse_prices(markets.markets[s], raw) for s, raw in zip(symbols, px, strict=True)
    }
    return balances, positions, prices


def bankruptcy_price(
    markets: MarketSet,
    position: risk.Position,
    balances: dict[str, str],
    positions: list[risk.Position],
    prices: dict[str, risk.MarketPrices],
) -> int:
    """Price at which closing ``position`` leaves the account's equity at zero, on the tick.

    Solves total + rest + size·P·k − entry = 0; a long's sell is protected at or above it
    (rounded up to the tick), a short's buy at or below it (rounded down), at least one tick.
    """
    market = markets.markets[position.market]
    asset = market.quote.symbol
    rest = sum(
        risk.equity_contribution(markets.markets[p.market], p, prices[p.market])
        for p in positions
        if p.market != position.market and markets.markets[p.market].quote.symbol == asset
    )
    total = int(balances.get(keys.total_field(asset), 0))
    numerator = position.entry_notional - total - rest
    denominator = position.size * market.notional_multiplier
    tick = market.spec.tickSize
    if position.size > 0:
        price = money.ceil_div(numerator, denominator)
        price = money.ceil_div(price, tick) * tick
    else:
        price = numerator // denominator
        price = (price // tick) * tick
    return max(price, tick)


def start(client: Any, markets: MarketSet, user: str, number: int, now_ms: int) -> None:
    balances, positions, prices = _account(client, markets, user)
    cancel: CancelAllCommand = {
        "op": "cancel_all",
        "user": user,
        "ts": now_ms,
        "reason": "LIQUIDATION",
    }
    for symbol in markets.markets:
        if client.scard(keys.market_user_open(symbol, user)):
            client.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(cancel)})
    for position in positions:
        market = markets.markets[position.market]
        if market.product is Product.OPTION:
            continue  # no reduce path through the book for options: the fund takes them over
        price = bankruptcy_price(markets, position, balances, positions, prices)
        command: OrderCommand = {
            "op": "order",
            "user": user,
            "cid": f"liq-{number}-{position.market}",
            "side": "SELL" if position.size > 0 else "BUY",
            "type": "MARKET",
            "price": price,
            "qty": abs(position.size),
            "tif": "IOC",
            "reduceOnly": True,
            "expiresAt": 0,
            "ts": now_ms,
            "reserved": 0,
            "acceptedAt": now_ms,
            "liquidation": True,
        }
        client.xadd(keys.market_in(position.market), {COMMAND_FIELD: dumps(command)})


def _orders_finished(
    client: Any, markets: MarketSet, ledger: Ledger, user: str, number: int
) -> bool:
    """Wait a little for the liquidation orders to finish; settle their markets."""
    _, positions, _ = _account(client, markets, user)
    symbols = [
        p.market for p in positions if markets.markets[p.market].product is not Product.OPTION
    ]
    deadline = time.monotonic() + WAIT_FOR_ORDERS_S
    while True:
        statuses = [
            client.hget(keys.market_order(s, user, f"liq-{number}-{s}"), "status") for s in symbols
        ]
        if all(status in FINAL for status in statuses):
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    for symbol in symbols:
        ledger.settle_market(markets.markets[symbol])
    return all(ledger.is_settled(s) for s in symbols)


def take_over(
    client: Any, markets: MarketSet, ledger: Ledger, steps: AccountSteps, user: str, number: int
) -> None:
    liq_key = keys.account_liquidation(user)
    frozen = client.hget(liq_key, f"plan:{number}")
    if frozen is None:
        _, positions, prices = _account(client, markets, user)
        plan = [[p.market, p.size, prices[p.market].mark] for p in positions if p.size]
        client.hsetnx(liq_key, f"plan:{number}", dumps(plan))
        frozen = client.hget(liq_key, f"plan:{number}")
    plan = loads(frozen)
    user_ops: list[list[str]] = []
    fund_ops: list[list[str]] = []
    assets: set[str] = set()
    for symbol, size, mark in plan:
        market = markets.markets[symbol]
        asset = market.quote.symbol
        assets.add(asset)
        user_ops.append(_position_op(market, -size, mark))
        fund_ops.append(_position_op(market, size, mark))
        if market.product is Product.OPTION:
            value = risk.signed_notional(market, mark, size)
            user_ops.append(["credit", asset, str(value)])
            fund_ops.append(["credit", asset, str(-value)])
    steps.step(user, "liq", number, user_ops)
    steps.step(keys.INSURANCE_ACCOUNT, f"liq:{user}", number, fund_ops)
    for symbol, _, _ in plan:
        pipe = client.pipeline(transaction=False)
        for account in (user, keys.INSURANCE_ACCOUNT):
            pipe.hget(keys.positions(account), f"{symbol}:size")
        user_size, fund_size = pipe.execute()
        client.hset(
            keys.market_positions(symbol),
            mapping={user: int(user_size or 0), keys.INSURANCE_ACCOUNT: int(fund_size or 0)},
        )
        client.sadd(keys.market_holders(symbol), keys.INSURANCE_ACCOUNT)
    for asset in assets or {
        m.quote.symbol for m in markets.markets.values() if m.product.is_derivative
    }:
        steps.cover(user, asset)
    client.hdel(liq_key, "active", f"plan:{number}")
    client.hset(liq_key, "last", number)
    steps.notify({user}, [symbol for symbol, _, _ in plan])


def _position_op(market: Market, delta: int, price: int) -> list[str]:
    cash = "1" if market.product in (Product.PERP, Product.FUTURE) else "0"
    return [
        "position",
        market.symbol,
        market.quote.symbol,
        str(delta),
        str(price),
        str(market.notional_multiplier),
        cash,
    ]
