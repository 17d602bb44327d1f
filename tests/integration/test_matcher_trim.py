"""The matcher trims its input stream up to what it applied, and never past it."""

from __future__ import annotations

import orjson
import pytest
import redis

from common import keys
from services.matcher.consumer import MarketConsumer

pytestmark = pytest.mark.integration

M = "TRIM-SPOT"


def order(i: int) -> dict[str, str]:
    command = {
        "op": "order", "user": f"u{i % 7}", "cid": f"c{i}", "side": "BUY" if i % 2 else "SELL",
        "type": "LIMIT", "price": 100 + i % 5, "qty": 1 + i % 3, "tif": "GTC",
        "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0,
    }  # fmt: skip
    return {"c": orjson.dumps(command).decode()}


def test_applied_entries_are_trimmed_and_unapplied_ones_kept(client: redis.Redis) -> None:
    client.hset(keys.market_cfg(M), mapping={"product": "SPOT", "mult": "1", "lotSize": "1"})
    stream = keys.market_in(M)
    ids = [client.xadd(stream, order(i)) for i in range(1000)]
    consumer = MarketConsumer(client, M, "c1", lambda _market: None, batch_size=300)
    consumer.ensure_group()
    assert consumer.acquire()
    assert consumer.poll(block_ms=10) == 0  # own pending entries: none
    assert consumer.poll(block_ms=10) == 300
    last = client.hget(keys.market_state(M), "last")
    assert last == ids[299]
    # every entry not yet applied is still there, in order; most applied ones are gone
    remaining = [entry_id for entry_id, _ in client.xrange(stream)]
    assert remaining[-700:] == ids[300:]
    assert all(entry_id in ids[:300] for entry_id in remaining[:-700])
    assert len(remaining) < 1000
    while client.hget(keys.market_state(M), "last") != ids[-1]:
        assert consumer.poll(block_ms=10) > 0
    assert client.xlen(stream) <= 200  # whole stream nodes go (100 entries each by default)
    assert client.xpending(stream, keys.MATCHER_GROUP)["pending"] == 0
    # all 1000 orders were applied exactly once
    assert int(client.hget(keys.market_state(M), "aseq")) == 1000
    consumer.release()
