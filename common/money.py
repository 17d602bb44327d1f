"""Exact integer money math (API.md §2). No float ever touches these values.

Every division names its rounding: fees and margins round up (in the exchange's favour);
nothing here rounds down silently.
"""

from __future__ import annotations

from common.markets import Market

BPS_DENOMINATOR = 10_000


def ceil_div(numerator: int, denominator: int) -> int:
    """``ceil(numerator / denominator)`` for a positive denominator, exact for any size."""
    if denominator <= 0:
        raise ValueError(f"denominator must be positive, got {denominator}")
    return -(-numerator // denominator)


def notional(market: Market, price: int, qty: int) -> int:
    """Quote atomic units of ``qty`` at ``price``: price × qty × 10^(quote.dec − pS − qS)."""
    return price * qty * market.notional_multiplier


def fee(amount: int, fee_bps: int) -> int:
    """The fee on a notional, rounded up: ``ceil(amount × bps / 10000)``."""
    return ceil_div(amount * fee_bps, BPS_DENOMINATOR)


def margin(amount: int, margin_bps: int) -> int:
    """A margin requirement on a notional, rounded up like a fee."""
    return ceil_div(amount * margin_bps, BPS_DENOMINATOR)


def base_units(market: Market, qty: int) -> int:
    """Base atomic units delivered for ``qty`` on a SPOT fill: qty × 10^(base.dec − qS)."""
    return qty * market.base_multiplier


def spot_buy_reservation(market: Market, price: int, qty: int) -> int:
    """What a resting SPOT buy locks: notional at its limit price plus the taker fee."""
    amount = notional(market, price, qty)
    return amount + fee(amount, market.spec.takerFeeBps)


def derivative_reservation(market: Market, price: int, qty: int) -> int:
    """What a derivative order locks: initial margin at its limit price plus the taker fee."""
    initial_bps = market.spec.initialMarginBps
    if initial_bps is None:
        raise ValueError(f"market {market.symbol} has no initialMarginBps")
    amount = notional(market, price, qty)
    return margin(amount, initial_bps) + fee(amount, market.spec.takerFeeBps)


def price_band(mark: int, band_bps: int) -> tuple[int, int]:
    """The lowest and highest price within ``band_bps`` of ``mark`` (API.md §6), inclusive:
    ``ceil(mark × (1 − bps/10⁴))`` and ``floor(mark × (1 + bps/10⁴))``."""
    low = ceil_div(mark * (BPS_DENOMINATOR - band_bps), BPS_DENOMINATOR)
    return max(low, 0), mark * (BPS_DENOMINATOR + band_bps) // BPS_DENOMINATOR


def open_loss_per_unit(is_buy: bool, price: int, mark: int) -> int:
    """How far an opening order's price is on the losing side of the mark, per unit of qty:
    a BUY above the mark loses ``price − mark``, a SELL below it ``mark − price``."""
    return max(price - mark, 0) if is_buy else max(mark - price, 0)


def format_price(value_numerator: int, value_denominator: int) -> str:
    """A decimal string of ``numerator / denominator`` for display (e.g. ``"300001.5"``).

    Exact when the fraction terminates in base 10; otherwise 18 digits, rounded toward zero.
    """
    if value_denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = "-" if value_numerator < 0 else ""
    whole, remainder = divmod(abs(value_numerator), value_denominator)
    if remainder == 0:
        return f"{sign}{whole}"
    digits: list[str] = []
    while remainder and len(digits) < 18:
        remainder *= 10
        digit, remainder = divmod(remainder, value_denominator)
        digits.append(str(digit))
    return f"{sign}{whole}.{''.join(digits).rstrip('0') or '0'}"
