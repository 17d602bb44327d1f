"""Signed cancels: one order, or all of a user's orders in one market or every market.

Both go through the matcher (only it may touch the book): the command names a ``reply`` key,
the matcher LPUSHes its result there, and the gateway waits for it a few seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from common import keys
from common.events import (
    COMMAND_FIELD,
    AdminCommand,
    CancelAllCommand,
    CancelCommand,
    dumps,
    loads,
)
from common.types import FINAL_STATUSES
from services.gateway import orders, ratelimit, shapes, signed, twap
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode

REPLY_WAIT_S = 5


async def ask_matcher(
    gateway: Gateway, symbol: str, command: CancelCommand | CancelAllCommand | AdminCommand
) -> Any | None:
    """XADD a command with a fresh reply key and wait for the matcher's answer (None: none)."""
    reply_key = keys.market_reply(symbol, uuid.uuid4().hex)
    command["reply"] = reply_key
    await gateway.redis.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(command)})
    answer = await gateway.transport.blpop(reply_key, REPLY_WAIT_S)
    if answer is None:
        return None
    return loads(answer[1])


async def refuse_if_overloaded(gateway: Gateway, symbols: list[str]) -> None:
    """503 OVERLOADED when a market stream already holds as many unmatched commands as allowed."""
    for symbol in symbols:
        if await gateway.backlog(symbol) >= gateway.settings.max_backlog:
            raise orders.overloaded(symbol)


async def cancel(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    message, sig = shapes.CANCEL.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    market = gateway.markets.markets[message["market"]]
    request = await signed.check_ts_and_signature(
        gateway, "Cancel", message, sig, user, market.symbol
    )
    await ratelimit.check_user(gateway, user)
    cid = message["clientOrderId"]
    order = await orders.read_order(gateway, user, cid)
    if order is None:
        ended = await twap.cancel(gateway, request, user, cid, market.symbol)
        if ended is not None:
            return ended
    if order is None or order["market"] != market.symbol:
        raise ApiError(ErrorCode.NOT_FOUND, f"no order {cid!r} of {user} in {market.symbol}")
    if await signed.signature_used(gateway, request):
        raise ApiError(ErrorCode.DUPLICATE, "this Cancel signature was already used")
    if order["status"] in FINAL_STATUSES:
        raise ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} is already {order['status']}")
    await refuse_if_overloaded(gateway, [market.symbol])
    await signed.claim_signature(gateway, request)
    command: CancelCommand = {"op": "cancel", "user": user, "cid": cid, "ts": message["ts"]}
    answer = await ask_matcher(gateway, market.symbol, command)
    current = await orders.read_order(gateway, user, cid)
    assert current is not None
    if answer is None:
        return 202, current
    result = answer.get("result")
    if result == "CLOSED":
        raise ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} finished before the cancel arrived")
    if result == "UNKNOWN":
        raise ApiError(ErrorCode.NOT_FOUND, f"the matcher of {market.symbol} does not know {cid!r}")
    return 200, current


async def cancel_all(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, int]]:
    message, sig = shapes.CANCEL_ALL.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    symbol = message["market"]
    request = await signed.check_ts_and_signature(
        gateway, "CancelAll", message, sig, user, symbol or None
    )
    await ratelimit.check_user(gateway, user)
    if await signed.signature_used(gateway, request):
        raise ApiError(ErrorCode.DUPLICATE, "this CancelAll signature was already used")
    symbols = [symbol] if symbol else list(gateway.markets.markets)
    await refuse_if_overloaded(gateway, symbols)
    await signed.claim_signature(gateway, request)
    await twap.end_all(gateway, user, symbols, "USER")
    answers = await asyncio.gather(
        *(
            ask_matcher(
                gateway,
                name,
                CancelAllCommand(op="cancel_all", user=user, ts=message["ts"]),
            )
            for name in symbols
        )
    )
    cancelled = sum(int(a.get("cancelled", 0)) for a in answers if a is not None)
    return (200 if all(a is not None for a in answers) else 202), {"cancelled": cancelled}
