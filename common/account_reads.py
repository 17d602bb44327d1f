"""An account's positions and margin in the REST shapes (API.md §5), from Redis.

The gateway (REST), the settler (``pnl:`` publications, liquidation) and the broadcaster
(``pnl:`` snapshots) all read an account through these, so every door shows the same numbers.
Amounts are strings in the quote asset's atomic units (like balances), converted here from
the quanta Redis holds; sizes and prices are integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common import keys, money
from common.markets import MarketSet
from common.risk import (
    MarketPrices,
    Position,
    account_margin,
    equity_contribution,
    maintenance_margin,
    parse_leverage,
    parse_positions,
    parse_prices,
    unrealized_pnl,
)
from common.types import Product


def position_view(
    markets: MarketSet,
    position: Position,
    prices: Mapping[str, MarketPrices],
    balances: Mapping[str, str],
    positions: list[Position],
) -> dict[str, Any]:
    market = markets.markets[position.market]
    market_prices = prices[position.market]
    size = position.size
    quote = market.quote
    return {
        "market": position.market,
        "size": size,
        "entryNotional": money.atomic_text(quote, position.entry_notional),
        "avgEntry": money.format_price(
            abs(position.entry_notional), abs(size) * market.notional_multiplier
        )
        if size
        else "0",
        "realizedPnl": money.atomic_text(quote, position.realized_pnl),
        "unrealizedPnl": money.atomic_text(quote, unrealized_pnl(market, position, market_prices)),
        "markPrice": market_prices.mark,
        "fundingPaid": money.atomic_text(quote, position.funding_paid),
        "liquidationPrice": liquidation_price(markets, position, prices, balances, positions),
    }


def liquidation_price(
    markets: MarketSet,
    position: Position,
    prices: Mapping[str, MarketPrices],
    balances: Mapping[str, str],
    positions: list[Position],
) -> int | None:
    """The mark at which this position alone would bring equity down to maintenance margin,
    the account's other positions held at their current marks; ``None`` if there is none.
    Maintenance margin is the market's whatever the account's leverage, so leverage does not
    move it (docs/api.md "Leverage").

    Solves total + rest + size·P·k − entry = |size|·P·k·mm/10^4 for P (k the notional
    multiplier), rounded toward the current mark so the estimate errs on the early side.
    """
    market = markets.markets[position.market]
    if market.product is Product.OPTION or position.size == 0:
        return None
    asset = market.quote.symbol
    rest = 0
    for other in positions:
        if other.market == position.market:
            continue
        other_market = markets.markets[other.market]
        if other_market.quote.symbol != asset:
            continue
        other_prices = prices[other.market]
        rest += equity_contribution(other_market, other, other_prices)
        rest -= maintenance_margin(other_market, other, other_prices)
    total = int(balances.get(keys.total_field(asset), 0))
    mm_bps = market.spec.maintenanceMarginBps or 0
    k = market.notional_multiplier
    # size·k·P·(10^4 ∓ mm) = (entry − total − rest)·10^4, with − for a long, + for a short.
    factor = position.size * k * (10_000 - mm_bps if position.size > 0 else 10_000 + mm_bps)
    numerator = (position.entry_notional - total - rest) * 10_000
    if factor == 0:
        return None
    price = money.ceil_div(numerator, factor) if position.size > 0 else numerator // factor
    return price if price > 0 else None


def account_view(
    markets: MarketSet,
    balances: Mapping[str, str],
    raw_positions: Mapping[str, str],
    raw_prices: Mapping[str, Mapping[str, str]],
    raw_leverage: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``{"positions": [...], "margin": {...}}`` — the ``pnl:`` topic's data, REST shapes
    (``raw_leverage``: the ``dex:{u}:lev`` hash, the account's initial margin choices)."""
    positions = [p for p in parse_positions(raw_positions) if p.market in markets.markets]
    prices = {
        symbol: parse_prices(market, raw_prices.get(symbol, {}))
        for symbol, market in markets.markets.items()
        if market.product.is_derivative
    }
    leverage = parse_leverage(raw_leverage or {})
    margin = account_margin(markets, balances, positions, prices, leverage)
    return {
        "positions": [
            position_view(markets, position, prices, balances, positions) for position in positions
        ],
        "margin": {
            asset: {
                name: money.atomic_text(markets.assets[asset], amount)
                for name, amount in value.public().items()
            }
            for asset, value in margin.items()
        },
    }


def derivative_markets(markets: MarketSet) -> list[str]:
    return [s for s, m in markets.markets.items() if m.product.is_derivative]


def read_account_view(client: Any, markets: MarketSet, user: str) -> dict[str, Any]:
    """:func:`account_view` with a synchronous client (pipelined reads)."""
    symbols = derivative_markets(markets)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.balances(user))
    pipe.hgetall(keys.positions(user))
    pipe.hgetall(keys.account_leverage(user))
    for symbol in symbols:
        pipe.hgetall(keys.market_prices(symbol))
    balances, raw_positions, raw_leverage, *px = pipe.execute()
    prices = dict(zip(symbols, px, strict=True))
    return account_view(markets, balances, raw_positions, prices, raw_leverage)


async def read_account_view_async(client: Any, markets: MarketSet, user: str) -> dict[str, Any]:
    """:func:`account_view` with an asyncio client (pipelined reads)."""
    symbols = derivative_markets(markets)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.balances(user))
    pipe.hgetall(keys.positions(user))
    pipe.hgetall(keys.account_leverage(user))
    for symbol in symbols:
        pipe.hgetall(keys.market_prices(symbol))
    balances, raw_positions, raw_leverage, *px = await pipe.execute()
    prices = dict(zip(symbols, px, strict=True))
    return account_view(markets, balances, raw_positions, prices, raw_leverage)
