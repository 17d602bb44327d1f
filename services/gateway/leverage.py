"""Leverage: the initial margin an account uses in each derivative market (docs/api.md
"Leverage").

A signed ``SetLeverage`` stores the account's choice in ``dex:{u}:lev`` (market -> bps, from
the market's ``initialMarginBps`` to 10000; 0 removes it). Every reservation from then on
(funds.py) and the margin reads (common/account_reads.py) use it; maintenance margin, and with
it liquidation, stays the market's. Margin here is cross margin computed at the mark, never
moved into a position, so no change needs funds moved and any allowed value may be chosen at
any time: a higher initial margin may leave the free collateral below zero, which only stops
new opening orders and withdrawals until it is back above.
"""

from __future__ import annotations

from typing import Any

from common import keys
from common.markets import Market
from common.risk import initial_margin_bps, parse_leverage
from services.gateway import ratelimit, shapes, signed
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands


async def set_leverage(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """Set (or with 0 clear) the account's initial margin in one derivative market.

    Order of checks: the body (shapes.SET_LEVERAGE: userId, market listed (UNKNOWN_MARKET) and
    derivative, initialMarginBps 0 or from the market's to 10000), STALE_TS,
    INVALID_SIGNATURE, an agent's FORBIDDEN, the user's rate limit, DUPLICATE.
    """
    message, sig = shapes.SET_LEVERAGE.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    market = gateway.markets.markets[message["market"]]
    bps = int(message["initialMarginBps"])
    request = await signed.check_ts_and_signature(
        gateway, "SetLeverage", message, sig, user, market.symbol
    )
    await ratelimit.check_user(gateway, user)
    sig_key = keys.used_signature(user, signed.digest_hex(gateway, request))
    verdict = await gateway.transport.script(
        "set_leverage",
        [keys.account_leverage(user), sig_key],
        [market.symbol, bps, signed.replay_ttl_ms(gateway)],
    )
    if verdict == "DUPLICATE":
        raise ApiError(ErrorCode.DUPLICATE, "this SetLeverage signature was already used")
    return view(user, market, bps or None)


async def list_leverage(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    """Every derivative market's initial margin for the account: its choice or the market's."""
    (raw,) = await gateway.transport.execute(Commands().hgetall(keys.account_leverage(user)))
    chosen = parse_leverage(raw)
    return [
        view(user, market, chosen.get(symbol))
        for symbol, market in gateway.markets.markets.items()
        if market.product.is_derivative
    ]


def view(user: str, market: Market, chosen: int | None) -> dict[str, Any]:
    """The answer's shape: the effective bps, the leverage it gives, and whether it is chosen."""
    bps = initial_margin_bps(market, {market.symbol: chosen} if chosen else None)
    return {
        "userId": user,
        "market": market.symbol,
        "initialMarginBps": bps,
        "leverage": leverage_text(bps),
        "chosen": chosen is not None,
    }


def leverage_text(bps: int) -> str:
    """10000 / bps as a decimal string, rounded down to hundredths ("10", "6.66", "1")."""
    hundredths = 1_000_000 // bps
    whole, cents = divmod(hundredths, 100)
    return str(whole) if cents == 0 else f"{whole}.{cents:02d}".rstrip("0")
