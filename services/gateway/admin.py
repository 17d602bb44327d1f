"""Operator endpoints: deposits, oracle pushes, market status (halt/resume), audit (bearer
token only)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any, cast

from common import keys
from common.chain import configured
from common.events import COMMAND_FIELD, MAX_SAFE_INTEGER, AdminCommand, dumps
from common.events.names import MarketStatusName
from common.redis_client import connect
from common.risk import mark_price
from common.types import MarketStatus
from services.gateway import accounts, cancels, market_data, shapes
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands, score_pairs


def authorized(gateway: Gateway, authorization: str | None) -> bool:
    """True for ``Authorization: Bearer <DEX_ADMIN_TOKEN>`` alone, compared in constant time.

    An unset, empty or whitespace-only token is no token: nothing is authorized. The scheme
    is matched without regard to case (RFC 7235); a bare ``Authorization: <token>`` is not
    accepted. The header arrives decoded as Latin-1, so its bytes are compared with the
    token's UTF-8 bytes.
    """
    secret = gateway.settings.admin_token
    token = secret.get_secret_value().strip() if secret is not None else ""
    if not token or authorization is None:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    given = credentials.strip(" ").encode("latin-1", errors="replace")
    # Digests of equal length, so that not even the token's length shows in the timing.
    return hmac.compare_digest(
        hashlib.sha256(given).digest(), hashlib.sha256(token.encode()).digest()
    )


def require_admin(gateway: Gateway, authorization: str | None) -> None:
    """403 FORBIDDEN unless the call carries the admin token (see :func:`authorized`)."""
    if not authorized(gateway, authorization):
        raise ApiError(
            ErrorCode.FORBIDDEN, "admin endpoints need 'Authorization: Bearer <admin token>'"
        )


def parse_deposit(gateway: Gateway, body: dict[str, Any]) -> tuple[str, str, int, str | None]:
    """``(user, asset, amount in quanta, depositId or None)`` (``shapes.DEPOSIT``); the body's
    amount is in atomic units."""
    values = shapes.DEPOSIT.parse(body, gateway.markets)
    asset = values["asset"]
    user = accounts.account_id(values["userId"])
    amount = accounts.quanta(gateway.markets.assets[asset], values["amount"])
    return user, asset, amount, values.get("depositId")


async def claim_deposit_id(
    gateway: Gateway, deposit_id: str, user: str, asset: str, amount: int
) -> None:
    """Bind ``deposit_id`` to this deposit exchange-wide; 409 if it names another deposit.

    A retry of the same deposit (same id, userId, asset and amount) passes, and the account
    step then credits it unless it was credited already: a call that died after binding the
    id is completed by its retry, exactly once.
    """
    claimed = await gateway.transport.script(
        "deposit_claim", [keys.deposit_claim(deposit_id)], [dumps([user, asset, str(amount)])]
    )
    if claimed == "OTHER":
        raise ApiError(
            ErrorCode.DUPLICATE, f"depositId {deposit_id!r} was already used for a deposit"
        )


async def deposit(
    gateway: Gateway, user: str, asset: str, amount: int, deposit_id: str | None = None
) -> dict[str, str]:
    """Credit ``amount`` quanta; the script refuses a total that would reach 2^53 quanta."""
    quantum = gateway.markets.assets[asset].quantum
    if deposit_id is not None:
        await claim_deposit_id(gateway, deposit_id, user, asset, amount)
    try:
        total, locked = await gateway.transport.script(
            "deposit",
            [keys.balances(user), keys.account_deposits(user)],
            [asset, amount, MAX_SAFE_INTEGER, deposit_id or ""],
        )
    except Exception as exc:
        if str(exc).startswith("DUPLICATE"):
            raise ApiError(
                ErrorCode.DUPLICATE, f"depositId {deposit_id!r} was already credited"
            ) from None
        if "BALANCE_CEILING" in str(exc):
            raise ApiError(
                ErrorCode.LIMIT_EXCEEDED,
                f"the deposit would take {user}'s {asset} balance to 2^53 quanta "
                f"({2**53 * quantum} atomic units) or more",
            ) from None
        raise
    await gateway.redis.sadd(keys.known_accounts(), user)
    return accounts.balance_view(int(total), int(locked), quantum)


def parse_oracle(gateway: Gateway, body: dict[str, Any]) -> tuple[str, int]:
    """``(market, index price)`` (``shapes.ORACLE``)."""
    values = shapes.ORACLE.parse(body, gateway.markets)
    return values["market"], values["indexPrice"]


async def push_oracle(gateway: Gateway, symbol: str, index: int) -> dict[str, Any]:
    """Store the static and current index, then the mark = median(index, best bid, best ask)."""
    market = gateway.markets.markets[symbol]
    bids, asks = await gateway.transport.gather(
        Commands()
        .zrange_with_scores(keys.book_bids(symbol), 0, 0)
        .zrange_with_scores(keys.book_asks(symbol), 0, 0)
    )
    best_bid = -int(score_pairs(bids)[0][1]) if bids else None
    best_ask = int(score_pairs(asks)[0][1]) if asks else None
    mark = mark_price(market, index, best_bid, best_ask)
    await gateway.redis.hset(
        keys.market_prices(symbol), mapping={"static": index, "index": index, "mark": mark}
    )
    gateway.forget_prices(symbol)
    if await gateway.redis.exists(*keys.market_price_triggers(symbol)):
        # the market's MARK and INDEX trigger orders are judged at the new prices
        command: AdminCommand = {"op": "prices", "ts": _now_ms()}
        await gateway.redis.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(command)})
    return {"market": symbol, "indexPrice": index, "markPrice": mark}


def parse_status(gateway: Gateway, body: dict[str, Any]) -> str:
    """The status to set (``shapes.MARKET_STATUS``; 400 INVALID_REQUEST otherwise)."""
    return str(shapes.MARKET_STATUS.parse(body, gateway.markets)["status"])


async def set_status(
    gateway: Gateway, symbol: str, op: str, status: str = ""
) -> tuple[int, dict[str, Any]]:
    """Send ``halt``/``resume``, or ``status`` with the status to set, to the market's matcher
    (through its stream, so the change is ordered with the orders) and answer with the market.
    ``status``: REDUCE_ONLY on a spot market is 400 INVALID_REQUEST, an expired market 422
    MARKET_CLOSED (EXPIRED is final; halt/resume of it answer the market unchanged)."""
    market = gateway.markets.markets[symbol]
    if status == MarketStatus.REDUCE_ONLY and not market.product.is_derivative:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"{symbol} is a spot market: it has no REDUCE_ONLY status"
        )
    if op == "status" and await gateway.market_status(market, fresh=True) == MarketStatus.EXPIRED:
        raise ApiError(ErrorCode.MARKET_CLOSED, f"market {symbol} has expired")
    command: AdminCommand
    if op == "status":
        command = {"op": "status", "status": cast(MarketStatusName, status), "ts": _now_ms()}
    else:
        command = {"op": "halt" if op == "halt" else "resume", "ts": _now_ms()}
    answer = await cancels.ask_matcher(gateway, symbol, command)
    gateway.forget_status(symbol)
    view = await market_data.market_view(gateway, market, fresh=True)
    return (200 if answer is not None else 202), view


async def audit(gateway: Gateway) -> Any:
    try:
        from common.audit import audit as run_audit
    except ImportError:
        raise ApiError(
            ErrorCode.UNAVAILABLE, "the auditor is not available in this build"
        ) from None
    client = connect(gateway.settings)
    try:
        chain = configured(gateway.settings.chain_rpc_url)  # the vault's holdings, if any
        return await asyncio.to_thread(
            run_audit, client, gateway.markets, chain, gateway.settings.verifying_contract
        )
    finally:
        client.close()


# How many unsettled events the operator read counts at most per market (docs/api.md
# "Operator reads"): enough to tell a lag from a stall without reading a long stream.
UNSETTLED_COUNT_CAP = 1000


async def market_health(gateway: Gateway) -> list[dict[str, Any]]:
    """Every market's status, stream backlog (commands not yet matched) and settlement lag:
    the events past the settlement cursor (counted up to ``UNSETTLED_COUNT_CAP``) and the age
    in ms of the oldest of them (0 when all are settled)."""
    rows = []
    for market in gateway.markets.markets.values():
        symbol = market.symbol
        cursor = str(await gateway.redis.get(keys.market_settled(symbol)) or "0-0")
        unsettled = (
            await gateway.redis.xrange(
                keys.market_events(symbol), min=f"({cursor}", count=UNSETTLED_COUNT_CAP
            )
            or []
        )
        oldest = int(str(unsettled[0][0]).split("-")[0]) if unsettled else None
        rows.append(
            {
                "market": symbol,
                "status": await gateway.market_status(market, fresh=True),
                "backlog": await gateway.backlog(symbol, fresh=True),
                "unsettledEvents": len(unsettled),
                "settlementLagMs": 0 if oldest is None else max(0, _now_ms() - oldest),
            }
        )
    return rows


def _now_ms() -> int:
    return int(time.time() * 1000)
