"""What an order or a withdrawal may take from an account (API.md §2, §5, §6).

SPOT: a buy locks notional + taker fee at its limit price, a sell its base quantity, a
price-0 MARKET buy everything available (its budget). An OPTION buy pays its premium as cash,
so it locks premium + fee like a spot buy.

Any other derivative order locks the taker fee, and for the part of it that may open or grow
a position its initial margin at the limit price (an option writer's on the underlying's
index notional) plus its open loss against the mark. The part that only reduces is measured
against the position net of the account's other open orders on the same side (margin
netting): orders that together would close more than the position reserve margin for the
excess. The matcher lets a fill open no more than that opening part (match.lua), so the
reservation holds whatever the position does before the order fills.

The free collateral is available balance + an *adjustment* (unrealized contribution at mark −
initial margin of the open positions) computed here with common/risk and handed to the account
script, which compares atomically and checks that the position and the side's open quantity
it was judged on are still those in the account (else the caller judges again).

Initial margin, of positions and of the order alike, is at the account's choice for each market
(``dex:{u}:lev``, docs/api.md "Leverage"), read with the positions; a derivative order whose
market has one carries it in its command as ``im``, so the matcher's budget and the settler's
trims use the value it was reserved at. Any value may be chosen at any time (services/gateway/
leverage.py), so an order judged on the value read just before a change is admitted as it
would have been had it arrived first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import keys, money
from common.markets import Market, MarketSet
from common.reservations import derivative_terms
from common.risk import (
    MarketPrices,
    equity_contribution,
    initial_margin,
    initial_margin_bps,
    parse_leverage,
    parse_positions,
    parse_prices,
)
from common.types import OrderType, Product, Side
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

ALL_AVAILABLE = "ALL"


@dataclass(slots=True)
class Guard:
    """What a derivative order was judged on, for the account script to compare and keep:
    the position's size and the side's unfilled open quantity (``dex:{u}:oq``). Not
    ``frozen``, as :class:`Reservation`."""

    position_field: str
    position_size: int
    open_field: str
    open_qty: int
    qty: int


@dataclass(slots=True)
class Reservation:
    """What an order locks and how the account script judges it, built once per admission.
    Not ``frozen`` (its ``__init__`` would set each field through ``object.__setattr__``, a
    cost paid on every order); nothing changes one after it is built."""

    asset: str
    amount: str  # a decimal integer, or ALL_AVAILABLE for a budget
    adjustment: int
    short_code: str
    headroom: int = 0
    """Free collateral the order needs beyond what it locks (a reducing part priced on the
    losing side of the mark realizes that loss; the margin it frees is counted against it)."""
    command: dict[str, int] = field(default_factory=dict)
    """Fields the matcher and the settler read: ``open`` (most the order may open), ``mp``
    (the price its margin is on) and ``loss`` (open loss per unit)."""
    guard: Guard | None = None


AccountState = tuple[int, dict[str, str], dict[str, str], dict[str, int]]
"""What :func:`account_state` reads of an account: the adjustment, the raw position hash, the
open-quantity hash and the account's initial margin choices (market -> bps)."""


def margin_assets(markets: MarketSet) -> set[str]:
    return {m.quote.symbol for m in markets.markets.values() if m.product.is_derivative}


async def account_state(gateway: Gateway, user: str, asset: str) -> AccountState:
    """Σ over open positions margined in ``asset`` of (contribution at mark − initial margin at
    the account's choice), the raw position hash, the open-quantity hash and the choices.
    Prices come from a brief cache."""
    markets = gateway.markets
    raw_positions, open_quantities, raw_leverage = await gateway.transport.execute(
        Commands()
        .hgetall(keys.positions(user))
        .hgetall(keys.open_quantities(user))
        .hgetall(keys.account_leverage(user))
    )
    leverage = parse_leverage(raw_leverage)
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
        adjustment -= initial_margin(market, position, prices, initial_margin_bps(market, leverage))
    return adjustment, raw_positions, open_quantities, leverage


async def adjustment_for(gateway: Gateway, user: str, asset: str) -> tuple[int, dict[str, str]]:
    """The adjustment of :func:`account_state` and the raw position hash."""
    adjustment, raw_positions, _, _ = await account_state(gateway, user, asset)
    return adjustment, raw_positions


async def market_prices(gateway: Gateway, market: Market) -> MarketPrices:
    return parse_prices(market, await gateway.prices(market.symbol))


def check_price_band(market: Market, price: int, prices: MarketPrices) -> None:
    """A PERP or FUTURE order priced more than ``priceBandBps`` from the mark is refused."""
    band = market.price_band_bps
    if band is None or price == 0:
        return
    low, high = money.price_band(prices.mark, band)
    if not low <= price <= high:
        raise ApiError(
            ErrorCode.INVALID_PRICE,
            f"price {price} is more than {band} bps from {market.symbol}'s mark {prices.mark}: "
            f"it must be between {low} and {high}",
        )


def reducible_qty(size: int, side: Side, others_open: int) -> int:
    """How much of a ``side`` order may only reduce a position of signed ``size``, net of the
    account's other open orders on that side (``others_open``, their unfilled qty)."""
    opposite = -size if side is Side.BUY else size
    return max(opposite - others_open, 0)


async def order_reservation(
    gateway: Gateway,
    user: str,
    market: Market,
    side: Side,
    order_type: OrderType,
    price: int,
    qty: int,
    reduce_only: bool,
    prices: MarketPrices | None = None,
    own_open: int = 0,
    open_ahead: int = 0,
    state: AccountState | None = None,
) -> Reservation:
    """What the order locks, in which asset, and how the account script must judge it
    (``prices``: the market's, when the caller has read them already; ``own_open``: the
    order's own share of its side's open quantity, when an amend judges an open order;
    ``open_ahead``: the unfilled qty of orders on the same market and side that the same
    account script admits before this one, as a signed batch's earlier actions, counted as
    open already; ``state``: :func:`account_state` of the order's margin asset, when the
    caller has read it already)."""
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
    if state is None:
        state = await account_state(gateway, user, asset)
    adjustment, raw_positions, open_quantities, leverage = state
    if market.product is Product.OPTION and side is Side.BUY:
        return option_buy_reservation(market, price, qty, adjustment)
    if prices is None:
        prices = await market_prices(gateway, market)
    position_field = f"{market.symbol}:size"
    size = int(raw_positions.get(position_field) or 0)
    open_field = keys.open_quantity_field(market.symbol, side.value)
    side_open = int(open_quantities.get(open_field) or 0) + open_ahead
    others_open = max(side_open - own_open, 0)
    guard = Guard(position_field, size, open_field, side_open, qty)
    reducing = qty if reduce_only else min(qty, reducible_qty(size, side, others_open))
    opening = qty - reducing
    im = initial_margin_bps(market, leverage)
    chosen = {"im": im} if im != market.spec.initialMarginBps else {}
    if price == 0:
        if opening:
            command = {"open": opening, **chosen}
            return Reservation(
                asset, ALL_AVAILABLE, adjustment, "INSUFFICIENT_MARGIN", 0, command, guard
            )
        # Only closes: the fee at the worst price it may trade at, judged on cash alone, so
        # an account under water can always close at the market (within the band).
        fee = money.fee(
            money.notional(market, worst_price(market, side, prices), qty), market.spec.takerFeeBps
        )
        return Reservation(asset, str(fee), 0, "INSUFFICIENT_MARGIN", 0, {"open": 0}, guard)
    terms = derivative_terms(market, side, price, qty, opening, prices.index, prices.mark, im)
    headroom = reducing_headroom(market, side, price, reducing, prices, im)
    command = {"open": opening, "mp": terms.margin_price, "loss": terms.loss, **chosen}
    if opening == 0 and headroom == 0:
        # Closing at or better than the mark stays possible for an account under water:
        # judge the fee on cash alone.
        adjustment = 0
    return Reservation(
        asset, str(terms.reserved), adjustment, "INSUFFICIENT_MARGIN", headroom, command, guard
    )


def worst_price(market: Market, side: Side, prices: MarketPrices) -> int:
    """The furthest price a MARKET order without protection may trade at: the band's edge
    (the mark where a product has no band)."""
    band = market.price_band_bps
    if band is None:
        return prices.mark
    low, high = money.price_band(prices.mark, band)
    return high if side is Side.BUY else low


def reducing_headroom(
    market: Market, side: Side, price: int, reducing: int, prices: MarketPrices, im: int = 0
) -> int:
    """What closing ``reducing`` at ``price`` would take from the account's equity at mark
    beyond the initial margin it frees at ``im`` bps (0: the market's; 0 when it closes at or
    better than the mark)."""
    if not reducing:
        return 0
    loss = money.notional(
        market, money.open_loss_per_unit(side is Side.BUY, price, prices.mark), reducing
    )
    if not loss:
        return 0
    freed = 0
    if market.product is not Product.OPTION:
        freed = money.margin(
            money.notional(market, prices.mark, reducing), im or market.spec.initialMarginBps or 0
        )
    return max(loss - freed, 0)


def option_buy_reservation(market: Market, price: int, qty: int, adjustment: int) -> Reservation:
    """An option buy pays its premium in cash at the fill, like a spot buy (API.md §8), so it
    locks premium notional + taker fee (a price-0 MARKET buy: everything available), covered by
    cash and never by unrealized gains: a negative adjustment still counts, a positive one not.
    """
    asset = market.quote.symbol
    cash_only = min(adjustment, 0)
    if price == 0:
        return Reservation(asset, ALL_AVAILABLE, cash_only, "INSUFFICIENT_MARGIN")
    amount = money.spot_buy_reservation(market, price, qty)
    return Reservation(asset, str(amount), cash_only, "INSUFFICIENT_MARGIN")
