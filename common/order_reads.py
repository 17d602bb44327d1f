"""A user's orders in the REST order shape (API.md §5), from Redis.

Shared by the gateway (``GET /v1/orders/...``, the account's order list) and the
broadcaster (``orders:`` snapshots) so both describe an order the same way. An order the
matcher has seen is read from its market record ``dex:{m}:o:<user>:<cid>``; one still in the
market stream from the accepted record ``dex:{u}:ord:<cid>`` (status ``ACCEPTED``).
"""

from __future__ import annotations

from typing import Any

from common import keys
from common.events import OrderCommand, loads
from common.markets import MarketSet

# The matcher's order record (match.lua, "Order record") keeps its immutable part in four
# fields: ``d`` and ``a``, these names' values joined by ``|``, ``u`` the userId and ``c`` the
# clientOrderId (each value under 64 bytes, so Redis keeps the small hash as a listpack); the
# mutable part (qty, filled, status, reason, updatedTs) has fields of its own. Records of the
# earlier packed shape (``d`` alone: the eleven names, userId, clientOrderId, the id last: it
# may hold ``|``) and of the flat shape (a field per name) are read as well.
RECORD_PACKED_FIELD = "d"
RECORD_PACKED_NAMES = ("side", "type", "timeInForce", "reduceOnly", "expiresAt", "price", "ts")
RECORD_ARRIVAL_FIELD = "a"
RECORD_ARRIVAL_NAMES = ("aseq", "reserved", "liquidation", "market")
RECORD_USER_FIELD, RECORD_ID_FIELD = "u", "c"
RECORD_AGENT_FIELD = "g"  # the agent key that signed the order, only when one did
# a trigger order's (match/triggers.lua): source|triggerPrice|triggered (0/1)|stp, and a
# trailing stop's delta|unit|extreme price seen
RECORD_TRIGGER_FIELD, RECORD_TRAILING_FIELD = "t", "tr"
OPEN_STATUSES = ("UNTRIGGERED", "NEW", "PARTIAL")
"""A matcher record's statuses of an open order (UNTRIGGERED: waiting for its trigger)."""
RECORD_OLD_PACKED_NAMES = (
    *RECORD_PACKED_NAMES, *RECORD_ARRIVAL_NAMES, "userId", "clientOrderId"
)  # fmt: skip
_IMMUTABLE_FIELDS = (
    RECORD_PACKED_FIELD, RECORD_ARRIVAL_FIELD, RECORD_USER_FIELD, RECORD_ID_FIELD
)  # fmt: skip


def record_fields(record: dict[str, str]) -> dict[str, str]:
    """The matcher's order hash as flat fields (``side``, ``price``, ``aseq``, ``status`` …),
    whichever shape it was written in (see above). Every Python reader of
    ``dex:{m}:o:<user>:<cid>`` beyond a mutable field goes through here (a missing field stays
    missing, e.g. from an HMGET that did not ask for it)."""
    packed = record.get(RECORD_PACKED_FIELD)
    if not packed:
        return record
    arrival = record.get(RECORD_ARRIVAL_FIELD)
    if arrival:
        flat = dict(zip(RECORD_PACKED_NAMES, packed.split("|", 6), strict=True))
        flat.update(zip(RECORD_ARRIVAL_NAMES, arrival.split("|", 3), strict=True))
        flat["userId"] = record.get(RECORD_USER_FIELD) or ""
        flat["clientOrderId"] = record.get(RECORD_ID_FIELD) or ""
    else:
        names = RECORD_OLD_PACKED_NAMES
        flat = dict(zip(names, packed.split("|", len(names) - 1), strict=True))
    flat.update((k, v) for k, v in record.items() if k not in _IMMUTABLE_FIELDS and v is not None)
    return flat


def record_hmget_fields(*fields: str) -> list[str]:
    """What to HMGET for ``fields`` of an order record in any shape: the fields plus the
    packed ones (pass the reply, zipped with this list, to :func:`record_fields`)."""
    return [*fields, *_IMMUTABLE_FIELDS]


def order_view(record: dict[str, str]) -> dict[str, Any]:
    """The REST order shape from the matcher's order hash (either shape)."""
    record = record_fields(record)
    view: dict[str, Any] = {
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
    if record.get(RECORD_AGENT_FIELD):
        view["agent"] = record[RECORD_AGENT_FIELD]
    if record.get(RECORD_TRIGGER_FIELD):
        source, price, triggered, _ = record[RECORD_TRIGGER_FIELD].split("|", 3)
        view |= {"triggerPrice": int(price), "triggerSource": source, "triggered": triggered == "1"}
        if record.get(RECORD_TRAILING_FIELD):
            delta, unit, _ = record[RECORD_TRAILING_FIELD].split("|", 2)
            view |= {"trailingDelta": int(delta), "trailingUnit": unit}
    return view


def accepted_view(user: str, cid: str, market: str, command: OrderCommand) -> dict[str, Any]:
    """The REST order shape of an order still waiting in its market stream."""
    view: dict[str, Any] = {
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
    if "agent" in command:
        view["agent"] = command["agent"]
    if "trigger" in command:
        view |= {
            "type": command["trigger"],
            "triggerPrice": command.get("triggerPrice", 0),
            "triggerSource": command.get("triggerSource"),
            "triggered": False,
        }
        if "trailingUnit" in command:
            view |= {
                "trailingDelta": command.get("trailingDelta", 0),
                "trailingUnit": command["trailingUnit"],
            }
    return view


async def read_open_orders(
    client: Any, markets: MarketSet, user: str, market: str | None = None
) -> list[dict[str, Any]]:
    """The user's open orders (ACCEPTED, UNTRIGGERED, NEW, PARTIAL), newest accepted first, of every
    market or of ``market``.

    They come from the open-order index ``dex:{u}:open:<m>`` (orders accepted and not yet
    finished and settled, at most DEX_MAX_OPEN_ORDERS per market): each is read from its
    market record, or from its accepted record while the matcher has not seen it. An order
    the matcher finished but the settler has not yet released is still indexed; its record
    says it is final and it is left out.
    """
    symbols = [market] if market else list(markets.markets)
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.zrange(keys.account_open_orders(user, symbol), 0, -1, withscores=True)
    indexed = [
        (float(score), symbol, str(cid))
        for symbol, members in zip(symbols, await pipe.execute(), strict=True)
        for cid, score in members
    ]
    if not indexed:
        return []
    indexed.sort(reverse=True)
    pipe = client.pipeline(transaction=False)
    for _, symbol, cid in indexed:
        pipe.hgetall(keys.market_order(symbol, user, cid))
        pipe.hget(keys.account_order(user, cid), "cmd")
    replies = await pipe.execute()
    orders: list[dict[str, Any]] = []
    for index, (_, symbol, cid) in enumerate(indexed):
        record, command = replies[2 * index], replies[2 * index + 1]
        if record:
            if record.get("status") in OPEN_STATUSES:
                orders.append(order_view(record))
        elif command:
            orders.append(accepted_view(user, cid, symbol, loads(command)))
    return orders
