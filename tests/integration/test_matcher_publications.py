"""What one matcher call publishes: every depth seq once and in order (batched, split back by
common.events.depth_updates), every trade once and in order (in chunks of a few KB, each
carrying the seq of its last trade), every order change once and in order, all users' on the
market's orderchanges: channel (in chunks of a few KB), none on a user's orders: channel."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis

from common import keys
from common.events import depth_updates
from services.matcher.consumer import MarketConsumer

pytestmark = pytest.mark.integration

M = "PUB-SPOT"


def order(user: str, cid: str, side: str, price: int, qty: int) -> dict[str, str]:
    command = {
        "op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT", "price": price,
        "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0,
        "acceptedAt": 1,
    }  # fmt: skip
    return {"c": orjson.dumps(command).decode()}


def test_one_call_publishes_every_depth_seq_and_every_trade_once_in_order(
    client: redis.Redis,
) -> None:
    client.hset(keys.market_cfg(M), mapping={"product": "SPOT", "mult": "1", "lotSize": "1"})
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(
        keys.channel(f"depth:{M}"),
        keys.channel(f"trade:{M}"),
        keys.channel(keys.order_changes_topic(M)),
    )
    pubsub.psubscribe(keys.channel(keys.orders_topic("*")))
    makers = 150
    for i in range(makers):
        client.xadd(keys.market_in(M), order(f"m{i}", f"a{i}", "SELL", 100 + i, 1))
    client.xadd(keys.market_in(M), order("taker", "t1", "BUY", 100 + makers, makers))
    consumer = MarketConsumer(client, M, "pub", lambda _m: None, batch_size=500)
    consumer.ensure_group()
    assert consumer.acquire()
    assert consumer.poll(block_ms=10) == 0  # own pending entries: none
    assert consumer.poll(block_ms=10) == makers + 1  # all in one script call
    consumer.release()
    seen: dict[str, list[Any]] = {"depth": [], "trade": [], "orderchanges": [], "orders": []}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            seen[message["channel"].split(":")[-2]].append(orjson.loads(message["data"]))
        elif seen["trade"] and seen["trade"][-1]["seq"] == makers:
            break
    pubsub.close()
    # depth: one seq per order, contiguous, the sweep's last; fewer publications than seqs
    updates = [u for p in seen["depth"] for u in depth_updates(p)]
    assert [u["seq"] for u in updates] == list(range(1, makers + 2))
    assert updates[-1]["data"] == {"bids": [], "asks": [[100 + i, 0] for i in range(makers)]}
    assert 1 < len(seen["depth"]) < makers
    # trade: every trade once, in order, split in a few publications whose seq is their last's
    trades = [t for p in seen["trade"] for t in p["data"]]
    assert [(t["seq"], t["price"], t["sellOid"]) for t in trades] == [
        (i + 1, 100 + i, f"a{i}") for i in range(makers)
    ]
    assert len(seen["trade"]) > 1
    assert all(p["seq"] == p["data"][-1]["seq"] for p in seen["trade"])
    assert all(len(orjson.dumps(p)) < 8_000 for p in seen["trade"])
    # orders: every change once, in order (each maker's NEW in its own command; then the
    # taker's command: the taker, then each maker it filled), in a few publications of the
    # market's channel, none on a user's own
    changes = [o for p in seen["orderchanges"] for o in p["data"]]
    assert [(o["userId"], o["clientOrderId"], o["status"], o["filled"]) for o in changes] == [
        *((f"m{i}", f"a{i}", "NEW", 0) for i in range(makers)),
        ("taker", "t1", "FILLED", makers),
        *((f"m{i}", f"a{i}", "FILLED", 1) for i in range(makers)),
    ]
    assert 1 < len(seen["orderchanges"]) < makers
    assert all(len(orjson.dumps(p)) < 8_000 for p in seen["orderchanges"])
    assert seen["orders"] == []
