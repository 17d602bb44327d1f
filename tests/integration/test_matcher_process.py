"""The real matcher process: expiry of resting orders within 2 s of expiresAt, replies for every
command kind, halt/resume/expire with their statuses, and the publications of one order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from support.exchange import Exchange
from support.order_changes import order_changes_channel, orders_of
from support.redis_server import wait_for

from common import keys
from common.events import depth_updates

pytestmark = pytest.mark.integration

M = "BTC-FUT-20270326"
A, B = "0x" + "a" * 40, "0x" + "b" * 40


def order(user: str, cid: str, side: str, price: int, qty: int, **extra: Any) -> dict:
    return {"op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT",
            "price": price, "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
            "ts": 1, "reserved": 0, "acceptedAt": 1, **extra}  # fmt: skip


@pytest.fixture
def matcher(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with Exchange(redis_url, DEX_MATCHER_MARKETS=M) as exchange:
        exchange.start("matcher")
        assert wait_for(lambda: client.get(keys.market_lease(M)), timeout=30)
        yield client
    client.close()


def send(client: redis.Redis, command: dict[str, Any], rid: str | None = None) -> Any:
    if rid is not None:
        command = {**command, "reply": keys.market_reply(M, rid)}
    client.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})
    if rid is None:
        return None
    key = keys.market_reply(M, rid)
    assert wait_for(lambda: client.llen(key) > 0, timeout=30), f"no reply to {command}"
    assert 0 < client.ttl(key) <= 60  # a reply nobody reads goes away
    return orjson.loads(client.lpop(key))


def test_expiry_replies_and_market_status(matcher: redis.Redis) -> None:
    client = matcher
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(order_changes_channel(M), keys.channel(f"depth:{M}"))
    expires = int(time.time() * 1000) + 1500
    assert send(client, order(A, "e1", "BUY", 2_900_000, 5, expiresAt=expires), "1") == {
        "status": "NEW"
    }
    okey = keys.market_order(M, A, "e1")
    assert wait_for(lambda: client.hget(okey, "status") == "EXP", timeout=10)
    finished = time.time() * 1000
    assert finished - expires <= 2_000, "a resting order must expire within 2 s"
    assert client.hget(okey, "reason") == "EXPIRES_AT"
    assert client.hgetall(keys.levels_bids(M)) == {}
    assert client.zcard(keys.market_expiries(M)) == 0

    # cancel: CANCELLED, then CLOSED; an unknown order: UNKNOWN
    send(client, order(A, "c1", "SELL", 3_100_000, 2), "2")
    assert send(client, {"op": "cancel", "user": A, "cid": "c1", "ts": 1}, "3") == {
        "result": "CANCELLED"
    }
    assert send(client, {"op": "cancel", "user": A, "cid": "c1", "ts": 1}, "4") == {
        "result": "CLOSED"
    }
    assert send(client, {"op": "cancel", "user": A, "cid": "zz", "ts": 1}, "5") == {
        "result": "UNKNOWN"
    }
    # cancel-all with the liquidation reason
    for i in range(3):
        send(client, order(A, f"l{i}", "SELL", 3_100_000 + i, 1))
    assert send(client, {"op": "cancel_all", "user": A, "ts": 1, "reason": "LIQUIDATION"}, "6") == {
        "cancelled": 3
    }
    assert {client.hget(keys.market_order(M, A, f"l{i}"), "reason") for i in range(3)} == {
        "LIQUIDATION"
    }
    # halt: orders rejected, resting ones stay; resume; expire cancels the book
    send(client, order(B, "r1", "BUY", 2_950_000, 4))
    assert send(client, {"op": "halt", "ts": 1}, "7") == {"status": "HALTED"}
    assert send(client, order(A, "h1", "SELL", 2_950_000, 1), "8") == {"status": "REJECTED"}
    assert client.hget(keys.market_order(M, A, "h1"), "reason") == "MARKET_HALTED"
    assert client.hget(keys.market_order(M, B, "r1"), "status") == "NEW"
    assert send(client, {"op": "resume", "ts": 1}, "9") == {"status": "OPEN"}
    assert send(client, {"op": "expire", "ts": 1}, "10") == {"status": "EXPIRED"}
    assert (
        client.hget(keys.market_order(M, B, "r1"), "status"),
        client.hget(keys.market_order(M, B, "r1"), "reason"),
    ) == ("CXL", "MARKET_EXPIRED")
    assert send(client, order(A, "x1", "SELL", 2_950_000, 1), "11") == {"status": "REJECTED"}
    assert client.hget(keys.market_order(M, A, "x1"), "reason") == "MARKET_CLOSED"
    assert client.hget(keys.market_state(M), "status") == "EXPIRED"

    # A's orders topic saw every change of its orders; depth seqs are contiguous
    seen: list[dict[str, Any]] = []
    orders_seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            seen.append({"channel": message["channel"], **orjson.loads(message["data"])})
            orders_seen.extend(orders_of(A, message))
    assert [(o["clientOrderId"], o["status"]) for o in orders_seen][:2] == [
        ("e1", "NEW"),
        ("e1", "EXP"),
    ]
    depth_seqs = [
        u["seq"] for m in seen if m["channel"].endswith(f"depth:{M}") for u in depth_updates(m)
    ]
    assert depth_seqs == list(range(1, len(depth_seqs) + 1))
    assert depth_seqs[-1] == int(client.hget(keys.market_state(M), "seq"))
    pubsub.close()
