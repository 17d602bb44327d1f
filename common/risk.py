"""Positions, unrealized PnL and margin, in exact integers (API.md §5 margin, §8).

Shared by the gateway (margin checks, REST positions and margin), the settler (liquidation)
and the broadcaster (``pnl:`` topic), so every door computes an account's health the same way.

Position fields live in ``dex:{u}:pos`` as ``<market>:size`` (signed qty, + long),
``<market>:entry`` (signed entry notional in quote atomic units: + for a long),
``<market>:rpnl`` (realized PnL) and ``<market>:funding`` (funding received, + when paid out).
Market prices live in ``dex:{m}:px`` as ``index`` and ``mark`` (an OPTION's ``index`` is its
underlying's index, its ``mark`` the option's own premium mark). The initial margin an account
chose per market (docs/api.md "Leverage") lives in ``dex:{u}:lev``; maintenance margin is the
market's alone, so leverage never moves the liquidation line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common import keys, money
from common.markets import Market, MarketSet
from common.types import OptionType, Product

POSITION_FIELDS = ("size", "entry", "rpnl", "funding")


@dataclass(frozen=True, slots=True)
class Position:
    market: str
    size: int
    entry_notional: int
    realized_pnl: int = 0
    funding_paid: int = 0


@dataclass(frozen=True, slots=True)
class MarketPrices:
    index: int
    mark: int


@dataclass(frozen=True, slots=True)
class AccountMargin:
    equity: int
    initial_margin: int
    maintenance_margin: int
    free_collateral: int
    unrealized_pnl: int

    def public(self) -> dict[str, str]:
        return {
            "equity": str(self.equity),
            "initialMargin": str(self.initial_margin),
            "maintenanceMargin": str(self.maintenance_margin),
            "freeCollateral": str(self.free_collateral),
            "unrealizedPnl": str(self.unrealized_pnl),
        }


def parse_positions(raw: Mapping[str, str], open_only: bool = True) -> list[Position]:
    """Positions from a ``dex:{u}:pos`` hash; with ``open_only``, those of non-zero size."""
    fields: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        market, _, field = name.rpartition(":")
        if field in POSITION_FIELDS:
            fields.setdefault(market, {})[field] = int(value)
    result = [
        Position(
            market=market,
            size=values.get("size", 0),
            entry_notional=values.get("entry", 0),
            realized_pnl=values.get("rpnl", 0),
            funding_paid=values.get("funding", 0),
        )
        for market, values in sorted(fields.items())
    ]
    return [p for p in result if p.size != 0] if open_only else result


def parse_leverage(raw: Mapping[str, str]) -> dict[str, int]:
    """Market -> initial margin bps from a ``dex:{u}:lev`` hash (markets not chosen: absent)."""
    return {market: int(bps) for market, bps in raw.items()}


def initial_margin_bps(market: Market, leverage: Mapping[str, int] | None = None) -> int:
    """The initial margin bps an account uses on ``market``: its choice, else the market's, and
    never below the market's (a markets file that raised it since the choice wins)."""
    floor = market.spec.initialMarginBps or 0
    chosen = leverage.get(market.symbol) if leverage else None
    return max(chosen or 0, floor)


def parse_prices(market: Market, raw: Mapping[str, str]) -> MarketPrices:
    """Prices from a ``dex:{m}:px`` hash; before the oracle's first run, the file's index."""
    index = int(raw.get("index") or market.spec.indexPrice)
    if "mark" in raw:
        mark = int(raw["mark"])
    elif market.product is Product.OPTION:
        mark = intrinsic_value(market, index)
    else:
        mark = index
    return MarketPrices(index=index, mark=mark)


def intrinsic_value(market: Market, underlying_index: int) -> int:
    """An option's intrinsic value per unit at the underlying's index, in price units."""
    strike = market.spec.strike or 0
    if market.spec.optionType is OptionType.PUT:
        return max(strike - underlying_index, 0)
    return max(underlying_index - strike, 0)


def mark_price(market: Market, index: int, best_bid: int | None, best_ask: int | None) -> int:
    """median(index term, best bid, best ask) (API.md §8); with either side empty, the index term.

    For an OPTION ``index`` is the underlying's index and the first term is the option's
    intrinsic value at it. The median of three integers is one of them, so nothing rounds.
    """
    first = intrinsic_value(market, index) if market.product is Product.OPTION else index
    if best_bid is None or best_ask is None:
        return first
    return sorted((first, best_bid, best_ask))[1]


def signed_notional(market: Market, price: int, size: int) -> int:
    """Notional of a signed size at ``price``: negative for a short."""
    amount = money.notional(market, price, abs(size))
    return amount if size >= 0 else -amount


def unrealized_pnl(market: Market, position: Position, prices: MarketPrices) -> int:
    """Mark-to-market gain against the entry notional (for display and for equity)."""
    return signed_notional(market, prices.mark, position.size) - position.entry_notional


def equity_contribution(market: Market, position: Position, prices: MarketPrices) -> int:
    """What a position adds to its collateral asset's equity.

    PERP/FUTURE: the unrealized PnL (their entry notional never moved as cash). OPTION: the
    position's value at mark, since the premium already moved as cash at the fill.
    """
    if market.product is Product.OPTION:
        return signed_notional(market, prices.mark, position.size)
    return unrealized_pnl(market, position, prices)


def _margin_base(market: Market, position: Position, prices: MarketPrices) -> int:
    if market.product is Product.OPTION:
        # Only a writer (short) posts margin, on the underlying's index notional.
        return money.notional(market, prices.index, -position.size) if position.size < 0 else 0
    return money.notional(market, prices.mark, abs(position.size))


def initial_margin(
    market: Market, position: Position, prices: MarketPrices, im_bps: int | None = None
) -> int:
    """The position's initial margin at mark, at ``im_bps`` (None: the market's)."""
    bps = im_bps or market.spec.initialMarginBps or 0
    return money.margin(_margin_base(market, position, prices), bps)


def maintenance_margin(market: Market, position: Position, prices: MarketPrices) -> int:
    base = _margin_base(market, position, prices)
    return money.margin(base, market.spec.maintenanceMarginBps or 0)


def account_margin(
    markets: MarketSet,
    balances: Mapping[str, str],
    positions: list[Position],
    prices: Mapping[str, MarketPrices],
    leverage: Mapping[str, int] | None = None,
) -> dict[str, AccountMargin]:
    """Per collateral asset: equity = total + Σ equity contributions; margins at mark (initial
    margin at the account's ``leverage`` choices, :func:`parse_leverage`);
    freeCollateral = equity − initialMargin − locked. ``balances`` is a ``dex:{u}:bal`` hash."""
    assets: set[str] = {
        market.quote.symbol for market in markets.markets.values() if market.product.is_derivative
    }
    upnl = dict.fromkeys(assets, 0)
    contribution = dict.fromkeys(assets, 0)
    im = dict.fromkeys(assets, 0)
    mm = dict.fromkeys(assets, 0)
    for position in positions:
        market = markets.markets[position.market]
        asset = market.quote.symbol
        market_prices = prices[position.market]
        upnl[asset] += unrealized_pnl(market, position, market_prices)
        contribution[asset] += equity_contribution(market, position, market_prices)
        im[asset] += initial_margin(
            market, position, market_prices, initial_margin_bps(market, leverage)
        )
        mm[asset] += maintenance_margin(market, position, market_prices)
    result: dict[str, AccountMargin] = {}
    for asset in sorted(assets):
        total = int(balances.get(keys.total_field(asset), 0))
        locked = int(balances.get(keys.locked_field(asset), 0))
        equity = total + contribution[asset]
        result[asset] = AccountMargin(
            equity=equity,
            initial_margin=im[asset],
            maintenance_margin=mm[asset],
            free_collateral=equity - im[asset] - locked,
            unrealized_pnl=upnl[asset],
        )
    return result
