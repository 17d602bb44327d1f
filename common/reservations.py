"""What an open order's reservation must hold for its unfilled rest (API.md §2, §6).

The gateway locks a reservation when it accepts an order; the settler shrinks it as the
order fills, and the auditor checks it at quiet points. All three read the same formulas
here, so "reservations equal what open orders need" has one meaning. Exact integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from common import money
from common.markets import Market
from common.types import Product, Side


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """Which formula reserved an order, with its limit price, quantity and amount reserved.

    ``kind``: ``quote`` (spot buy: notional + taker fee), ``base`` (spot sell: base units),
    ``margin`` (derivative: initial margin + taker fee), ``fee`` (a reduce-only derivative:
    taker fee only), ``prop`` (anything else: the reserved amount pro rata, rounded up),
    ``none`` (MARKET orders: kept whole until the order finishes).
    """

    kind: str
    price: int
    qty: int
    reserved: int


NO_TERMS = OrderTerms("none", 0, 0, 0)


def reserve_asset(market: Market, side: str) -> str:
    """The asset an order of ``side`` locks on ``market``."""
    if market.product is Product.SPOT and side == Side.SELL:
        return market.base.symbol
    return market.quote.symbol


def order_terms(market: Market, side: str, command: Mapping[str, Any], reserved: int) -> OrderTerms:
    """Recognise which of the gateway's formulas reserved this order."""
    price, qty = int(command.get("price", 0)), int(command.get("qty", 0))
    if command.get("type") == "MARKET" or price <= 0 or qty <= 0:
        return OrderTerms("none", price, qty, reserved)
    if market.product is Product.SPOT:
        if side == Side.SELL:
            return OrderTerms("base", price, qty, reserved)
        if reserved == money.spot_buy_reservation(market, price, qty):
            return OrderTerms("quote", price, qty, reserved)
        return OrderTerms("prop", price, qty, reserved)
    amount = money.notional(market, price, qty)
    candidates = [
        ("margin", money.derivative_reservation(market, price, qty)),
        ("quote", amount + money.fee(amount, market.spec.takerFeeBps)),
        ("fee", money.fee(amount, market.spec.takerFeeBps)),
    ]
    for kind, full in candidates:
        if reserved == full:
            return OrderTerms(kind, price, qty, reserved)
    return OrderTerms("prop", price, qty, reserved)


def with_matched_qty(terms: OrderTerms, matched_qty: int | None) -> OrderTerms:
    """The terms with the quantity the matcher kept (a reduce-only order is cut to the
    position's size); a pro-rata reservation keeps the quantity it was reserved for."""
    if matched_qty is None or matched_qty >= terms.qty or terms.kind in ("prop", "none"):
        return terms
    return replace(terms, qty=matched_qty)


def need(market: Market, terms: OrderTerms, rest: int) -> int | None:
    """What the order's reservation must hold with ``rest`` unfilled (``None``: not fixed)."""
    amount = money.notional(market, terms.price, rest)
    taker = market.spec.takerFeeBps
    if terms.kind == "quote":
        return amount + money.fee(amount, taker)
    if terms.kind == "base":
        return money.base_units(market, rest)
    if terms.kind == "margin":
        return money.margin(amount, market.spec.initialMarginBps or 0) + money.fee(amount, taker)
    if terms.kind == "fee":
        return money.fee(amount, taker)
    if terms.kind == "prop":
        return money.ceil_div(terms.reserved * rest, terms.qty)
    return None
