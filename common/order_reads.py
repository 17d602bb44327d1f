"""A user's orders in the REST order shape (API.md §5), from Redis.

Shared by the gateway (``GET /v1/orders/...``, the account's order list) and the
broadcaster (``orders:`` snapshots) so both describe an order the same way. An order the
matcher has seen is read from its market record ``dex:{m}:o:<user>:<cid>``; one still in the
market stream from the accepted record ``dex:{u}:ord:<cid>`` (status ``ACCEPTED``).
"""

from __future__ import annotations

from typing import Any

from common import keys
from common.events import loads
from common.markets import MarketSet

# How many of the user's newest orders are checked for ones the matcher has not seen yet;
# an order stays ACCEPTED only for the moment it waits in its market stream.
ACCEPTED_WINDOW = 200


# The matcher's order record keeps its immutable part in one field (match.lua, "Order
# record"): ``d`` = these names' values joined by ``|`` (the order id last: it may hold ``|``);
# the mutable part (qty, filled, status, reason, updatedTs) has fields of its own.
RECORD_PACKED_FIELD = "d"
RECORD_PACKED_NAMES = (
    "side", "type", "timeInForce", "reduceOnly", "expiresAt", "price", "ts", "aseq", "reserved",
    "liquidation", "market", "userId", "clientOrderId",
)  # fmt: skip


def record_fields(record: dict[str, str]) -> dict[str, str]:
    """The matcher's order hash as flat fields (``side``, ``price``, ``aseq``, ``status`` …),
    whichever shape it was written in: the packed one (field ``d``) or the earlier flat one.
    Every Python reader of ``dex:{m}:o:<user>:<cid>`` beyond a mutable field goes through
    here (a missing field stays missing, e.g. from an HMGET that did not ask for it)."""
    packed = record.get(RECORD_PACKED_FIELD)
    if not packed:
        return record
    flat = dict(
        zip(RECORD_PACKED_NAMES, packed.split("|", len(RECORD_PACKED_NAMES) - 1), strict=True)
    )
    flat.update((k, v) for k, v in record.items() if k != RECORD_PACKED_FIELD and v is not None)
    return flat


def record_hmget_fields(*fields: str) -> list[str]:
    """What to HMGET for ``fields`` of an order record in either shape: the fields plus the
    packed one (pass the reply, zipped with this list, to :func:`record_fields`)."""
    return [*fields, RECORD_PACKED_FIELD]


def order_view(record: dict[str, str]) -> dict[str, Any]:
    """The REST order shape from the matcher's order hash (either shape)."""
    record = record_fields(record)
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


def accepted_view(user: str, cid: str, market: str, command: dict[str, Any]) -> dict[str, Any]:
    """The REST order shape of an order still waiting in its market stream."""
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


async def read_open_orders(client: Any, markets: MarketSet, user: str) -> list[dict[str, Any]]:
    """The user's open orders (ACCEPTED, NEW, PARTIAL), newest accepted first.

    Resting orders come from each market's open set ``dex:{m}:uo:<user>``; orders not yet
    matched from the newest entries of ``dex:{u}:orders`` that have no market record.
    """
    symbols = list(markets.markets)
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.smembers(keys.market_user_open(symbol, user))
    pipe.zrevrange(keys.account_orders(user), 0, ACCEPTED_WINDOW - 1, withscores=True)
    *open_sets, recent = await pipe.execute()

    resting = [
        (symbol, cid)
        for symbol, cids in zip(symbols, open_sets, strict=True)
        for cid in sorted(cids)
    ]
    recent_pairs = [(str(member).partition("|"), score) for member, score in recent]
    resting_set = set(resting)
    candidates = [
        (m, cid)
        for (m, _, cid), _ in recent_pairs
        if (m, cid) not in resting_set and m in markets.markets
    ]

    pipe = client.pipeline(transaction=False)
    for symbol, cid in resting:
        pipe.hgetall(keys.market_order(symbol, user, cid))
    for symbol, cid in candidates:
        pipe.exists(keys.market_order(symbol, user, cid))
        pipe.hget(keys.account_order(user, cid), "cmd")
    if resting:
        pipe.zmscore(keys.account_orders(user), [f"{m}|{cid}" for m, cid in resting])
    replies = await pipe.execute() if (resting or candidates) else []

    orders: list[tuple[float, dict[str, Any]]] = []
    records = replies[: len(resting)]
    scores = replies[-1] if resting else []
    for record, score in zip(records, scores, strict=True):
        if record and record.get("status") in ("NEW", "PARTIAL"):
            orders.append((float(score or 0), order_view(record)))
    scores_by_pair = {(m, cid): score for (m, _, cid), score in recent_pairs}
    checks = replies[len(resting) : len(resting) + 2 * len(candidates)]
    for index, (symbol, cid) in enumerate(candidates):
        seen, command = checks[2 * index], checks[2 * index + 1]
        if not seen and command:
            view = accepted_view(user, cid, symbol, loads(command))
            orders.append((float(scores_by_pair[(symbol, cid)]), view))
    orders.sort(key=lambda item: item[0], reverse=True)
    return [view for _, view in orders]
