"""Signed batches: one signature over up to 50 actions of one account (docs/api.md "Signed
batches").

A batch is read in the contract's order: the body and every action's fields and types (400:
the signature covers them all), ``ts`` and the signature once (400, 401; an agent's scope and
markets, 403), the user's rate limit (one token per action, 429), the signature's single use
(409). Then each action is judged by the checks of its single request, in their order: a PLACE
as an ``OrderV2`` (:data:`shapes.BATCH_PLACE`, the price band, then the account script's
rules), a CANCEL as a ``Cancel``, an AMEND as an ``Amend`` (:func:`amends.verify_batch_item`,
:func:`amends.check_amend`, then the account script's rules). Every PLACE and AMEND is
admitted by ``accept_batch.lua``, one script in the account's slot that runs the single
order's Lua (``admission/order.lua``) or the single amend's (``admission/amend.lua``) per
action, with the reservation computed by :func:`orders.order_admission` or
:func:`amends.amend_terms`; the same script puts every accepted command on its market stream
in the batch's order (a single Redis), or leaves the PLACE commands in the account's outbox
for the gateway (or, if it dies, the sweeper) to send, the gateway sending the rest.

Atomic: the first refused action refuses the batch, which then changes nothing (the script
undoes what the actions before it wrote) and answers with that action's status and code, its
index named. Otherwise each action answers for itself, in order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

import redis

from common import keys
from common.events import COMMAND_FIELD, CancelCommand, dumps
from common.risk import MarketPrices
from common.types import FINAL_STATUSES, Product
from services.gateway import amends, cancels, funds, orders, ratelimit, shapes, signed
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

log = logging.getLogger("services.gateway")


@dataclass(slots=True)
class Item:
    """One action on its way: its refusal once it has one, else what the script needs."""

    index: int
    action: dict[str, Any]
    error: ApiError | None = None
    order: orders.SignedOrder | None = None
    prices: MarketPrices | None = None
    reserve: funds.Reservation | None = None
    amend: amends.VerifiedAmend | None = None
    placed: Item | None = None  # the PLACE of this batch an AMEND amends
    view: dict[str, Any] | None = None
    script_keys: tuple[str, str, str] = ("", "", "")
    script_args: tuple[Any, ...] = ()


async def submit_batch(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Admit a signed batch; (status, body): 200 with one result per action, or for an atomic
    batch with a refused action that action's status and error, with its ``index``. Raises
    :class:`ApiError` for what refuses the batch as a whole."""
    # 1. The body and every action's fields and types (400).
    message, sig = shapes.BATCH.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    atomic = message["atomic"]
    actions: list[dict[str, Any]] = message["actions"]
    # 2. ts, then the signature, once for the batch (400, 401); an agent's scope (403).
    markets = list(dict.fromkeys(a["market"] for a in actions))
    places = any(a["kind"] != "CANCEL" for a in actions)
    agent = await signed.authorize_batch(gateway, message, sig, user, markets, places)
    # 3. The user's rate limit: one token per action (429).
    await ratelimit.check_user(gateway, user, len(actions))
    # 4. The signature is accepted once (409); a batch that applies nothing gives it back.
    request = signed.SignedRequest("Batch", message, sig, user, agent)
    await signed.claim_signature(gateway, request)
    applied = False
    try:
        items = [Item(index, action) for index, action in enumerate(actions)]
        # 5. Each action's own checks before the account, in its single request's order.
        for item in items:
            await check_action(gateway, message, agent, item, items[: item.index])
            if item.error is not None and atomic:
                return refused(item)
        # 6. The reservations and the account script; 7. the commands onto the streams.
        failed = await admit(gateway, user, message["ts"], atomic, items)
        if failed is not None:
            return refused(failed)
        applied = any(item.error is None for item in items)
        return 200, {"atomic": atomic, "results": [result(item) for item in items]}
    finally:
        if not applied:
            await gateway.redis.delete(
                keys.used_signature(user, signed.digest_hex(gateway, request))
            )


async def check_action(
    gateway: Gateway, batch: dict[str, Any], agent: str | None, item: Item, before: list[Item]
) -> None:
    """Judge one action by its single request's checks up to the account; set its error."""
    try:
        kind = item.action["kind"]
        if kind == "PLACE":
            await check_place(gateway, batch, agent, item)
        elif kind == "CANCEL":
            await check_cancel(gateway, batch["userId"].lower(), item)
        elif kind == "AMEND":
            await check_amend(gateway, batch, agent, item, before)
        else:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                f"kind must be one of {'/'.join(shapes.BATCH_KINDS)}, got {kind[:80]!r}",
            )
    except ApiError as exc:
        item.error = exc


async def check_place(
    gateway: Gateway, batch: dict[str, Any], agent: str | None, item: Item
) -> None:
    """A PLACE is the OrderV2 of the batch's user and ts: the same checks, in the same order."""
    action = item.action
    unused = shapes.PLACE_UNUSED(action, gateway.markets)
    if unused is not None:
        raise ApiError(ErrorCode.INVALID_REQUEST, unused)
    market = gateway.markets.markets.get(action["market"])
    message = {
        "clientOrderId": action["clientOrderId"],
        "userId": batch["userId"],
        "market": action["market"],
        "side": action["side"],
        "type": action["type"],
        "price": action["price"],
        "qty": action["qty"],
        "product": market.spec.product if market is not None else Product.SPOT.value,
        "ts": batch["ts"],
        "timeInForce": action["timeInForce"],
        "reduceOnly": action["reduceOnly"],
        "expiresAt": action["expiresAt"],
    }
    values = shapes.BATCH_PLACE.parse(message, gateway.markets)
    order = orders.signed_order(gateway, "OrderV2", values, "")
    if agent is not None:
        order = replace(order, agent=agent)
    if order.market.price_band_bps is not None:
        item.prices = await funds.market_prices(gateway, order.market)
        funds.check_price_band(order.market, order.price, item.prices)
    item.order = order


async def check_cancel(gateway: Gateway, user: str, item: Item) -> None:
    """A CANCEL is a Cancel of the batch's user: unknown (404), finished (409), or its market
    stream too full (503)."""
    values = shapes.BATCH_CANCEL.parse(item.action, gateway.markets)
    symbol, cid = values["market"], values["clientOrderId"]
    order = await orders.read_order(gateway, user, cid)
    if order is None or order["market"] != symbol:
        raise ApiError(ErrorCode.NOT_FOUND, f"no order {cid!r} of {user} in {symbol}")
    if order["status"] in FINAL_STATUSES:
        raise ApiError(ErrorCode.ORDER_CLOSED, f"order {cid!r} is already {order['status']}")
    await cancels.refuse_if_overloaded(gateway, [symbol])
    item.view = order


async def check_amend(
    gateway: Gateway, batch: dict[str, Any], agent: str | None, item: Item, before: list[Item]
) -> None:
    """An AMEND is the Amend of the batch's user and ts: the fields it does not use blank,
    then the Amend's own checks in their order (the batch's signature stands for its own and
    the batch took its rate-limit token): its fields and the price band (``verify_batch_item``),
    then those before the account (404, 409, 400, 422, 503: ``check_amend``). An order a PLACE
    earlier in the batch places (that passed its own checks) is amended as it will be once
    that PLACE is recorded: a new order, nothing filled."""
    action = item.action
    unused = shapes.AMEND_UNUSED(action, gateway.markets)
    if unused is not None:
        raise ApiError(ErrorCode.INVALID_REQUEST, unused)
    message = {
        "userId": batch["userId"],
        "market": action["market"],
        "clientOrderId": action["clientOrderId"],
        "price": action["price"],
        "qty": action["qty"],
        "expectedFilled": action["expectedFilled"],
        "ts": batch["ts"],
    }
    amend = await amends.verify_batch_item(gateway, message, agent)
    cid = action["clientOrderId"]
    placed = [
        p
        for p in before
        if p.order is not None and p.error is None and p.action["clientOrderId"] == cid
    ]
    # An order accepted before the batch is the one amended (a PLACE of its id is DUPLICATE).
    view = await orders.read_order(gateway, amend.user, cid)
    if view is None and placed:
        item.placed = placed[-1]
        order = item.placed.order
        assert order is not None
        view = {
            "clientOrderId": cid,
            "market": order.market.symbol,
            "status": "ACCEPTED",
            "type": order.type.value,
            "price": order.price,
            "qty": order.qty,
            "filled": 0,
        }
    view = await amends.check_amend(gateway, amend, view)
    item.view = {"clientOrderId": cid, "status": "ACCEPTED"} if item.placed else view
    item.amend = amend


async def admit(
    gateway: Gateway, user: str, ts: int, atomic: bool, items: list[Item]
) -> Item | None:
    """Reserve and run accept_batch.lua over the actions that passed their own checks, then
    (outbox path) send their commands; the refused action of an atomic batch, else None."""
    live = [item for item in items if item.error is None]
    if not live:
        return None
    memory_high = await gateway.memory_high()
    rules: dict[str, tuple[str, str]] = {}
    for item in live:
        symbol = item.action["market"]
        if symbol not in rules:
            market = gateway.markets.markets[symbol]
            status = await gateway.market_status(market)
            rules[symbol] = status, await orders.backlog_argument(gateway, symbol, memory_high)
    pending = live
    for _ in range(orders.ADMIT_ATTEMPTS):
        await prepare(gateway, user, ts, pending, rules)
        # An AMEND may be refused on the order's record as read now (it finished meanwhile).
        late = [item for item in pending if item.error is not None]
        if late and atomic:
            return late[0]
        pending = [item for item in pending if item.error is None]
        if not pending:
            return None
        verdict = await run_script(gateway, user, atomic, pending)
        if verdict[0] == "RETRY":
            continue
        if verdict[0] == "FAIL":
            item = pending[int(verdict[1]) - 1]
            item.error = script_refusal(gateway, user, item, verdict[2], memory_high)
            return item
        again, sent, commands = [], [], []
        for item, answer in zip(pending, verdict[1], strict=True):
            if answer[0] == "OK":
                sent.append(item)
                commands.append(answer[1])
            elif answer[0] == "RETRY":
                again.append(item)
            else:
                item.error = script_refusal(gateway, user, item, answer[0], memory_high)
        if gateway.via_outbox and sent:
            await send(gateway, user, sent, commands)
        pending = again
        if not pending:
            return None
    if atomic:
        raise ApiError(ErrorCode.UNAVAILABLE, f"{user}'s positions kept changing; retry")
    for item in pending:
        item.error = ApiError(
            ErrorCode.UNAVAILABLE,
            f"{user}'s position in {item.action['market']} kept changing; retry",
        )
    return None


async def prepare(
    gateway: Gateway, user: str, ts: int, items: list[Item], rules: dict[str, tuple[str, str]]
) -> None:
    """Each PLACE's reservation and script values (a derivative order counts the qty of the
    batch's places before it on its market and side as open), each AMEND's (the same count,
    and the order's record as read now: an error there is the action's), each CANCEL's
    command. The
    account's positions and open quantities are read once for all (one round trip per margin
    asset), so the script finds them as they were judged unless a fill moved them meanwhile."""
    open_ahead: dict[tuple[str, str], int] = {}
    states: dict[str, funds.AccountState] = {}
    amending: list[Coroutine[Any, Any, None]] = []  # each AMEND's record read, all at once
    for item in items:
        symbol, cid = item.action["market"], item.action["clientOrderId"]
        item.script_keys = (
            keys.account_order(user, cid),
            keys.account_market_orders(user, symbol),
            keys.account_open_orders(user, symbol),
        )
        if item.amend is not None:
            amending.append(await prepare_amend(gateway, user, item, items, open_ahead, states))
            continue
        order = item.order
        if order is None:
            command: CancelCommand = {"op": "cancel", "user": user, "cid": cid, "ts": ts}
            item.script_args = ("CANCEL", cid, symbol, "", "", "", dumps(command), *[""] * 12)
            continue
        side_key = (symbol, order.side.value)
        status, backlog_rule = rules[symbol]
        refusal = orders.market_refusal(status, order)
        state = None
        if order.market.product.is_derivative:
            asset = order.market.quote.symbol
            if asset not in states:
                states[asset] = await funds.account_state(gateway, user, asset)
            state = states[asset]
        reserve, _, args = await orders.order_admission(
            gateway,
            order,
            item.prices,
            refusal,
            backlog_rule,
            None,
            open_ahead.get(side_key, 0),
            state,
        )
        if order.market.product.is_derivative:
            open_ahead[side_key] = open_ahead.get(side_key, 0) + order.qty
        item.reserve = reserve
        item.script_args = ("PLACE", *args)
    await asyncio.gather(*amending)


async def prepare_amend(
    gateway: Gateway,
    user: str,
    item: Item,
    items: list[Item],
    open_ahead: dict[tuple[str, str], int],
    states: dict[str, funds.AccountState],
) -> Coroutine[Any, Any, None]:
    """What judges an AMEND for accept_batch.lua, to be awaited with the others: it sets its
    reservation and ``amend_order.lua``'s values, its command asking for no reply (the batch
    does not wait for the matcher), or its error. ``items``: the actions of this run of the
    script; what depends on the actions before it (``open_ahead``) is fixed now."""
    amend, view = item.amend, item.view
    assert amend is not None and view is not None
    market, state = amend.market, None
    if market.product.is_derivative:
        asset = market.quote.symbol
        if asset not in states:
            states[asset] = await funds.account_state(gateway, user, asset)
        state = states[asset]
    record, place = None, item.placed
    if place is not None and place.order is not None:
        side = place.order.side.value
        if place in items:
            # Its PLACE runs in this same script, before it: the record it will have written.
            shared = str(place.order.qty) if market.product.is_derivative else None
            record = (str(place.script_args[6]), None, shared)
    else:
        side = str(view["side"])
    ahead = open_ahead.get((market.symbol, side), 0)

    async def judge() -> None:
        try:
            terms = await amends.amend_terms(
                gateway, amend, uuid.uuid4().hex, None, ahead, state, record
            )
        except ApiError as exc:
            item.error = exc
            return
        item.reserve = terms.reservation
        item.script_args = ("AMEND", *terms.args, "", "", "", "")

    return judge()


async def run_script(gateway: Gateway, user: str, atomic: bool, items: list[Item]) -> list[Any]:
    """accept_batch.lua: on a single Redis with each action's stream key; on the outbox path
    without, the account first joining the sweeper's registry."""
    script_keys = [
        keys.account_cids(user),
        keys.balances(user),
        keys.reservations(user),
        keys.outbox(user),
        keys.positions(user),
        keys.open_quantities(user),
        keys.open_quantity_shares(user),
    ]
    with_stream = not gateway.via_outbox
    script_args: list[Any] = ["1" if atomic else "0", len(items), 4 if with_stream else 3]
    for item in items:
        script_keys.extend(item.script_keys)
        if with_stream:
            script_keys.append(keys.market_in(item.action["market"]))
        script_args.extend(item.script_args)
    group = Commands()
    if not with_stream:
        group.sadd(keys.outbox_accounts(), user)
    group.script(gateway.transport.scripts["accept_batch"], script_keys, script_args)
    try:
        replies = await gateway.transport.execute(group)
    except redis.ResponseError as exc:
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            raise
        raise ApiError(ErrorCode.UNAVAILABLE, f"the batch's account script failed: {exc}") from exc
    return list(replies[-1])


async def send(gateway: Gateway, user: str, items: list[Item], commands: list[str]) -> None:
    """The outbox path: XADD the accepted commands in the batch's order (one pipeline), then
    clear the PLACEs' outbox entries in the background. Were the gateway to die in between,
    the sweeper sends the PLACEs (the matcher ignores one it has); a CANCEL or an AMEND is
    lost with the gateway, as a single one's XADD would be: the order stays open on its old
    terms, an AMEND's raise held as an over-reservation until the order ends."""
    group = Commands()
    for item, command in zip(items, commands, strict=True):
        group.xadd(keys.market_in(item.action["market"]), {COMMAND_FIELD: command})
    try:
        await gateway.transport.execute(group)
    except Exception:
        log.warning(
            "batch of %s is accepted but not yet on its streams; the outbox sweeper will send "
            "its orders",
            user,
            exc_info=True,
        )
        return
    placed = [item.action["clientOrderId"] for item in items if item.order is not None]
    if placed:
        gateway.transport.send(Commands().zrem(keys.outbox(user), *placed))


def script_refusal(
    gateway: Gateway, user: str, item: Item, code: str, memory_high: bool
) -> ApiError:
    """The single order's (or amend's) refusal for the script's ``code``."""
    assert item.reserve is not None
    reserve = item.reserve
    if item.amend is not None:
        cid = item.action["clientOrderId"]
        if code == "ORDER_CLOSED" and item.placed is not None and item.placed.error is not None:
            return ApiError(
                ErrorCode.NOT_FOUND,
                f"no order {cid!r} of {user}: its PLACE (action {item.placed.index}) was refused",
            )
        return amends.script_refusal(code, cid, user, reserve, item.amend.market)
    assert item.order is not None
    quantum = gateway.markets.assets[reserve.asset].quantum
    cid = item.action["clientOrderId"]
    symbol = item.order.market.symbol
    return orders.refusal_error(code, cid, user, reserve, symbol, memory_high, quantum)


def refused(item: Item) -> tuple[int, dict[str, Any]]:
    """An atomic batch's answer when ``item`` is refused: its status and code, its index."""
    error = item.error
    assert error is not None
    message = f"action {item.index} ({item.action['kind'][:16]}): {error.message}"
    return error.status, {
        "error": {"code": error.code, "message": message, "index": item.index},
        "atomic": True,
    }


def result(item: Item) -> dict[str, Any]:
    """One action's answer in a batch's results: its single request's status and body."""
    if item.error is not None:
        error = item.error
        return {"status": error.status, "error": {"code": error.code, "message": error.message}}
    if item.order is not None:
        cid = item.action["clientOrderId"]
        return {"status": 202, "order": {"clientOrderId": cid, "status": "ACCEPTED"}}
    return {"status": 202, "order": item.view}
