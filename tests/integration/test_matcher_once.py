"""An order applied once: by its stream position, and by its record where the entry may repeat.

An entry the gateway's admission XADDed (field o = "1", match/input.lua) is the order's only
one, so the matcher does not look the order's record up; a replay of that entry is skipped by
its position. An entry without the mark (the outbox path, whose sweeper may send an order
twice) still has its record looked up, so a second copy changes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from common import keys
from common.events import events_of
from common.markets import load_markets
from common.order_reads import order_view
from common.settings import DEFAULT_MARKETS_FILE
from services.matcher.consumer import MarketConsumer, write_market_cfg

pytestmark = pytest.mark.integration

M = "BTC-USDC"
MAKER, TAKER = "0x" + "a" * 40, "0x" + "b" * 40


def order(user: str, cid: str, side: str, qty: int) -> dict[str, Any]:
    return {
        "op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT",
        "price": 3_000_000, "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
        "ts": 9, "reserved": 0, "acceptedAt": 9,
    }  # fmt: skip


def send(client: redis.Redis, command: dict[str, Any], once: bool) -> str:
    fields = {"c": orjson.dumps(command).decode()}
    if once:
        fields["o"] = "1"
    return str(client.xadd(keys.market_in(M), fields))  # type: ignore[arg-type]


def consumer(client: redis.Redis) -> MarketConsumer:
    write_market_cfg(client, load_markets(DEFAULT_MARKETS_FILE).markets[M])
    matcher = MarketConsumer(client, M, "once", lambda _m: None, lease_ms=60_000)
    matcher.ensure_group()
    assert matcher.acquire()
    return matcher


def drain(matcher: MarketConsumer, entries: int) -> None:
    handled = 0
    while handled < entries:
        handled += matcher.poll(block_ms=10)


def exists_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_exists")
    return int(stats["calls"]) if stats else 0


def events(client: redis.Redis) -> list[dict[str, Any]]:
    return [e for _, f in client.xrange(keys.market_events(M)) for e in events_of(f)]


def test_a_marked_order_is_applied_without_a_record_lookup(client: redis.Redis) -> None:
    matcher = consumer(client)
    # the first calls out of the count: script load, pending read, and the first script call,
    # which looks up what the market's state has no hints for yet (its LAST trigger sets)
    matcher.poll(block_ms=10)
    matcher.tick()
    client.config_resetstat()
    send(client, order(MAKER, "m1", "SELL", 1_000), once=True)
    send(client, order(TAKER, "t1", "BUY", 400), once=True)
    drain(matcher, 2)
    marked = exists_calls(client)
    send(client, order(MAKER, "m2", "SELL", 1_000), once=False)
    send(client, order(TAKER, "t2", "BUY", 400), once=False)
    client.config_resetstat()
    drain(matcher, 2)
    # one EXISTS per unmarked order, none for the marked ones (what else a call checks is the
    # same in both)
    assert exists_calls(client) == marked + 2
    assert order_view(client.hgetall(keys.market_order(M, MAKER, "m1")))["filled"] == 800
    assert order_view(client.hgetall(keys.market_order(M, TAKER, "t1")))["status"] == "FILLED"
    assert order_view(client.hgetall(keys.market_order(M, TAKER, "t2")))["status"] == "FILLED"
    m2 = order_view(client.hgetall(keys.market_order(M, MAKER, "m2")))
    assert (m2["status"], m2["filled"]) == ("NEW", 0)
    assert [e["k"] for e in events(client)] == ["fill", "done", "fill", "done"]
    matcher.release()


def test_an_unmarked_second_copy_changes_nothing(client: redis.Redis) -> None:
    matcher = consumer(client)
    maker = order(MAKER, "m1", "SELL", 1_000)
    send(client, maker, once=False)  # the gateway's XADD on the outbox path
    send(client, order(TAKER, "t1", "BUY", 400), once=True)
    send(client, maker, once=False)  # the sweeper's copy of the same order
    drain(matcher, 3)
    state = client.hgetall(keys.market_state(M))
    assert (state["aseq"], state["seq"], state["eseq"]) == ("2", "2", "2")
    record = order_view(client.hgetall(keys.market_order(M, MAKER, "m1")))
    assert (record["status"], record["filled"], record["qty"]) == ("PARTIAL", 400, 1_000)
    assert client.zcard(keys.book_asks(M)) == 1
    assert client.hgetall(keys.levels_asks(M)) == {"3000000": "600"}
    assert [e["k"] for e in events(client)] == ["fill", "done"]
    matcher.release()


def test_a_marked_entry_passed_again_is_skipped_by_its_position(client: redis.Redis) -> None:
    """A predecessor read the entry but never acknowledged it: its successor passes it to the
    script again (the pending path); the recorded position says it was applied."""
    matcher = consumer(client)
    maker = order(MAKER, "m1", "SELL", 1_000)
    entry_id = send(client, maker, once=True)
    send(client, order(TAKER, "t1", "BUY", 400), once=True)
    drain(matcher, 2)
    before = {
        "state": client.hgetall(keys.market_state(M)),
        "maker": client.hgetall(keys.market_order(M, MAKER, "m1")),
        "events": client.xlen(keys.market_events(M)),
        "book": client.zrange(keys.book_asks(M), 0, -1, withscores=True),
    }
    fields = {"c": orjson.dumps(maker).decode(), "o": "1"}
    matcher._run([(entry_id, fields)])
    after = {
        "state": client.hgetall(keys.market_state(M)),
        "maker": client.hgetall(keys.market_order(M, MAKER, "m1")),
        "events": client.xlen(keys.market_events(M)),
        "book": client.zrange(keys.book_asks(M), 0, -1, withscores=True),
    }
    assert after == before
    matcher.release()
