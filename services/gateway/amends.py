"""Signed amends: a resting LIMIT order's new price and total qty, its clientOrderId kept.

Two steps, so that every door shares them: :func:`verify_amend` parses the body and checks who
signed it; :func:`admit_amend` admits an amend already verified. :func:`amend` is both, for the
REST route and WebSocket order entry. A signed batch verifies one signature for all its items:
:func:`verify_batch_item` checks an item's fields, :func:`check_amend` the checks before the
account, and :func:`amend_terms` gives the values the account script (``admission/amend.lua``,
which ``amend_order.lua`` and the batch's ``accept_batch.lua`` both run) needs.

The reservation rule (docs/api.md "Amend"): while an amend is in flight the order's
reservation never holds less than either version of the order needs. ``amend_order.lua`` (the
account's slot) raises it to cover the new terms and counts the amend pending on the accepted
record; the matcher (the market's slot) takes or refuses it and says so in an ``amend``
settlement event; the settler then makes the new terms the order's and, once no amend is
pending, sets the reservation to exactly what they need for the order's rest.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from common import keys, money
from common.events import COMMAND_FIELD, AmendCommand, dumps
from common.markets import Market
from common.reservations import full_reservation
from common.types import FINAL_STATUSES, MarketStatus, OrderType, Side, TriggerType
from services.gateway import cancels, funds, orders, ratelimit, shapes, signed
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

log = logging.getLogger("services.gateway")


@dataclass(frozen=True, slots=True)
class VerifiedAmend:
    """An amend whose body and signer were checked: the message's values, who it is for, and
    the digest its replay is refused by (None: the caller guards replays, e.g. a batch)."""

    message: dict[str, Any]
    user: str
    market: Market
    digest: str | None
    agent: str | None = None


async def amend(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Verify and admit one signed Amend: (200, the order after it) once the matcher took it,
    (202, the order as it stands) when the matcher did not answer in time; else ApiError."""
    return await admit_amend(gateway, await verify_amend(gateway, body))


async def verify_amend(gateway: Gateway, body: dict[str, Any]) -> VerifiedAmend:
    """The body's checks in their order (400), the price band (400 INVALID_PRICE), then
    STALE_TS, INVALID_SIGNATURE (401) and an agent's FORBIDDEN (403)."""
    message, sig = shapes.AMEND.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    market = await banded_market(gateway, message)
    agent = await signed.authorize(gateway, "Amend", message, sig, user, market.symbol)
    digest = gateway.verifier.digest("Amend", message).hex()
    return VerifiedAmend(message, user, market, digest, agent)


async def verify_batch_item(
    gateway: Gateway, item: dict[str, Any], agent: str | None = None
) -> VerifiedAmend:
    """An amend carried by a request whose one signature the caller has verified (a signed
    batch): its fields checked as an Amend body's (``shapes.AMEND_ITEM``, 400s in the same
    order) and the price band. Its replays are the caller's to refuse (``digest`` None)."""
    message = shapes.AMEND_ITEM.parse(item, gateway.markets)
    market = await banded_market(gateway, message)
    return VerifiedAmend(message, message["userId"].lower(), market, None, agent)


async def banded_market(gateway: Gateway, message: dict[str, Any]) -> Market:
    """The amend's market, once its new price is within the price band (400 INVALID_PRICE)."""
    market = gateway.markets.markets[message["market"]]
    if market.price_band_bps is not None:
        funds.check_price_band(market, message["price"], await funds.market_prices(gateway, market))
    return market


async def admit_amend(gateway: Gateway, amend: VerifiedAmend) -> tuple[int, dict[str, Any]]:
    """Admit a verified amend, in the documented order of checks: 429, then
    :func:`check_amend`'s, then the account script (409 DUPLICATE / ORDER_CLOSED, 422
    INSUFFICIENT_*, LIMIT_EXCEEDED), then the matcher's verdict."""
    user, market, message = amend.user, amend.market, amend.message
    cid = message["clientOrderId"]
    await ratelimit.check_user(gateway, user)
    await check_amend(gateway, amend)
    sig_key = keys.used_signature(user, amend.digest or f"amend:{uuid.uuid4().hex}")
    aid = uuid.uuid4().hex
    reply_key = keys.market_reply(market.symbol, aid)
    command = await reserve(gateway, amend, sig_key, aid, reply_key)
    if gateway.via_outbox:
        try:
            await gateway.transport.execute(
                Commands().xadd(keys.market_in(market.symbol), {COMMAND_FIELD: command})
            )
        except Exception:
            # The raise stays until the order ends: never less than either version needs.
            log.warning("amend %s of %s is reserved but not sent", cid, user, exc_info=True)
            raise ApiError(
                ErrorCode.UNAVAILABLE, f"market {market.symbol}'s stream refused the amend"
            ) from None
    answer = await gateway.transport.blpop(reply_key, cancels.REPLY_WAIT_S)
    current = await orders.read_order(gateway, user, cid)
    assert current is not None
    if answer is None:
        return 202, current
    verdict = orjson.loads(answer[1])
    raise_refusal(cid, market.symbol, verdict)
    return 200, current


async def check_amend(
    gateway: Gateway, amend: VerifiedAmend, order: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The amend's checks before its account script, in their order: 404 NOT_FOUND (no such
    order of the user in the market), 409 DUPLICATE (when the amend has its own signature),
    ORDER_CLOSED, 400 INVALID_ORDER (not a LIMIT order), 409 FILLED_CHANGED,
    QTY_NOT_ABOVE_FILLED (as last known here), 422 the market's refusal, 503 OVERLOADED.
    Returns the order as read, or as the caller gave it (``order``: one a signed batch places
    before amending it, not yet recorded). (The user's rate limit is the caller's: a single
    amend takes a token first, a batch one per action.)"""
    user, market, message = amend.user, amend.market, amend.message
    cid, qty = message["clientOrderId"], message["qty"]
    if order is None:
        order = await orders.read_order(gateway, user, cid)
    if order is None or order["market"] != market.symbol:
        raise ApiError(ErrorCode.NOT_FOUND, f"no order {cid!r} of {user} in {market.symbol}")
    if amend.digest and await gateway.redis.exists(keys.used_signature(user, amend.digest)):
        raise ApiError(ErrorCode.DUPLICATE, "this Amend signature was already used")
    if order["status"] in FINAL_STATUSES:
        raise ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} is already {order['status']}")
    if order["type"] not in (
        OrderType.LIMIT,
        TriggerType.STOP_LIMIT,
        TriggerType.TAKE_PROFIT_LIMIT,
    ):
        raise ApiError(ErrorCode.INVALID_ORDER, f"order {cid!r} is a MARKET order: only LIMIT")
    check_filled(cid, message["expectedFilled"], qty, int(order.get("filled") or 0))
    refusal = amend_refusal(await gateway.market_status(market), message["price"], qty, order)
    if refusal:
        raise ApiError(ErrorCode[refusal], amend_status_message(refusal, market.symbol))
    await cancels.refuse_if_overloaded(gateway, [market.symbol])
    return order


def amend_refusal(status: str, price: int, qty: int, order: dict[str, Any]) -> str:
    """The 422 code for an amend the market's status refuses, or "" (docs/api.md "Market
    states"; match/amend.lua judges the same): HALTED and EXPIRED none, CANCEL_ONLY none,
    REDUCE_ONLY only a qty not above the order's at its price. (POST_ONLY: the book judges
    whether the new price would cross, POST_ONLY_WOULD_CROSS.)"""
    if status == MarketStatus.HALTED:
        return "MARKET_HALTED"
    if status == MarketStatus.EXPIRED:
        return "MARKET_CLOSED"
    if status == MarketStatus.CANCEL_ONLY:
        return "MARKET_CANCEL_ONLY"
    if status == MarketStatus.REDUCE_ONLY and (
        price != int(order["price"]) or qty > int(order["qty"])
    ):
        return "MARKET_REDUCE_ONLY"
    return ""


def amend_status_message(code: str, symbol: str) -> str:
    if code == "MARKET_REDUCE_ONLY":
        return f"market {symbol} takes only amends that lower the qty at the same price now"
    if code == "MARKET_CANCEL_ONLY":
        return f"market {symbol} takes only cancels now"
    return f"market {symbol} takes no amends now"


def check_filled(cid: str, expected: int, qty: int, filled: int) -> None:
    """The book's own refusals, judged early on what the gateway last saw of the order."""
    if expected >= 0 and expected != filled:
        raise ApiError(
            ErrorCode.FILLED_CHANGED,
            f"order {cid!r} has filled {filled}, not the expectedFilled {expected}",
        )
    if qty <= filled:
        raise ApiError(
            ErrorCode.QTY_NOT_ABOVE_FILLED,
            f"the new qty {qty} is not above the {filled} order {cid!r} has filled",
        )


def raise_refusal(cid: str, symbol: str, verdict: dict[str, Any]) -> None:
    """ApiError for the matcher's refusal of the amend (nothing when it took it)."""
    result, filled = verdict.get("amend"), verdict.get("filled")
    if result == "AMENDED":
        return
    if result == "UNKNOWN":
        raise ApiError(ErrorCode.NOT_FOUND, f"the matcher of {symbol} does not know {cid!r}")
    if result == "CLOSED":
        raise ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} finished before the amend arrived")
    if result == "MARKET_HALTED":
        raise ApiError(ErrorCode.MARKET_HALTED, f"market {symbol} is halted")
    if result in ("MARKET_CANCEL_ONLY", "MARKET_REDUCE_ONLY"):
        raise ApiError(ErrorCode[result], amend_status_message(result, symbol))
    if result == "FILLED_CHANGED":
        raise ApiError(
            ErrorCode.FILLED_CHANGED, f"order {cid!r} has filled {filled}, not expectedFilled"
        )
    if result == "QTY_NOT_ABOVE_FILLED":
        raise ApiError(
            ErrorCode.QTY_NOT_ABOVE_FILLED,
            f"order {cid!r} has filled {filled}: the new qty is not above it",
        )
    if result == "POST_ONLY_WOULD_CROSS":
        raise ApiError(
            ErrorCode.POST_ONLY_WOULD_CROSS,
            f"POST_ONLY order {cid!r} at the new price would take liquidity; it is unchanged",
        )
    raise ApiError(ErrorCode.UNAVAILABLE, f"the matcher answered {verdict!r}")


@dataclass(frozen=True, slots=True)
class AmendTerms:
    """What an amend's account script needs: its reservation, the amend command (JSON) for the
    stream, and ``amend_order.lua``'s ARGV[1..14] (admission/amend.lua's ``a``)."""

    reservation: funds.Reservation
    command: str
    args: list[Any]


async def amend_terms(
    gateway: Gateway,
    amend: VerifiedAmend,
    aid: str,
    reply_key: str | None,
    open_ahead: int = 0,
    state: funds.AccountState | None = None,
    record: tuple[str, str | None, str | None] | None = None,
) -> AmendTerms:
    """The raised reservation and the commands of an amend, on the order's accepted record as
    read now (``reply_key`` None: the command asks for no reply; ``open_ahead`` and ``state``
    as :func:`funds.order_reservation` takes them; ``record``: the accepted command, settled
    qty and open-quantity share the same script will have recorded before the amend runs, for
    an order a signed batch places first)."""
    user, market, message = amend.user, amend.market, amend.message
    cid, price, qty = message["clientOrderId"], message["price"], message["qty"]
    if record is None:
        raw_command, settled, share = await gateway.transport.execute(
            Commands()
            .hget(keys.account_order(user, cid), "cmd")
            .hget(keys.reservation_fills(user), cid)
            .hget(keys.open_quantity_shares(user), cid)
        )
    else:
        raw_command, settled, share = record
    if raw_command is None:
        raise ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} has finished")
    accepted = orjson.loads(raw_command)
    side = Side(accepted["side"])
    rest = qty - int(settled or 0)
    if rest <= 0:
        check_filled(cid, -1, qty, int(settled or 0))
    own_open = int(str(share).partition("|")[0]) if share else 0
    reservation = await funds.order_reservation(
        gateway,
        user,
        market,
        side,
        OrderType.LIMIT,
        price,
        rest,
        bool(accepted.get("reduceOnly")),
        own_open=own_open,
        open_ahead=open_ahead,
        state=state,
    )
    # the amended order is reserved at the account's initial margin now ("im" only if chosen)
    new_order = {k: v for k, v in accepted.items() if k not in ("reply", "im")}
    new_order.update(price=price, qty=qty, **reservation.command)
    new_order["reserved"] = full_reservation(market, side.value, new_order)  # type: ignore[arg-type]
    if not money.within_limit(money.notional(market, price, qty)) or not money.within_limit(
        new_order["reserved"]
    ):
        raise ApiError(
            ErrorCode.LIMIT_EXCEEDED, "the amended order's notional would reach 2^53 quanta"
        )
    command: AmendCommand = {
        "op": "amend",
        "user": user,
        "cid": cid,
        "side": side.value,
        "price": price,
        "qty": qty,
        "expectedFilled": message["expectedFilled"],
        "reserved": new_order["reserved"],
        "aid": aid,
        "ts": message["ts"],
    }
    if reply_key is not None:
        command["reply"] = reply_key
    command.update(reservation.command)  # type: ignore[typeddict-item]
    command_text = dumps(command)
    guard = reservation.guard
    args = [
        cid,
        reservation.asset,
        reservation.amount,
        reservation.adjustment,
        reservation.short_code,
        reservation.headroom,
        guard.position_field if guard else "",
        guard.position_size if guard else 0,
        guard.open_field if guard else "",
        guard.open_qty if guard else 0,
        signed.replay_ttl_ms(gateway),
        aid,
        dumps(new_order),
        command_text,
    ]
    return AmendTerms(reservation, command_text, args)


async def reserve(
    gateway: Gateway, amend: VerifiedAmend, sig_key: str, aid: str, reply_key: str
) -> str:
    """Run ``amend_order.lua`` (again when the position it was judged on moved): the raised
    reservation, the pending amend, and on a single Redis the command on the stream. Returns
    the amend command's JSON."""
    user, market = amend.user, amend.market
    cid = amend.message["clientOrderId"]
    for _ in range(orders.ADMIT_ATTEMPTS):
        terms = await amend_terms(gateway, amend, aid, reply_key)
        script_keys = [
            keys.account_order(user, cid),
            keys.account_open_orders(user, market.symbol),
            keys.balances(user),
            keys.reservations(user),
            keys.positions(user),
            keys.open_quantities(user),
            sig_key,
        ]
        if not gateway.via_outbox:
            script_keys.append(keys.market_in(market.symbol))
        verdict = await gateway.transport.script("amend_order", script_keys, terms.args)
        if verdict[0] == "OK":
            return terms.command
        if verdict[0] != "RETRY":
            raise script_refusal(str(verdict[0]), cid, user, terms.reservation, market)
    raise ApiError(
        ErrorCode.UNAVAILABLE, f"{user}'s position in {market.symbol} kept changing; retry"
    )


def script_refusal(
    code: str, cid: str, user: str, reservation: funds.Reservation, market: Market
) -> ApiError:
    if code == "DUPLICATE":
        return ApiError(ErrorCode.DUPLICATE, "this Amend signature was already used")
    if code == "ORDER_CLOSED":
        return ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} has finished")
    return orders.refusal_error(code, cid, user, reservation, market.symbol)
