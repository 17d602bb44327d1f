"""The matcher asks for settlement in the same script call that writes the events: one task
per market while the settle-queued flag stands, none queued just to meet a busy settler."""

from __future__ import annotations

import orjson
import pytest
import redis

from common import keys
from services.matcher.consumer import MarketConsumer

pytestmark = pytest.mark.integration

M = "QUEUE-SPOT"


def add_ioc_buy(client: redis.Redis, i: int) -> None:
    """An IOC buy on an empty book: nothing trades, its done event returns the reservation."""
    command = {
        "op": "order", "user": f"u{i}", "cid": f"c{i}", "side": "BUY", "type": "LIMIT",
        "price": 100, "qty": 1, "tif": "IOC", "reduceOnly": False, "expiresAt": 0,
        "ts": 1, "reserved": 100,
    }  # fmt: skip
    client.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})


def apply_next(consumer: MarketConsumer) -> int:
    """Poll until a call applies something (a drained stream's poll only waits on it)."""
    for _ in range(3):
        if applied := consumer.poll(block_ms=10):
            return applied
    raise AssertionError("nothing applied")


def test_a_call_with_events_sets_the_flag_once_and_asks_for_one_task(r: redis.Redis) -> None:
    r.hset(keys.market_cfg(M), mapping={"product": "SPOT", "mult": "1", "lotSize": "1"})
    asked: list[str] = []
    consumer = MarketConsumer(r, M, "c1", asked.append, batch_size=100)
    consumer.ensure_group()
    assert consumer.acquire()
    assert consumer.poll(block_ms=10) == 0  # own pending entries: none
    queued = keys.market_settle_queued(M)

    consumer.tick()  # a call without events asks for nothing
    assert (asked, r.exists(queued)) == ([], 0)

    add_ioc_buy(r, 1)
    assert apply_next(consumer) == 1
    assert asked == [M] and r.exists(queued) == 1
    assert 0 < r.pttl(queued) <= 2000  # lapses if the task is lost with its sender

    # while the flag stands (a task on its way or at work), more events ask for no task
    add_ioc_buy(r, 2)
    assert apply_next(consumer) == 1
    assert asked == [M]

    # the settler dropped the flag when it stopped: the next events ask again
    r.delete(queued)
    add_ioc_buy(r, 3)
    assert apply_next(consumer) == 1
    assert asked == [M, M] and r.exists(queued) == 1
    assert len(r.xrange(keys.market_events(M))) == 3
    consumer.release()
