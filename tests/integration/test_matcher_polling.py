"""A matcher that has drained its stream waits on it instead of calling the script for nothing."""

from __future__ import annotations

import orjson
import pytest
import redis

from common import keys
from services.matcher.consumer import MarketConsumer

pytestmark = pytest.mark.integration

M = "POLL-SPOT"


def add_order(client: redis.Redis, i: int) -> None:
    command = {
        "op": "order", "user": f"u{i}", "cid": f"c{i}", "side": "BUY", "type": "LIMIT",
        "price": 100 + i, "qty": 1, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
        "ts": 1, "reserved": 0,
    }  # fmt: skip
    client.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})


def calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_drained_stream_costs_a_blocking_read_not_a_script_call(r: redis.Redis) -> None:
    r.hset(keys.market_cfg(M), mapping={"product": "SPOT", "mult": "1", "lotSize": "1"})
    consumer = MarketConsumer(r, M, "c1", lambda _market: None, batch_size=100)
    consumer.ensure_group()
    assert consumer.acquire()
    assert consumer.poll(block_ms=10) == 0  # own pending entries: none
    consumer.tick()  # the library is loaded (Function not found, then FCALL again) before counting
    for i in range(5):
        add_order(r, i)
    r.config_resetstat()
    assert consumer.poll(block_ms=10) == 5  # one call reads and applies all five
    assert calls(r, "fcall") == 1

    # drained: the next poll waits on the stream (and times out) without calling the script
    assert consumer.poll(block_ms=50) == 0
    assert (calls(r, "fcall"), calls(r, "xread")) == (1, 1)
    # after the wait, the next poll calls the script: it ticks (expiry, statistics)
    assert consumer.poll(block_ms=10) == 0
    assert calls(r, "fcall") == 2

    # entries that arrive while the matcher is between calls end the wait at once
    add_order(r, 5)
    add_order(r, 6)
    assert consumer.poll(block_ms=10_000) == 0
    assert consumer.poll(block_ms=10) == 2
    assert (calls(r, "fcall"), calls(r, "xread")) == (3, 2)
    assert int(r.hget(keys.market_state(M), "aseq")) == 7
    consumer.release()
