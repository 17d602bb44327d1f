"""Order admission: parse, validate against the market, verify, reserve, enqueue.

The checks run in the contract's order (API.md §5) so the first failing one answers, and a
refused order changes nothing. Admission is two per-slot steps joined by an outbox: the
account script reserves and records, then the command goes on the market stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common import keys, money
from common.eip712 import PRIMARY_TYPES
from common.events import MAX_SAFE_INTEGER, OrderCommand, dumps
from common.markets import Market
from common.types import OrderType, Product, Side, TimeInForce
from services.gateway import parsing
from services.gateway.context import Gateway
from services.gateway.errors import ApiError

ORDER_FIELDS = {name for name, _ in PRIMARY_TYPES["Order"]}
ORDER_V2_FIELDS = {name for name, _ in PRIMARY_TYPES["OrderV2"]}


@dataclass(frozen=True, slots=True)
class SignedOrder:
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


def parse_order(gateway: Gateway, body: dict[str, Any]) -> SignedOrder:
    """Validate an order body field by field, in the contract's order of checks."""
    is_v2 = "timeInForce" in body
    fields = ORDER_V2_FIELDS if is_v2 else ORDER_FIELDS
    parsing.require_fields(body, fields | {"sig"})
    message: dict[str, Any] = {}
    for name, kind in PRIMARY_TYPES["OrderV2" if is_v2 else "Order"]:
        if kind == "string":
            message[name] = parsing.string(body, name)
        elif kind == "bool":
            message[name] = parsing.boolean(body, name)
        else:
            message[name] = parsing.uint(body, name)
    sig = parsing.signature(body)
    user = parsing.user_id(message["userId"])
    market = gateway.markets.market(message["market"])
    if market is None:
        raise ApiError("UNKNOWN_MARKET", f"no market named {message['market']!r}")
    spec = market.spec
    order_type = OrderType.MARKET if message["type"] == "MARKET" else OrderType.LIMIT
    price, qty = message["price"], message["qty"]
    if price >= 2**53 or (order_type is OrderType.LIMIT and price == 0) or price % spec.tickSize:
        raise ApiError(
            "INVALID_PRICE",
            f"price {price} must be a positive multiple of tickSize {spec.tickSize} below 2^53"
            + (" (or 0 for a MARKET order)" if order_type is OrderType.MARKET else ""),
        )
    if qty == 0 or qty >= 2**53 or qty % spec.lotSize or qty < spec.minQty:
        raise ApiError(
            "INVALID_QTY",
            f"qty {qty} must be a multiple of lotSize {spec.lotSize}, at least minQty "
            f"{spec.minQty} and below 2^53",
        )
    enums = {"side": Side, "type": OrderType, "product": Product}
    if is_v2:
        enums["timeInForce"] = TimeInForce
    for name, enum in enums.items():
        if message[name] not in enum.__members__:
            allowed = "/".join(enum.__members__)
            raise ApiError("INVALID_ORDER", f"{name} must be one of {allowed}")
    if not parsing.CLIENT_ORDER_ID.match(message["clientOrderId"]):
        raise ApiError("INVALID_ORDER", "clientOrderId must be 1-64 of A-Z a-z 0-9 . _ : -")
    if message["product"] != spec.product:
        raise ApiError(
            "INVALID_ORDER", f"product {message['product']} does not match {spec.product}"
        )
    tif = TimeInForce(message["timeInForce"]) if is_v2 else TimeInForce.GTC
    if order_type is OrderType.MARKET:
        raise ApiError("INVALID_ORDER", "MARKET orders are not accepted yet")
    if market.notional_multiplier * price * qty > MAX_SAFE_INTEGER:
        raise ApiError("INVALID_ORDER", "the order's notional exceeds 2^53 - 1 atomic units")
    expires_at = message.get("expiresAt", 0)
    now_ms = int(time.time() * 1000)
    if expires_at and expires_at <= now_ms:
        raise ApiError("INVALID_ORDER", f"expiresAt {expires_at} is already past")
    if abs(message["ts"] - now_ms) > gateway.settings.signature_max_age_ms:
        raise ApiError(
            "STALE_TS",
            f"ts {message['ts']} is more than {gateway.settings.signature_max_age_ms} ms "
            f"from the server clock {now_ms}",
        )
    return SignedOrder(
        primary_type="OrderV2" if is_v2 else "Order",
        message=message,
        signature=sig,
        user=user,
        market=market,
        side=Side(message["side"]),
        type=order_type,
        price=price,
        qty=qty,
        tif=tif,
        reduce_only=bool(message.get("reduceOnly", False)),
        expires_at=expires_at,
        ts=message["ts"],
    )


def reservation(order: SignedOrder) -> tuple[str, int]:
    """The asset and amount an order locks before it is accepted (API.md §2, §6)."""
    market = order.market
    if market.product is Product.SPOT:
        if order.side is Side.BUY:
            return market.quote.symbol, money.spot_buy_reservation(market, order.price, order.qty)
        return market.base.symbol, money.base_units(market, order.qty)
    return market.quote.symbol, money.derivative_reservation(market, order.price, order.qty)


async def submit_order(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    order = parse_order(gateway, body)
    if not gateway.verifier.verify(order.primary_type, order.message, order.signature, order.user):
        raise ApiError("INVALID_SIGNATURE", "the signature does not recover to userId")
    asset, amount = reservation(order)
    cid = order.message["clientOrderId"]
    now_ms = int(time.time() * 1000)
    command: OrderCommand = {
        "op": "order",
        "user": order.user,
        "cid": cid,
        "side": order.side.value,
        "type": order.type.value,
        "price": order.price,
        "qty": order.qty,
        "tif": order.tif.value,
        "reduceOnly": order.reduce_only,
        "expiresAt": order.expires_at,
        "ts": order.ts,
        "reserved": amount,
        "acceptedAt": now_ms,
    }
    encoded = dumps(command)
    user = order.user
    verdict = await gateway.scripts["accept_order"](
        keys=[
            keys.account_cids(user),
            keys.account_order(user, cid),
            keys.account_orders(user),
            keys.balances(user),
            keys.reservations(user),
            keys.outbox(user),
        ],
        args=[cid, order.market.symbol, asset, amount, now_ms, encoded],
    )
    if verdict == "DUPLICATE":
        raise ApiError("DUPLICATE", f"clientOrderId {cid!r} was already used by {user}")
    if verdict == "INSUFFICIENT_BALANCE":
        raise ApiError(
            "INSUFFICIENT_BALANCE",
            f"the order needs {amount} {asset} available, which {user} lacks",
        )
    await gateway.redis.sadd(keys.outbox_accounts(), user)
    await gateway.redis.xadd(keys.market_in(order.market.symbol), {"c": encoded})
    await gateway.redis.zrem(keys.outbox(user), cid)
    return {"clientOrderId": cid, "status": "ACCEPTED"}


async def read_order(gateway: Gateway, user: str, cid: str) -> dict[str, Any] | None:
    """The order as the matcher left it, or as accepted if the matcher has not seen it yet."""
    market = await gateway.redis.hget(keys.account_cids(user), cid)
    if market is None:
        return None
    record = await gateway.redis.hgetall(keys.market_order(market, user, cid))
    if record:
        return order_view(record)
    accepted = await gateway.redis.hget(keys.account_order(user, cid), "cmd")
    if accepted is None:
        return None
    command = parsing.orjson.loads(accepted)
    return {
        "clientOrderId": cid,
        "userId": user,
        "market": market,
        "side": command["side"],
        "type": command["type"],
        "timeInForce": command["tif"],
        "reduceOnly": command["reduceOnly"],
        "expiresAt": command["expiresAt"],
        "price": command["price"],
        "qty": command["qty"],
        "filled": 0,
        "status": "ACCEPTED",
        "reason": None,
        "ts": command["ts"],
        "updatedTs": command["acceptedAt"],
    }


def order_view(record: dict[str, str]) -> dict[str, Any]:
    """The REST order shape from the matcher's order hash."""
    return {
        "clientOrderId": record["clientOrderId"],
        "userId": record["userId"],
        "market": record["market"],
        "side": record["side"],
        "type": record["type"],
        "timeInForce": record["timeInForce"],
        "reduceOnly": record.get("reduceOnly") == "1",
        "expiresAt": int(record.get("expiresAt", "0")),
        "price": int(record["price"]),
        "qty": int(record["qty"]),
        "filled": int(record["filled"]),
        "status": record["status"],
        "reason": record.get("reason") or None,
        "ts": int(record["ts"]),
        "updatedTs": int(record["updatedTs"]),
    }
