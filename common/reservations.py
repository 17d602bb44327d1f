"""What an open order's reservation must hold for its unfilled rest (API.md §2, §6).

The gateway locks a reservation when it accepts an order; the settler shrinks it as the
order fills, and the auditor checks it at quiet points. All three read the same formulas
here, so "reservations equal what open orders need" has one meaning. Exact integers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from common import money
from common.events import OrderCommand
from common.markets import Market
from common.types import Product, Side


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """Which formula reserved an order, with its limit price, quantity and amount reserved.

    ``kind``: ``quote`` (spot buy, option buy: notional + taker fee), ``base`` (spot sell:
    base units), ``deriv`` (a derivative order: taker fee on the whole, and on the part that
    may open or grow a position, at most ``open``: initial margin at ``margin_price`` plus the
    open loss, ``loss`` per unit of qty; ``im`` the initial margin bps it was reserved at, 0 for
    the market's), ``margin`` (initial margin + taker fee) and ``fee``
    (taker fee only) for commands that carry no ``open``, ``prop`` (anything else: the reserved
    amount pro rata, rounded up), ``none`` (MARKET orders: kept whole until the order
    finishes).
    """

    kind: str
    price: int
    qty: int
    reserved: int
    open: int = 0
    margin_price: int = 0
    loss: int = 0
    im: int = 0


NO_TERMS = OrderTerms("none", 0, 0, 0)

PAIR_HOLD = "|tpsl"
"""The suffix of a SPOT attached TP/SL pair's hold in ``dex:{u}:res``: ``<parent cid>|tpsl``
holds the base a BUY parent bought for its children to sell, or the quote a SELL parent's
children may spend buying the base back (docs/api.md "Attached TP/SL and position TP/SL");
never a clientOrderId, which has no ``|``."""


def pair_bound(take_profit: int, stop_loss: int) -> int:
    """The highest price a SPOT SELL parent's children fire at: the stop-loss (above the
    take-profit), else the take-profit."""
    return stop_loss or take_profit


def pair_hold(market: Market, take_profit: int, stop_loss: int, qty: int) -> int:
    """What a SPOT SELL parent's pair may spend buying back ``qty``: what a LIMIT BUY of
    ``qty`` at the bound reserves (notional + taker fee). The gateway locks it for the whole
    qty at admission; match/attached.lua ``buy_back`` is the same rule (capped by that lock)."""
    return money.spot_buy_reservation(market, pair_bound(take_profit, stop_loss), qty)


def reserve_asset(market: Market, side: str) -> str:
    """The asset an order of ``side`` locks on ``market``."""
    if market.product is Product.SPOT and side == Side.SELL:
        return market.base.symbol
    return market.quote.symbol


def derivative_terms(
    market: Market,
    side: str,
    price: int,
    qty: int,
    open_qty: int,
    index: int,
    mark: int,
    im: int = 0,
) -> OrderTerms:
    """What a derivative limit order reserves (API.md §6): the taker fee on ``qty``, and on
    the ``open_qty`` that may open or grow a position its initial margin (at the limit price;
    an option writer's on the underlying's ``index``; at ``im`` bps, 0 for the market's) plus
    its open loss against ``mark``."""
    is_buy = side == Side.BUY
    margin_price = index if market.product is Product.OPTION else price
    loss = money.open_loss_per_unit(is_buy, price, mark)
    reserved = derivative_need(market, price, qty, open_qty, margin_price, loss, im)
    return OrderTerms("deriv", price, qty, reserved, open_qty, margin_price, loss, im)


def derivative_need(
    market: Market,
    price: int,
    rest: int,
    open_qty: int,
    margin_price: int,
    loss: int,
    im: int = 0,
) -> int:
    """The taker fee on ``rest`` at ``price``, and on ``min(rest, open_qty)`` the initial
    margin at ``margin_price`` (``im`` bps, 0 for the market's) and the open loss of ``loss``
    per unit."""
    opening = min(rest, open_qty)
    spec = market.spec
    bps = im or spec.initialMarginBps or 0
    margin = money.margin(money.notional(market, margin_price, opening), bps)
    fee = money.fee(money.notional(market, price, rest), spec.takerFeeBps)
    return fee + margin + money.notional(market, loss, opening)


def order_terms(market: Market, side: str, command: OrderCommand, reserved: int) -> OrderTerms:
    """The terms the gateway reserved this order by: written in the command for a derivative
    order (``open``, ``mp``, ``loss``, and ``im`` when the account chose its initial margin),
    recognised from the amount otherwise."""
    price, qty = int(command.get("price", 0)), int(command.get("qty", 0))
    if command.get("type") == "MARKET" or price <= 0 or qty <= 0:
        return OrderTerms("none", price, qty, reserved)
    if market.product is not Product.SPOT and "open" in command:
        open_qty, margin_price = int(command["open"]), int(command.get("mp", price))
        return OrderTerms(
            "deriv",
            price,
            qty,
            reserved,
            open_qty,
            margin_price,
            int(command["loss"]),
            int(command.get("im", 0)),
        )
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
    return replace(terms, qty=matched_qty, open=min(terms.open, matched_qty))


def need(market: Market, terms: OrderTerms, rest: int) -> int | None:
    """What the order's reservation must hold with ``rest`` unfilled (``None``: not fixed).

    A ``deriv`` order keeps margin and open loss for ``min(rest, open)``: the matcher lets its
    fills open at most ``open`` in all, so that much may still open whatever filled before.
    """
    if terms.kind == "deriv":
        return derivative_need(
            market, terms.price, rest, terms.open, terms.margin_price, terms.loss, terms.im
        )
    if terms.kind == "quote":
        return money.spot_buy_reservation(market, terms.price, rest)
    if terms.kind == "base":
        return money.base_units(market, rest)
    if terms.kind == "margin":
        return money.derivative_reservation(market, terms.price, rest)
    if terms.kind == "fee":
        return money.fee(money.notional(market, terms.price, rest), market.spec.takerFeeBps)
    if terms.kind == "prop":
        return money.ceil_div(terms.reserved * rest, terms.qty)
    return None


def full_reservation(market: Market, side: str, command: OrderCommand) -> int:
    """What a LIMIT order of these terms reserves for its whole qty: the ``reserved`` an
    amended order's command carries, so that :func:`order_terms` recognises its terms."""
    price, qty = int(command["price"]), int(command["qty"])
    if market.product is not Product.SPOT and "open" in command:
        loss, open_qty = int(command["loss"]), int(command["open"])
        im = int(command.get("im", 0))
        return derivative_need(market, price, qty, open_qty, int(command["mp"]), loss, im)
    if market.product is Product.SPOT and side == Side.SELL:
        return money.base_units(market, qty)
    return money.spot_buy_reservation(market, price, qty)
