"""Exact integer money math (API.md §2). No float ever touches these values.

Amounts are counted in each asset's quanta (``common.markets.Asset.quantum``; 1 atomic unit
for an asset of up to 9 decimals): the market multipliers already count in quanta, so every
function below answers in quanta. Wire amounts convert at the door with :func:`to_quanta`
(refusing a fraction of a quantum) and :func:`to_atomic`.

Every division names its rounding: fees and margins round up (in the exchange's favour);
nothing here rounds down silently.
"""

from __future__ import annotations

from common.markets import Asset, Market

BPS_DENOMINATOR = 10_000
LIMIT = 2**53
"""Every balance, notional and position value stays below this many quanta (API.md §2)."""


class OffQuantum(ValueError):
    """An amount on the wire that is not a whole number of its asset's quanta."""


def to_quanta(asset: Asset, atomic: int) -> int:
    """Quanta of an amount given in atomic units; :class:`OffQuantum` if not a multiple."""
    quanta, rest = divmod(atomic, asset.quantum)
    if rest:
        raise OffQuantum(
            f"{atomic} is not a multiple of {asset.symbol}'s quantum {asset.quantum} atomic units"
        )
    return quanta


def to_atomic(asset: Asset, quanta: int | str) -> int:
    """Atomic units (the wire's) of an amount counted in quanta."""
    return int(quanta) * asset.quantum


def atomic_text(asset: Asset, quanta: int | str) -> str:
    """:func:`to_atomic` as the decimal string the wire carries amounts in."""
    if asset.quantum == 1:
        return str(quanta)
    return str(int(quanta) * asset.quantum)


def within_limit(*amounts: int) -> bool:
    """True if every amount (in quanta) is below 2^53 in size."""
    return all(-LIMIT < amount < LIMIT for amount in amounts)


def ceil_div(numerator: int, denominator: int) -> int:
    """``ceil(numerator / denominator)`` for a positive denominator, exact for any size."""
    if denominator <= 0:
        raise ValueError(f"denominator must be positive, got {denominator}")
    return -(-numerator // denominator)


def notional(market: Market, price: int, qty: int) -> int:
    """Quote quanta of ``qty`` at ``price``: price × qty × the market's notional multiplier."""
    return price * qty * market.notional_multiplier


def fee(amount: int, fee_bps: int) -> int:
    """The fee on a notional, rounded up: ``ceil(amount × bps / 10000)``."""
    return ceil_div(amount * fee_bps, BPS_DENOMINATOR)


def margin(amount: int, margin_bps: int) -> int:
    """A margin requirement on a notional, rounded up like a fee."""
    return ceil_div(amount * margin_bps, BPS_DENOMINATOR)


def base_units(market: Market, qty: int) -> int:
    """Base quanta delivered for ``qty`` on a SPOT fill: qty × the market's base multiplier."""
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
