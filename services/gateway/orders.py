"""Order admission: parse, validate against the market, verify, reserve, enqueue.

The checks run in the contract's order (API.md §5) so the first failing one answers, and a
refused order changes nothing. Admission is one account-slot script (accept_order.lua) that
reserves and records the order. Where the market stream shares the account's Redis the same
script puts the command on the stream; where it does not (Redis Cluster) the command waits in
the account's outbox until the gateway XADDs it, or the sweeper (outbox.py) does if the
gateway died in between.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import redis

from common import keys, money
from common.events import COMMAND_FIELD, OrderCommand, dumps
from common.markets import Market
from common.order_reads import accepted_view, order_view
from common.reservations import pair_hold
from common.risk import MarketPrices, parse_prices
from common.types import (
    MarketStatus,
    OrderType,
    Product,
    Side,
    TimeInForce,
    TriggerSource,
    TriggerType,
)
from services.gateway import funds, ratelimit, shapes, signed
from services.gateway.context import MEMORY_HIGH_MESSAGE, Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

log = logging.getLogger("services.gateway")

WAIT_S = 5
ADMIT_ATTEMPTS = 8
"""How often a derivative order judged on a position or open quantity that the settler moved
meanwhile is judged again before 503. A trader whose fills settle every few milliseconds
moves them often: with 3 attempts, 0.1-0.2 % of an active trader's PERP orders were refused
at 2,000 orders/s (bench/e2e.py); a retry costs one account read and one script call."""


@dataclass(slots=True)
class SignedOrder:
    """An order as signed and checked, built once per admission. Not ``frozen``: a frozen
    dataclass's ``__init__`` sets each of these 25 fields through ``object.__setattr__``, ~4 µs
    of CPU per order; nothing changes one after it is built (:func:`dataclasses.replace`
    makes the agent's copy)."""

    primary_type: str
    message: dict[str, Any]
    signature: str
    user: str
    market: Market
    side: Side
    type: OrderType
    price: int
    qty: int
    tif: TimeInForce
    reduce_only: bool
    expires_at: int
    ts: int
    agent: str | None = None  # the approved agent that signed it, None for the owner
    replaces: str | None = None  # a CancelReplace's cancelClientOrderId (replaces.py)
    stp: str = ""  # an OrderV3's self-trade prevention mode ("": the market's)
    trigger: TriggerType | None = None  # an OrderV4's trigger type (``type`` is what it becomes)
    trigger_price: int = 0
    trigger_source: str = ""  # resolved: MARK, LAST or INDEX (never "")
    trailing_delta: int = 0
    trailing_unit: str = ""
    take_profit: int = 0  # attached TP/SL of a LIMIT or MARKET parent (0: none)
    stop_loss: int = 0
    close_position: bool = False  # a position TP/SL (qty 0, reduce-only)


def parse_order(gateway: Gateway, body: dict[str, Any]) -> SignedOrder:
    """Validate an order body in the contract's order of checks (``shapes.ORDER``/``ORDER_V2``;
    the price band, which needs the mark, and then ``ts`` are checked by the caller)."""
    return signed_order(gateway, *shapes.parse_order_body(body, gateway.markets))


def signed_order(
    gateway: Gateway, primary_type: str, message: dict[str, Any], sig: str
) -> SignedOrder:
    """The order of a parsed signed body: an ``Order``, or an ``OrderV2`` or ``CancelReplace``
    (which carry timeInForce, reduceOnly and expiresAt)."""
    is_v2 = primary_type != "Order"
    market = gateway.markets.markets[message["market"]]
    trigger = None
    if message["type"] in TriggerType.__members__:
        trigger = TriggerType(message["type"])
    return SignedOrder(
        primary_type=primary_type,
        message=message,
        signature=sig,
        user=message["userId"].lower(),
        market=market,
        side=Side(message["side"]),
        type=(
            trigger.base
            if trigger is not None
            else OrderType.MARKET
            if message["type"] == "MARKET"
            else OrderType.LIMIT
        ),
        price=message["price"],
        qty=message["qty"],
        tif=TimeInForce(message["timeInForce"]) if is_v2 else TimeInForce.GTC,
        reduce_only=bool(message["reduceOnly"] or message.get("closePosition")) if is_v2 else False,
        expires_at=message["expiresAt"] if is_v2 else 0,
        ts=message["ts"],
        replaces=message.get("cancelClientOrderId"),
        stp=message.get("selfTradePrevention", ""),
        trigger=trigger,
        trigger_price=message.get("triggerPrice", 0),
        trigger_source=trigger_source(market, message.get("triggerSource", "")),
        trailing_delta=message.get("trailingDelta", 0),
        trailing_unit=message.get("trailingUnit", ""),
        take_profit=message.get("takeProfitPrice", 0),
        stop_loss=message.get("stopLossPrice", 0),
        close_position=bool(message.get("closePosition")),
    )


def attached_children(order: SignedOrder) -> list[str]:
    """The clientOrderIds of the order's attached TP/SL children (docs/api.md "Attached TP/SL
    and position TP/SL"): taken at admission with the order's own, so no order may use them."""
    cid = order.message["clientOrderId"]
    prices = (order.take_profit, order.stop_loss)
    return [
        cid + suffix
        for suffix, price in zip(shapes.ATTACHED_SUFFIXES, prices, strict=True)
        if price
    ]


def pair_hold_of(order: SignedOrder) -> int:
    """The quote a SPOT SELL parent locks for its attached TP/SL pair besides its own
    reservation (docs/api.md "Attached TP/SL and position TP/SL", "On SPOT"): what buying back
    its whole qty at the bound may spend; 0 for any other order."""
    if order.market.product is not Product.SPOT or order.side is not Side.SELL:
        return 0
    if not (order.take_profit or order.stop_loss):
        return 0
    return pair_hold(order.market, order.take_profit, order.stop_loss, order.qty)


def trigger_source(market: Market, source: str) -> str:
    """An OrderV4's trigger source: as signed, or for "" the market's default (MARK on a
    derivative, LAST on SPOT; docs/api.md "Trigger orders")."""
    if source:
        return source
    return TriggerSource.LAST if market.product is Product.SPOT else TriggerSource.MARK


def market_refusal(status: str, order: SignedOrder) -> str:
    """The 422 code for an order the market's status refuses, or "" when it takes it
    (docs/api.md "Market states"; match/matching.lua status_refusal judges the same)."""
    if status == MarketStatus.HALTED:
        return "MARKET_HALTED"
    if status == MarketStatus.EXPIRED:
        return "MARKET_CLOSED"
    if status == MarketStatus.CANCEL_ONLY:
        return "MARKET_CANCEL_ONLY"
    if status == MarketStatus.POST_ONLY and not (
        order.tif == TimeInForce.POST_ONLY and order.type == OrderType.LIMIT
    ):
        return "MARKET_POST_ONLY"
    if status == MarketStatus.REDUCE_ONLY and not order.reduce_only:
        return "MARKET_REDUCE_ONLY"
    return ""


async def submit_order(
    gateway: Gateway,
    body: dict[str, Any],
    wait: bool = False,
    parse: Callable[[Gateway, dict[str, Any]], SignedOrder] = parse_order,
) -> dict[str, Any] | tuple[int, dict[str, Any] | None]:
    """Admit an order: verify, then the account script (reserve + record, and on a single
    Redis the XADD to the market stream), then where the stream is in another slot the XADD
    and the outbox entry's removal. ``parse`` reads the body (a CancelReplace's: replaces.py).

    Returns the 202 body, or with ``wait`` a (status code, order) pair.
    """
    # 1. The body, field by field, then the price band, ts and signature (400/401).
    order = parse(gateway, body)
    market = order.market
    prices = None
    if market.price_band_bps is not None:
        prices = await funds.market_prices(gateway, market)
        funds.check_price_band(market, order.price, prices)
    agent = await signed.authorize(
        gateway, order.primary_type, order.message, order.signature, order.user, market.symbol
    )
    if agent is not None:
        order = replace(order, agent=agent)
    # 2. The user's rate limit, now that the signature says who sends it (429): its token is
    #    taken by the account script (step 4) before anything else it judges.
    bucket = ratelimit.user_bucket(gateway, order.user)
    user = order.user
    cid = order.message["clientOrderId"]
    # 3. What the account script judges besides the account: market status, backlog, memory.
    refusal = market_refusal(await gateway.market_status(market), order)
    memory_high = await gateway.memory_high()
    backlog_rule = await backlog_argument(gateway, market.symbol, memory_high)
    reply_key = None
    if wait:
        reply_key = keys.market_reply(market.symbol, uuid.uuid4().hex)
    # 4. The reservation, then the account script; again if the position it was judged on moved.
    for _ in range(ADMIT_ATTEMPTS):
        try:
            reserve, script_keys, script_args = await order_admission(
                gateway, order, prices, refusal, backlog_rule, reply_key
            )
        except ApiError:
            if bucket is not None:  # the 429 comes first, and the request spends its token
                await ratelimit.check_user(gateway, user)
            raise
        children = attached_children(order)
        hold = pair_hold_of(order)
        if children or bucket is not None or hold:
            script_args.append(" ".join(children))  # accept_order.lua's ARGV[19]
        if bucket is not None:
            script_args.extend(bucket[1])  # ARGV[20..21], the bucket the last key
        elif hold:
            script_args += ["", ""]
        if hold:  # ARGV[22..23]: a SPOT SELL parent's pair hold, locked with it
            script_args += [order.market.quote.symbol, hold]
        verdict = await admit_on_account(
            gateway, market.symbol, user, script_keys, script_args, bucket[0] if bucket else None
        )
        bucket = None  # taken: an order judged again does not pay twice
        if verdict[0] != "RETRY":
            break
    else:
        raise ApiError(
            ErrorCode.UNAVAILABLE, f"{user}'s position in {market.symbol} kept changing; retry"
        )
    if verdict[0] == "RATE_LIMITED":
        raise ratelimit.refused(int(verdict[1]))
    if verdict[0] != "OK":
        quantum = gateway.markets.assets[reserve.asset].quantum
        hold = pair_hold_of(order)
        if hold and verdict[0] == "INSUFFICIENT_BALANCE":
            quote = market.quote.symbol
            raise ApiError(
                ErrorCode.INSUFFICIENT_BALANCE,
                f"the order needs {int(reserve.amount) * quantum} {reserve.asset} and "
                f"{hold * gateway.markets.assets[quote].quantum} {quote} (what its attached "
                f"TP/SL may spend buying back) of balance, which {user} lacks",
            )
        raise refusal_error(verdict[0], cid, user, reserve, market.symbol, memory_high, quantum)
    # 5. Where the stream is in another slot, the command leaves the outbox for the stream.
    if verdict[2] != "SENT":
        await enqueue(gateway, market.symbol, user, cid, verdict[1])
    # 6. With ?wait=1, the matcher's answer (up to WAIT_S).
    if reply_key is None:
        return {"clientOrderId": cid, "status": "ACCEPTED"}
    replied = await gateway.transport.blpop(reply_key, WAIT_S)
    current = await read_order(gateway, user, cid)
    return (200 if replied else 202), current


async def order_admission(
    gateway: Gateway,
    order: SignedOrder,
    prices: MarketPrices | None,
    refusal: str,
    backlog_rule: str,
    reply_key: str | None = None,
    open_ahead: int = 0,
    state: funds.AccountState | None = None,
) -> tuple[funds.Reservation, list[str], list[Any]]:
    """The order's reservation, and ``accept_order.lua``'s KEYS[1..10] and ARGV for it
    (``open_ahead`` and ``state`` as :func:`funds.order_reservation` takes them)."""
    user, market = order.user, order.market
    cid = order.message["clientOrderId"]
    reserve = await funds.order_reservation(
        gateway,
        user,
        market,
        order.side,
        order.type,
        order.price,
        order.qty,
        order.reduce_only,
        prices,
        open_ahead=open_ahead,
        state=state,
    )
    if order.trigger is not None and reserve.amount == funds.ALL_AVAILABLE:
        raise ApiError(
            ErrorCode.INVALID_PRICE,
            f"a {order.trigger} order that may buy or open a position needs a protection "
            "price: at price 0 it would lock everything available while it waits",
        )
    now_ms = int(time.time() * 1000)
    script_keys = [
        keys.account_cids(user),
        keys.account_order(user, cid),
        keys.account_market_orders(user, market.symbol),
        keys.balances(user),
        keys.reservations(user),
        keys.outbox(user),
        keys.account_open_orders(user, market.symbol),
        keys.positions(user),
        keys.open_quantities(user),
        keys.open_quantity_shares(user),
    ]
    script_args = [
        cid,
        market.symbol,
        reserve.asset,
        reserve.amount,
        now_ms,
        command_template(order, reserve, now_ms, reply_key),
        reserve.adjustment,
        reserve.short_code,
        refusal,
        backlog_rule,
        *guard_args(reserve),
        "1" if await exceeds_limit(gateway, order, reserve) else "0",
        gateway.settings.max_open_orders,
    ]
    return reserve, script_keys, script_args


def command_template(
    order: SignedOrder, reserve: funds.Reservation, now_ms: int, reply_key: str | None
) -> str:
    """The order's command for the matcher as JSON text without ``reserved``: the account
    script appends that field (the amount it locked) before the closing brace, so no text of
    the encoded object is replaced. A derivative order carries the reservation's ``open``,
    ``mp`` and ``loss`` besides."""
    command: OrderCommand = {
        "op": "order",
        "user": order.user,
        "cid": order.message["clientOrderId"],
        "side": order.side.value,
        "type": order.type.value,
        "price": order.price,
        "qty": order.qty,
        "tif": order.tif.value,
        "reduceOnly": order.reduce_only,
        "expiresAt": order.expires_at,
        "ts": order.ts,
        "reserved": 0,
        "acceptedAt": now_ms,
    }
    if reply_key is not None:
        command["reply"] = reply_key
    if order.agent is not None:
        command["agent"] = order.agent
    if order.replaces is not None:
        command["replaces"] = order.replaces
    if order.stp:
        command["stp"] = order.stp
    if order.trigger is not None:
        command["trigger"] = order.trigger.value
        command["triggerPrice"] = order.trigger_price
        command["triggerSource"] = TriggerSource(order.trigger_source).value
        if order.trailing_unit:
            command["trailingDelta"] = order.trailing_delta
            command["trailingUnit"] = "BPS" if order.trailing_unit == "BPS" else "TICKS"
    if order.close_position:
        command["closePosition"] = True
    if order.take_profit or order.stop_loss:
        command["takeProfitPrice"] = order.take_profit
        command["stopLossPrice"] = order.stop_loss
        command["triggerSource"] = TriggerSource(order.trigger_source).value
        if hold := pair_hold_of(order):
            command["pairHold"] = hold
    fields: dict[str, Any] = dict(command, **reserve.command)
    del fields["reserved"]
    return dumps(fields)


def guard_args(reserve: funds.Reservation) -> list[Any]:
    """accept_order.lua's ARGV[11..16]: the headroom, and what a derivative order was judged on
    (position field and size, open-quantity field and qty, the order's qty), or blanks."""
    guard = reserve.guard
    if guard is None:
        return [reserve.headroom, "", 0, "", 0, 0]
    return [
        reserve.headroom,
        guard.position_field,
        guard.position_size,
        guard.open_field,
        guard.open_qty,
        guard.qty,
    ]


async def exceeds_limit(gateway: Gateway, order: SignedOrder, reserve: funds.Reservation) -> bool:
    """True if the order would take a value to 2^53 quanta or more (API.md §2): its notional
    at its price, its reservation, or for a derivative the position value |size ± qty| × price
    after a full fill (a price-0 MARKET order: at the mark). The account script answers
    ``LIMIT_EXCEEDED`` for it after the 422 codes listed before that one, and refuses on its
    own a lock that would take the account's locked total there.
    """
    market = order.market
    locked = 0 if reserve.amount == funds.ALL_AVAILABLE else int(reserve.amount)
    notional = money.notional(market, order.price, order.qty)
    if not money.within_limit(notional, locked, pair_hold_of(order)):  # one call, not three
        return True
    if not market.product.is_derivative:
        return False
    price = order.price
    if price == 0:
        price = parse_prices(market, await gateway.prices(market.symbol)).mark
    if reserve.guard is not None:
        held = reserve.guard.position_size  # as the account script will check it
    else:
        (raw_size,) = await gateway.transport.execute(
            Commands().hget(keys.positions(order.user), f"{market.symbol}:size")
        )
        held = int(raw_size or 0)
    size = held + (order.qty if order.side is Side.BUY else -order.qty)
    return not money.within_limit(money.notional(market, price, abs(size)))


async def backlog_argument(gateway: Gateway, symbol: str, memory_high: bool) -> str:
    """``accept_order.lua``'s ARGV[10]: ``FULL`` to refuse outright, else the backlog bound.

    On a single Redis the script counts the stream's unmatched entries itself, atomically with
    its XADD, so the bound holds exactly however many orders race. Where the stream is in
    another slot (a cluster, or the outbox path) the gateway reads the backlog fresh for every
    order; orders in flight between that read and their XADD may pass the bound, by at most
    the number of admissions running at that moment.
    """
    bound = gateway.settings.max_backlog
    if memory_high:
        return "FULL"
    if gateway.via_outbox and await gateway.backlog(symbol, fresh=True) >= bound:
        return "FULL"
    return str(bound)


async def admit_on_account(
    gateway: Gateway,
    symbol: str,
    user: str,
    script_keys: list[str],
    script_args: list[Any],
    bucket: str | None = None,
) -> list[Any]:
    """Run ``accept_order.lua``. Where the market stream shares the account's Redis (a single
    Redis) the script also puts the command on the stream, as its first write: one atomic
    step, no outbox. Where it does not (a cluster; ``DEX_ORDER_OUTBOX=1`` on a single Redis)
    the account first joins the sweeper's registry, and the script records the command in the
    account's outbox for :func:`enqueue` to deliver. ``bucket``: the user's rate-limit bucket,
    the last key (its rate and burst are the script's ARGV[20..21]).
    """
    script = gateway.transport.scripts["accept_order"]
    group = Commands()
    tail = [bucket] if bucket is not None else []
    if gateway.via_outbox:
        # The account joins the sweeper's registry before its outbox can hold anything.
        group.sadd(keys.outbox_accounts(), user)
        group.script(script, [*script_keys, *tail], script_args)
    else:
        group.script(script, [*script_keys, keys.market_in(symbol), *tail], script_args)
    try:
        replies = await gateway.transport.execute(group)
    except redis.ResponseError as exc:
        if gateway.via_outbox or isinstance(exc, redis.exceptions.OutOfMemoryError):
            raise
        # The XADD is the script's first write: a refusal there leaves nothing applied.
        raise ApiError(
            ErrorCode.UNAVAILABLE, f"market {symbol}'s stream refused the order: {exc}"
        ) from exc
    return list(replies[-1])


async def enqueue(gateway: Gateway, symbol: str, user: str, cid: str, command: str) -> None:
    """XADD the accepted command; only once it is on the stream may its outbox entry go.

    The ZREM goes in the background (batched): were it lost, the sweeper would only send the
    command a second time, which the matcher ignores.
    """
    try:
        await gateway.transport.execute(
            Commands().xadd(keys.market_in(symbol), {COMMAND_FIELD: command})
        )
    except Exception:
        # The order is reserved and recorded; the outbox sweeper delivers it.
        log_outbox_failure(symbol, user, cid)
        return
    gateway.transport.send(Commands().zrem(keys.outbox(user), cid))


def log_outbox_failure(symbol: str, user: str, cid: str) -> None:
    log.warning(
        "order %s of %s is accepted but not yet on %s; the outbox sweeper will send it",
        cid,
        user,
        keys.market_in(symbol),
        exc_info=True,
    )


def refusal_error(
    code: str,
    cid: str,
    user: str,
    reserve: funds.Reservation,
    symbol: str,
    memory_high: bool = False,
    quantum: int = 1,
) -> ApiError:
    if code == "DUPLICATE":
        return ApiError(ErrorCode.DUPLICATE, f"clientOrderId {cid!r} was already used by {user}")
    if code in ("INSUFFICIENT_BALANCE", "INSUFFICIENT_MARGIN"):
        what = (
            "everything available"
            if reserve.amount == funds.ALL_AVAILABLE
            else str(int(reserve.amount) * quantum)
        )
        kind = "balance" if code == "INSUFFICIENT_BALANCE" else "free collateral"
        return ApiError(
            ErrorCode[code], f"the order needs {what} {reserve.asset} of {kind}, which {user} lacks"
        )
    if code == "MARKET_HALTED":
        return ApiError(ErrorCode[code], f"market {symbol} is halted")
    if code == "MARKET_CLOSED":
        return ApiError(ErrorCode[code], f"market {symbol} has expired")
    if code == "MARKET_CANCEL_ONLY":
        return ApiError(ErrorCode[code], f"market {symbol} takes only cancels now")
    if code == "MARKET_POST_ONLY":
        return ApiError(ErrorCode[code], f"market {symbol} takes only POST_ONLY limit orders now")
    if code == "MARKET_REDUCE_ONLY":
        return ApiError(ErrorCode[code], f"market {symbol} takes only reduceOnly orders now")
    if code == "TOO_MANY_ORDERS":
        return ApiError(
            ErrorCode[code], f"{user} already has the most open orders allowed in {symbol}"
        )
    if code == "LIMIT_EXCEEDED":
        return ApiError(
            ErrorCode[code],
            "the order would take its notional, its reservation, the position's value or "
            f"{user}'s locked {reserve.asset} to 2^53 quanta or more",
        )
    if code == "OVERLOADED" and memory_high:
        return ApiError(ErrorCode[code], MEMORY_HIGH_MESSAGE)
    if code == "OVERLOADED":
        return overloaded(symbol)
    return ApiError(ErrorCode.UNAVAILABLE, f"the account script answered {code!r}")


def overloaded(symbol: str) -> ApiError:
    """503 OVERLOADED: the market's stream holds as many unmatched commands as allowed."""
    return ApiError(
        ErrorCode.OVERLOADED, f"market {symbol} has too many unmatched commands; retry shortly"
    )


async def read_order(gateway: Gateway, user: str, cid: str) -> dict[str, Any] | None:
    """The order as the matcher left it, or as accepted if the matcher has not seen it yet."""
    return (await read_orders(gateway, user, [cid]))[0]


async def read_orders(gateway: Gateway, user: str, cids: list[str]) -> list[dict[str, Any] | None]:
    """Several orders of one user in two pipelined round trips (None for an unknown id)."""
    if not cids:
        return []
    (markets,) = await gateway.transport.execute(Commands().hmget(keys.account_cids(user), cids))
    reads = Commands()
    for cid, market in zip(cids, markets, strict=True):
        if market is not None:
            reads.hgetall(keys.market_order(market, user, cid))
            reads.hget(keys.account_order(user, cid), "cmd")
    raw = await gateway.transport.gather(reads) if len(reads) else []
    result: list[dict[str, Any] | None] = []
    position = 0
    for cid, market in zip(cids, markets, strict=True):
        if market is None:
            result.append(None)
            continue
        record, accepted = raw[position], raw[position + 1]
        position += 2
        if record:
            result.append(order_view(record))
        elif accepted is not None:
            result.append(accepted_view(user, cid, market, orjson.loads(accepted)))
        else:
            result.append(None)
    return result
