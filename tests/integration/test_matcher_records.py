"""Order records: the matcher writes the packed shape and still matches, cancels and reports
records written in the earlier flat shape (resting orders from before an upgrade)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from common import keys
from common.audit import audit
from common.events import events_of
from common.markets import load_markets
from common.order_reads import order_view
from common.settings import DEFAULT_MARKETS_FILE
from services.matcher.consumer import MarketConsumer, write_market_cfg

pytestmark = pytest.mark.integration

M = "BTC-USDC"
MAKER, TAKER = "0x" + "a" * 40, "0x" + "b" * 40


def flat_resting_order(client: redis.Redis, cid: str, price: int, qty: int, aseq: int) -> None:
    """A resting SELL as the previous matcher version stored it (every field flat)."""
    client.hset(
        keys.market_order(M, MAKER, cid),
        mapping={
            "clientOrderId": cid, "userId": MAKER, "market": M, "side": "SELL", "type": "LIMIT",
            "timeInForce": "GTC", "reduceOnly": "0", "expiresAt": "0", "price": price,
            "qty": qty, "filled": 0, "status": "NEW", "reason": "", "ts": 5, "updatedTs": 6,
            "aseq": aseq, "reserved": 0,
        },
    )  # fmt: skip
    client.zadd(keys.book_asks(M), {f"{aseq:016d}|{MAKER}|{cid}": price})
    client.hincrby(keys.levels_asks(M), str(price), qty)
    client.sadd(keys.market_user_open(M, MAKER), cid)
    client.hset(keys.market_state(M), mapping={"aseq": aseq, "status": "OPEN"})


def order(user: str, cid: str, side: str, qty: int, price: int = 3_000_000) -> dict[str, Any]:
    """A GTC LIMIT order command as the gateway's admission writes it."""
    return {
        "op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT",
        "price": price, "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
        "ts": 9, "reserved": 0, "acceptedAt": 9,
    }  # fmt: skip


def run(client: redis.Redis, *commands: dict[str, Any]) -> None:
    for command in commands:
        client.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})
    consumer = MarketConsumer(client, M, "records", lambda _m: None, lease_ms=60_000)
    consumer.ensure_group()
    assert consumer.acquire()
    handled = 0
    while handled < len(commands):
        handled += consumer.poll(block_ms=10)
    consumer.release()


def test_flat_records_match_and_cancel_beside_packed_ones(client: redis.Redis) -> None:
    markets = load_markets(DEFAULT_MARKETS_FILE)
    write_market_cfg(client, markets.markets[M])
    flat_resting_order(client, "old1", 3_000_000, 1_000, 1)
    flat_resting_order(client, "old2", 3_000_100, 1_000, 2)
    taker = order(TAKER, "new|1", "BUY", 1_500)
    run(client, taker, {"op": "cancel", "user": MAKER, "cid": "old2", "ts": 10})
    old1 = order_view(client.hgetall(keys.market_order(M, MAKER, "old1")))
    old2 = order_view(client.hgetall(keys.market_order(M, MAKER, "old2")))
    new = order_view(client.hgetall(keys.market_order(M, TAKER, "new|1")))
    assert (old1["status"], old1["filled"], old1["price"], old1["ts"]) == (
        "FILLED", 1_000, 3_000_000, 5
    )  # fmt: skip
    assert (old2["status"], old2["reason"], old2["filled"]) == ("CXL", "USER", 0)
    assert "d" in client.hgetall(keys.market_order(M, TAKER, "new|1"))
    assert {k: new[k] for k in ("clientOrderId", "userId", "market", "side", "status")} == {
        "clientOrderId": "new|1", "userId": TAKER, "market": M, "side": "BUY", "status": "PARTIAL"
    }  # fmt: skip
    assert (new["price"], new["qty"], new["filled"], new["ts"]) == (3_000_000, 1_500, 1_000, 9)
    # the auditor finds the resting packed taker in the book (aseq, side, user, id from "d")
    resting = audit(client, markets)["invariants"]["ordersFinalOrResting"]
    assert resting["ok"], resting
    # the packed taker rests and is found by a later cancel, which reads it back
    run(client, {"op": "cancel", "user": TAKER, "cid": "new|1", "ts": 11})
    new = order_view(client.hgetall(keys.market_order(M, TAKER, "new|1")))
    assert (new["status"], new["reason"], new["filled"]) == ("CXL", "USER", 1_000)
    events = [e for _, f in client.xrange(keys.market_events(M)) for e in events_of(f)]
    assert [(e["k"], e.get("cid")) for e in events] == [
        ("fill", None), ("done", "old1"), ("done", "old2"), ("done", "new|1")
    ]  # fmt: skip
    assert client.hgetall(keys.levels_asks(M)) == {} and client.hgetall(keys.levels_bids(M)) == {}


def test_a_maker_filled_several_times_in_one_call_ends_with_its_last_state(
    client: redis.Redis,
) -> None:
    """A resting order's record is written once per call (records.lua save_changed): after
    two partial fills, after a partial fill and a cancel, after partials and the last fill."""
    write_market_cfg(client, load_markets(DEFAULT_MARKETS_FILE).markets[M])

    run(
        client,
        order(MAKER, "m1", "SELL", 1_000),
        order(TAKER, "t1", "BUY", 300),
        order(TAKER, "t2", "BUY", 300),
    )
    m1 = order_view(client.hgetall(keys.market_order(M, MAKER, "m1")))
    assert (m1["status"], m1["filled"], m1["qty"], m1["reason"]) == ("PARTIAL", 600, 1_000, None)
    assert client.smembers(keys.market_user_open(M, MAKER)) == {"m1"}
    run(
        client,
        order(TAKER, "t3", "BUY", 100),
        {"op": "cancel", "user": MAKER, "cid": "m1", "ts": 10},
        order(MAKER, "m2", "SELL", 500),
        order(TAKER, "t4", "BUY", 200),
        order(TAKER, "t5", "BUY", 300),
    )
    m1 = order_view(client.hgetall(keys.market_order(M, MAKER, "m1")))
    assert (m1["status"], m1["filled"], m1["reason"]) == ("CXL", 700, "USER")
    m2 = order_view(client.hgetall(keys.market_order(M, MAKER, "m2")))
    assert (m2["status"], m2["filled"], m2["qty"]) == ("FILLED", 500, 500)
    assert client.smembers(keys.market_user_open(M, MAKER)) == set()
    assert client.zcard(keys.book_asks(M)) == 0 and client.hgetall(keys.levels_asks(M)) == {}


def test_open_sets_are_written_once_per_call_and_never_for_an_order_that_lived_within_it(
    client: redis.Redis,
) -> None:
    """An order placed in a call that rests enters its user's open set at the call's end; one
    that also ends in the call (filled by a later taker, cancelled) never enters it: no SADD,
    no SREM, and its record is written once, final. A cancel_all or an amend in the call turns
    that off, so the cancel_all finds the orders placed before it in the same call
    (match/orders.lua open_set_add, match/records.lua save_new)."""
    write_market_cfg(client, load_markets(DEFAULT_MARKETS_FILE).markets[M])
    open_set = keys.market_user_open(M, MAKER)

    def set_writes() -> tuple[int, int]:
        stats = client.info("commandstats")
        sadd, srem = (int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("sadd", "srem"))
        return sadd, srem

    def status(user: str, cid: str) -> tuple[str, int]:
        record = order_view(client.hgetall(keys.market_order(M, user, cid)))
        return record["status"], record["filled"]

    client.config_resetstat()
    run(
        client,
        order(MAKER, "m1", "SELL", 500),
        order(MAKER, "m2", "SELL", 500, 3_000_100),
        order(MAKER, "m3", "SELL", 500, 3_000_200),
        order(TAKER, "t1", "BUY", 500),  # fills m1
        {"op": "cancel", "user": MAKER, "cid": "m3", "ts": 10},
    )
    assert (status(MAKER, "m1"), status(MAKER, "m2"), status(MAKER, "m3")) == (
        ("FILLED", 500), ("NEW", 0), ("CXL", 0)
    )  # fmt: skip
    assert client.smembers(open_set) == {"m2"}
    assert set_writes() == (1, 0)  # m2's SADD, at the call's end; nothing for m1 and m3
    # the records of orders placed and ended in the call, written once, whole and final
    for cid, price, state, reason in (
        ("m1", 3_000_000, "FILLED", None),
        ("m3", 3_000_200, "CXL", "USER"),
    ):
        record = client.hgetall(keys.market_order(M, MAKER, cid))
        assert set(record) == {"d", "a", "u", "c", "qty", "filled", "status", "reason", "updatedTs"}
        view = order_view(record)
        assert (view["price"], view["qty"], view["status"], view["reason"]) == (
            price,
            500,
            state,
            reason,
        )
        assert (view["userId"], view["clientOrderId"], view["side"], view["ts"]) == (
            MAKER,
            cid,
            "SELL",
            9,
        )
    # the next call: m2 was in its set before, so its end removes it at once
    run(client, order(TAKER, "t2", "BUY", 500, 3_000_100))
    assert status(MAKER, "m2") == ("FILLED", 500) and client.smembers(open_set) == set()
    assert set_writes() == (1, 1)
    # a cancel_all after a placement in the same call finds it
    run(
        client,
        order(MAKER, "m4", "SELL", 500),
        {"op": "cancel_all", "user": MAKER, "ts": 11},
        order(MAKER, "m5", "SELL", 500),
    )
    assert status(MAKER, "m4") == ("CXL", 0) and status(MAKER, "m5") == ("NEW", 0)
    assert client.smembers(open_set) == {"m5"}
    # an amend in the call: the order amended and a later one rest, both in the set
    run(
        client,
        order(MAKER, "m6", "SELL", 500),
        {"op": "amend", "user": MAKER, "cid": "m6", "side": "SELL", "price": 3_000_000,
         "qty": 300, "expectedFilled": -1, "reserved": 0, "aid": "a1", "ts": 12},
        order(MAKER, "m7", "SELL", 500),
        order(TAKER, "t3", "BUY", 300),  # fills m5 (the oldest at the price) in part
    )  # fmt: skip
    assert client.smembers(open_set) == {"m5", "m6", "m7"}
    assert order_view(client.hgetall(keys.market_order(M, MAKER, "m6")))["qty"] == 300
    resting = audit(client, load_markets(DEFAULT_MARKETS_FILE))["invariants"]
    assert resting["ordersFinalOrResting"]["ok"], resting["ordersFinalOrResting"]
