"""What an order or a withdrawal may take from an account (API.md §2, §5, §6).

SPOT: a buy locks notional + taker fee at its limit price, a sell its base quantity, a
price-0 MARKET buy everything available (its budget). Derivatives lock initial margin + taker
fee at the limit price against the free collateral; an order that only reduces the position
locks the fee alone. The free collateral is available balance + an *adjustment* (unrealized
contribution at mark − initial margin of the open positions) computed here with common/risk and
handed to the account script, which compares atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import keys, money
from common.markets import Market, MarketSet
from common.risk import (
    equity_contribution,
    initial_margin,
    parse_positions,
    parse_prices,
)
from common.types import OrderType, Product, Side

ALL_AVAILABLE = "ALL"


@dataclass(frozen=True, slots=True)
class Reservation:
    asset: str
    amount: str  # a decimal integer, or ALL_AVAILABLE for a budget
    adjustment: int
    short_code: str


def margin_assets(markets: MarketSet) -> set[str]:
    return {m.quote.symbol for m in markets.markets.values() if m.product.is_derivative}


async def adjustment_for(gateway: Any, user: str, asset: str) -> tuple[int, dict[str, str]]:
    """Σ over open positions margined in ``asset`` of (contribution at mark − initial margin),
    and the raw position hash (for the reduce-only test). Prices come from a brief cache."""
    markets: MarketSet = gateway.markets
    (raw_positions,) = await gateway.batched(lambda pipe: pipe.hgetall(keys.positions(user)))
    positions = [
        p
        for p in parse_positions(raw_positions)
        if p.market in markets.markets and markets.markets[p.market].quote.symbol == asset
    ]
    adjustment = 0
    for position in positions:
        market = markets.markets[position.market]
        prices = parse_prices(market, await gateway.prices(position.market))
        adjustment += equity_contribution(market, position, prices)
        adjustment -= initial_margin(market, position, prices)
    return adjustment, raw_positions


def only_reduces(raw_positions: dict, market: str, side: Side, qty: int) -> bool:
    """True if the order can only shrink the open position (opposite side, no larger)."""
    size = int(raw_positions.get(f"{market}:size") or 0)
    if side is Side.BUY:
        return size < 0 and qty <= -size
    return size > 0 and qty <= size


async def order_reservation(
    gateway: Any,
    user: str,
    market: Market,
    side: Side,
    order_type: OrderType,
    price: int,
    qty: int,
    reduce_only: bool,
) -> Reservation:
    """What the order locks, in which asset, and how the account script must judge it."""
    if market.product is Product.SPOT:
        if side is Side.SELL:
            base = market.base.symbol
            return Reservation(base, str(money.base_units(market, qty)), 0, "INSUFFICIENT_BALANCE")
        quote = market.quote.symbol
        if order_type is OrderType.MARKET and price == 0:
            return Reservation(quote, ALL_AVAILABLE, 0, "INSUFFICIENT_BALANCE")
        amount = money.spot_buy_reservation(market, price, qty)
        return Reservation(quote, str(amount), 0, "INSUFFICIENT_BALANCE")
    asset = market.quote.symbol
    adjustment, raw_positions = await adjustment_for(gateway, user, asset)
    reducing = reduce_only or only_reduces(raw_positions, market.symbol, side, qty)
    if price == 0:
        if not reducing:
            return Reservation(asset, ALL_AVAILABLE, adjustment, "INSUFFICIENT_MARGIN")
        price = parse_prices(market, await gateway.prices(market.symbol)).mark
    amount = money.notional(market, price, qty)
    fee = money.fee(amount, market.spec.takerFeeBps)
    if reducing:
        # Closing must stay possible for an account under water: judge the fee on cash alone.
        return Reservation(asset, str(fee), 0, "INSUFFICIENT_MARGIN")
    return Reservation(
        asset,
        str(money.derivative_reservation(market, price, qty)),
        adjustment,
        "INSUFFICIENT_MARGIN",
    )
