"""The broadcaster process on a real redis-server, fed by publications the test makes itself
in the publishers' formats (docs/architecture.md): the WebSocket protocol of API.md §7,
snapshot/update joins, per-subscription numbering, slow, idle and dead clients, metrics."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
import websockets
from support.exchange import Exchange
from support.redis_server import RedisServer, wait_for
from support.ws import WsClient

from common import keys
from common.account_reads import read_account_view
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

MARKET = "BTC-USDC"
PERP = "BTC-PERP"
SEND_QUEUE = 50
MAX_SUBSCRIPTIONS = 5
IDLE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def broadcaster(redis_server: RedisServer) -> Iterator[Exchange]:
    with Exchange(
        redis_server.url,
        DEX_BROADCASTER_SEND_QUEUE=str(SEND_QUEUE),
        DEX_BROADCASTER_MAX_SUBSCRIPTIONS=str(MAX_SUBSCRIPTIONS),
        DEX_BROADCASTER_IDLE_TIMEOUT_S=str(IDLE_TIMEOUT_S),
    ) as running:
        running.start("broadcaster")
        yield running


@pytest.fixture
def r(redis_url: str, broadcaster: Exchange) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def publish(r: redis.Redis, topic: str, seq: int, data: Any) -> None:
    r.publish(keys.channel(topic), orjson.dumps({"seq": seq, "data": data}))


def address() -> str:
    return "0x" + os.urandom(20).hex()


def metric(exchange: Exchange, name: str, labels: str = "") -> float:
    text = httpx.get(f"http://127.0.0.1:{exchange.broadcaster_port}/metrics", timeout=5).text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def trade(seq: int, price: int = 3_000_000, qty: int = 10) -> dict[str, Any]:
    return {
        "tradeId": f"{MARKET}:{seq}", "market": MARKET, "price": price, "qty": qty,
        "takerSide": "BUY", "buyer": "0xb", "seller": "0xs", "buyOid": f"b{seq}",
        "sellOid": f"s{seq}", "ts": 1, "seq": seq,
    }  # fmt: skip


# -- protocol -------------------------------------------------------------------------------
def test_ping_is_answered_with_pong(broadcaster: Exchange, r: redis.Redis) -> None:
    async def scenario() -> None:
        async with await WsClient.connect(broadcaster.ws) as ws:
            await ws.send({"op": "ping"})
            assert await ws.next(lambda m: True) == {"op": "pong"}

    run(scenario())


def test_bad_messages_and_unknown_topics_get_clear_errors(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            for raw in (
                "not json",
                "[1, 2]",
                '{"op": "dance"}',
                '{"op": "subscribe"}',
                '{"op": "subscribe", "topic": 7}',
                '{"op": "subscribe", "topic": "candles:BTC-USDC"}',
                '{"op": "subscribe", "topic": "depth:DOGE-USDC"}',
                '{"op": "subscribe", "topic": "depth"}',
                '{"op": "subscribe", "topic": "orders:0x123"}',
                '{"op": "unsubscribe", "topic": "trade:BTC-USDC"}',
            ):
                await ws.send(raw)
            await ws.send({"op": "ping"})
            await ws.next(lambda m: m.get("op") == "pong")
            return ws.inbox

    replies = run(scenario())
    errors = replies[:-1]
    assert all(m["type"] == "error" and m["message"] for m in errors), errors
    assert [m["code"] for m in errors] == [
        "BAD_MESSAGE",
        "BAD_MESSAGE",
        "BAD_MESSAGE",
        "BAD_MESSAGE",
        "BAD_MESSAGE",
        "UNKNOWN_TOPIC",
        "UNKNOWN_TOPIC",
        "UNKNOWN_TOPIC",
        "UNKNOWN_TOPIC",
        "NOT_SUBSCRIBED",
    ]
    assert errors[6]["topic"] == "depth:DOGE-USDC" and "DOGE-USDC" in errors[6]["message"]
    assert replies[-1] == {"op": "pong"}


def test_too_many_subscriptions_is_refused(broadcaster: Exchange, r: redis.Redis) -> None:
    users = [address() for _ in range(MAX_SUBSCRIPTIONS + 1)]

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            return [await ws.subscribe(f"orders:{user}") for user in users]

    replies = run(scenario())
    assert [m["type"] for m in replies] == ["snapshot"] * MAX_SUBSCRIPTIONS + ["error"]
    assert replies[-1]["code"] == "TOO_MANY_SUBSCRIPTIONS"
    assert replies[-1]["topic"] == f"orders:{users[-1]}"


# -- depth and trade: the matcher's seq ------------------------------------------------------
def test_depth_snapshot_then_only_newer_updates_named_as_subscribed(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    r.hset(keys.market_state(MARKET), "seq", 5)
    r.hset(keys.levels_bids(MARKET), mapping={"2999900": 7, "2999800": 3})
    r.hset(keys.levels_asks(MARKET), mapping={"3000100": 4})
    topic = "depth:btc-usdc"  # any letter case; every message carries this spelling

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            snapshot = await ws.subscribe(topic)
            assert snapshot == {
                "topic": topic,
                "type": "snapshot",
                "seq": 5,
                "data": {"bids": [[2999900, 7], [2999800, 3]], "asks": [[3000100, 4]]},
            }
            publish(r, f"depth:{MARKET}", 4, {"bids": [[1, 1]], "asks": []})  # already in it
            publish(r, f"depth:{MARKET}", 5, {"bids": [[2, 2]], "asks": []})  # already in it
            publish(r, f"depth:{MARKET}", 6, {"bids": [[2999900, 0]], "asks": []})
            publish(r, f"depth:{MARKET}", 6, {"bids": [[3, 3]], "asks": []})  # a duplicate
            publish(r, f"depth:{MARKET}", 7, {"bids": [], "asks": [[3000100, 9]]})
            await ws.next(lambda m: m.get("seq") == 7)
            await ws.send({"op": "ping"})
            await ws.next(lambda m: m.get("op") == "pong")
            return ws.inbox[1:-1]

    assert run(scenario()) == [
        {"topic": topic, "type": "update", "seq": 6, "data": {"bids": [[2999900, 0]], "asks": []}},
        {"topic": topic, "type": "update", "seq": 7, "data": {"bids": [], "asks": [[3000100, 9]]}},
    ]


def test_depth_batch_of_a_matcher_call_is_one_update_per_seq_no_gap_no_duplicate(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    r.hset(keys.market_state(MARKET), "seq", 10)
    r.hset(keys.levels_bids(MARKET), mapping={"2999900": 7})
    topic = f"depth:{MARKET}"

    def level(seq: int) -> dict[str, Any]:
        return {"seq": seq, "data": {"bids": [[2999900 - seq, seq]], "asks": []}}

    def batch(seqs: range) -> None:
        body = {"seq": seqs[-1], "batch": [level(s) for s in seqs]}
        r.publish(keys.channel(topic), orjson.dumps(body))

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            assert (await ws.subscribe(topic))["seq"] == 10
            batch(range(8, 13))  # 8..10 are in the snapshot: 11 and 12 go out
            batch(range(13, 14))  # a batch of one
            publish(r, topic, 14, level(14)["data"])  # the single-message shape still works
            batch(range(12, 17))  # 12..14 again (a replay): only 15 and 16 are new
            await ws.next(lambda m: m.get("seq") == 16)
            return ws.of(topic, "update")

    updates = run(scenario())
    assert [(u["seq"], u["data"]) for u in updates] == [
        (s, level(s)["data"]) for s in range(11, 17)
    ]


def test_trade_snapshot_is_the_last_50_newest_first(broadcaster: Exchange, r: redis.Redis) -> None:
    for seq in range(1, 61):
        r.xadd(keys.market_trades(MARKET), {"t": orjson.dumps(trade(seq))})
    topic = f"trade:{MARKET}"

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            snapshot = await ws.subscribe(topic)
            publish(r, topic, 60, [trade(60)])
            publish(r, topic, 62, [trade(61), trade(62)])
            publish(r, topic, 63, [trade(63)])
            await ws.next(lambda m: m.get("seq") == 63)
            return snapshot, ws.of(topic, "update")

    received_before = metric(
        broadcaster, "dex_broadcaster_publications_received_total", '{kind="trade"}'
    )
    snapshot, updates = run(scenario())
    assert (
        metric(broadcaster, "dex_broadcaster_publications_received_total", '{kind="trade"}')
        == received_before + 3
    )
    assert snapshot["seq"] == 60
    assert [t["seq"] for t in snapshot["data"]] == list(range(60, 10, -1))
    assert snapshot["data"][0] == trade(60)
    assert [(m["seq"], [t["seq"] for t in m["data"]]) for m in updates] == [
        (62, [61, 62]),
        (63, [63]),
    ]


def test_unsubscribe_stops_updates_and_resubscribe_sends_a_fresh_snapshot(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    topic = f"trade:{MARKET}"

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            await ws.subscribe(topic)
            publish(r, topic, 1, [trade(1)])
            await ws.next(lambda m: m.get("seq") == 1)
            await ws.send({"op": "unsubscribe", "topic": topic})
            await ws.send({"op": "ping"})
            await ws.next(lambda m: m.get("op") == "pong")
            publish(r, topic, 2, [trade(2)])
            await ws.send({"op": "ping"})
            await ws.next(lambda m: m.get("op") == "pong")
            r.xadd(keys.market_trades(MARKET), {"t": orjson.dumps(trade(3))})
            again = await ws.subscribe(topic)
            assert again["type"] == "snapshot" and again["seq"] == 3
            twice = await ws.subscribe(topic)  # already held: an error, no second snapshot
            assert twice["type"] == "error" and twice["code"] == "ALREADY_SUBSCRIBED"
            publish(r, topic, 4, [trade(4)])
            await ws.next(lambda m: m.get("seq") == 4)
            return ws.inbox

    messages = run(scenario())
    assert [(m.get("type"), m.get("seq")) for m in messages] == [
        ("snapshot", 0),
        ("update", 1),
        (None, None),  # pong
        (None, None),  # pong: the trade of seq 2 never came
        ("snapshot", 3),
        ("error", None),  # ALREADY_SUBSCRIBED
        ("update", 4),
    ]


# -- orders, pnl, ticker: numbered by the broadcaster ------------------------------------------
def _order(user: str, cid: str, status: str, filled: int, updated: int) -> dict[str, Any]:
    return {
        "clientOrderId": cid, "userId": user, "market": MARKET, "side": "BUY", "type": "LIMIT",
        "timeInForce": "GTC", "reduceOnly": False, "expiresAt": 0, "price": 2_999_000,
        "qty": 100, "filled": filled, "status": status, "reason": None, "ts": 1000,
        "updatedTs": updated,
    }  # fmt: skip


def _store_resting(r: redis.Redis, order: dict[str, Any], accepted_at: int) -> None:
    user, cid = order["userId"], order["clientOrderId"]
    record = {
        k: ("" if v is None else str(int(v) if isinstance(v, bool) else v))
        for k, v in order.items()
    }
    r.hset(keys.market_order(MARKET, user, cid), mapping=record)
    r.sadd(keys.market_user_open(MARKET, user), cid)
    r.zadd(keys.account_open_orders(user, MARKET), {cid: accepted_at})


def test_orders_snapshot_lists_open_orders_then_numbered_changes(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    user = address()
    older, newer = _order(user, "a-1", "NEW", 0, 1000), _order(user, "a-2", "PARTIAL", 40, 1500)
    _store_resting(r, older, 1000)
    _store_resting(r, newer, 1100)
    waiting = {
        "op": "order", "user": user, "cid": "a-3", "side": "SELL", "type": "LIMIT",
        "price": 3_100_000, "qty": 5, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
        "ts": 1200, "reserved": 5, "acceptedAt": 1201,
    }  # fmt: skip
    r.hset(keys.account_order(user, "a-3"), "cmd", orjson.dumps(waiting))
    r.zadd(keys.account_open_orders(user, MARKET), {"a-3": 1201})
    topic = "orders:" + user.upper().replace("0X", "0x")

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            snapshot = await ws.subscribe(topic)
            assert snapshot["seq"] == 1
            assert [o["clientOrderId"] for o in snapshot["data"]] == ["a-3", "a-2", "a-1"]
            assert snapshot["data"][0]["status"] == "ACCEPTED"
            assert snapshot["data"][1] == newer and snapshot["data"][2] == older
            publish(r, f"orders:{user}", 2000, _order(user, "a-1", "PARTIAL", 60, 2000))
            publish(r, f"orders:{user}", 2001, _order(user, "a-1", "FILLED", 100, 2001))
            await ws.next(lambda m: m.get("seq") == 3)
            return ws.of(topic, "update")

    updates = run(scenario())
    assert [(m["seq"], m["data"]["status"], m["data"]["filled"]) for m in updates] == [
        (2, "PARTIAL", 60),
        (3, "FILLED", 100),
    ]


def test_a_calls_order_changes_are_split_by_user_and_numbered_as_their_own(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    """The matcher publishes a call's order changes of every user at once, per market
    (``orderchanges:<m>``): each user's ``orders:`` subscription gets its own orders of it, in
    order, numbered on with what its own channel carries (TWAP progress); another user's
    subscription sees none of them, and no client may subscribe to the market's channel."""
    alice, bob = address(), address()
    change = keys.order_changes_topic

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with (
            await WsClient.connect(broadcaster.ws) as mine,
            await WsClient.connect(broadcaster.ws) as theirs,
        ):
            assert (await mine.subscribe(f"orders:{alice}"))["data"] == []
            assert (await theirs.subscribe(f"orders:{bob}"))["data"] == []
            refused = await theirs.subscribe(change(MARKET))
            publish(r, change(MARKET), 2000, [
                _order(alice, "a-1", "NEW", 0, 2000), _order(bob, "b-1", "NEW", 0, 2000),
                _order(alice, "a-1", "FILLED", 100, 2000), _order(address(), "x", "NEW", 0, 2000),
            ])  # fmt: skip
            publish(r, f"orders:{alice}", 2001, {"clientOrderId": "tw", "type": "TWAP"})
            publish(r, change(PERP), 2002, [_order(alice, "a-2", "CXL", 0, 2002)])
            publish(r, change(MARKET), 2003, [_order(bob, "b-1", "CXL", 0, 2003)])
            await mine.next(lambda m: m.get("seq") == 5)
            await theirs.next(lambda m: m.get("seq") == 3)
            await mine.drain(0.3)
            return mine.of(f"orders:{alice}", "update"), theirs.inbox, refused

    alices, bobs, refused = run(scenario())
    assert [(m["seq"], m["data"]["clientOrderId"], m["data"].get("status")) for m in alices] == [
        (2, "a-1", "NEW"),
        (3, "a-1", "FILLED"),
        (4, "tw", None),
        (5, "a-2", "CXL"),
    ]
    assert alices[0]["data"] == _order(alice, "a-1", "NEW", 0, 2000)
    assert refused["type"] == "error" and refused["code"] == "UNKNOWN_TOPIC"
    updates = [m for m in bobs if m.get("type") == "update"]
    assert [(m["topic"], m["seq"], m["data"]["status"]) for m in updates] == [
        (f"orders:{bob}", 2, "NEW"),
        (f"orders:{bob}", 3, "CXL"),
    ]
    assert all(m["data"]["userId"] == bob for m in updates)


def _markets() -> Any:
    return load_markets(DEFAULT_MARKETS_FILE)


def test_pnl_snapshot_then_updates_on_account_notices_and_mark_changes(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    user = address()
    markets = _markets()
    r.hset(keys.balances(user), mapping={"USDC:t": 10_000_000_000, "USDC:l": 0})
    # Long 0.1 BTC-PERP entered at 30,000.00: entry notional 3,000 USDC.
    r.hset(keys.positions(user), mapping={f"{PERP}:size": 1000, f"{PERP}:entry": 3_000_000_000})
    r.hset(keys.market_prices(PERP), mapping={"index": 3_000_000, "mark": 3_000_000})
    topic = f"pnl:{user}"

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            snapshot = await ws.subscribe(topic)
            assert snapshot["seq"] == 1
            assert snapshot["data"] == read_account_view(r, markets, user)
            assert snapshot["data"]["positions"][0]["unrealizedPnl"] == "0"
            # A fill settled: the settler changed the account and sent its notice.
            r.hset(keys.positions(user), mapping={f"{PERP}:size": 2000})
            r.hset(keys.positions(user), mapping={f"{PERP}:entry": 6_000_000_000})
            publish(r, f"acct:{user}", 1, {"markets": [PERP]})
            first = await ws.next(lambda m: m.get("seq") == 2)
            assert first["data"] == read_account_view(r, markets, user)
            assert first["data"]["positions"][0]["size"] == 2000
            # A ticker whose mark did not move, and one of a market the user does not hold.
            publish(r, f"ticker:{PERP}", 1, {"markPrice": 3_000_000})
            publish(r, "ticker:BTC-FUT-20270326", 1, {"markPrice": 3_100_000})
            # The mark moves to 30,100.00: +0.2 BTC × 100 USDC = +20 USDC unrealized.
            r.hset(keys.market_prices(PERP), "mark", 3_010_000)
            publish(r, f"ticker:{PERP}", 2, {"markPrice": 3_010_000})
            second = await ws.next(lambda m: m.get("seq") == 3)
            assert second["data"] == read_account_view(r, markets, user)
            assert second["data"]["positions"][0]["unrealizedPnl"] == "20000000"
            assert second["data"]["margin"]["USDC"]["equity"] == "10020000000"
            await ws.drain(1.0)
            return ws.of(topic)

    assert [m["seq"] for m in run(scenario())] == [1, 2, 3]


def test_ticker_snapshot_then_update_on_publication(broadcaster: Exchange, r: redis.Redis) -> None:
    r.hset(keys.market_prices(PERP), mapping={"index": 3_000_000, "mark": 3_000_500})
    topic = f"ticker:{PERP}"

    async def scenario() -> list[dict[str, Any]]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            snapshot = await ws.subscribe(topic)
            assert snapshot["seq"] == 1
            assert snapshot["data"]["markPrice"] == 3_000_500
            assert snapshot["data"]["indexPrice"] == 3_000_000
            r.hset(keys.market_prices(PERP), mapping={"index": 3_001_000, "mark": 3_001_000})
            publish(r, topic, 7, {"markPrice": 3_001_000})
            update = await ws.next(lambda m: m.get("type") == "update")
            assert update["seq"] == 2 and update["data"]["markPrice"] == 3_001_000
            return ws.of(topic)

    run(scenario())


# -- slow, idle and dead clients; metrics ----------------------------------------------------
def test_slow_client_is_closed_with_1013(broadcaster: Exchange, r: redis.Redis) -> None:
    topic = f"trade:{MARKET}"
    before = metric(broadcaster, "dex_broadcaster_slow_client_disconnects_total")
    padding = "x" * 8000

    async def scenario() -> int:
        # The client reads nothing: its library buffers one message, TCP fills, the server's
        # queue fills, and the server gives up on it.
        ws = await websockets.connect(broadcaster.ws, max_queue=1, ping_interval=None)
        await ws.send(orjson.dumps({"op": "subscribe", "topic": topic}).decode())
        await asyncio.sleep(0)
        deadline = time.monotonic() + 60
        seq = 0
        while time.monotonic() < deadline:
            pipe = r.pipeline(transaction=False)
            for _ in range(200):
                seq += 1
                pipe.publish(
                    keys.channel(topic), orjson.dumps({"seq": seq, "data": [{"pad": padding}]})
                )
            pipe.execute()
            slow = metric(broadcaster, "dex_broadcaster_slow_client_disconnects_total")
            if slow > before:
                break
            await asyncio.sleep(0.05)
        code = None
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        return code

    assert run(scenario()) == 1013
    assert metric(broadcaster, "dex_broadcaster_slow_client_disconnects_total") == before + 1
    assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)


def test_idle_connection_is_closed(broadcaster: Exchange, r: redis.Redis) -> None:
    async def scenario() -> int | None:
        async with websockets.connect(broadcaster.ws) as ws:
            try:
                await asyncio.wait_for(ws.recv(), IDLE_TIMEOUT_S + 30)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert run(scenario()) == 1000


def test_dead_connection_is_forgotten_and_metrics_count(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    user = address()
    assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)
    sent_before = metric(broadcaster, "dex_broadcaster_messages_sent_total")

    async def scenario() -> None:
        ws = await WsClient.connect(broadcaster.ws, ping_interval=None)
        await ws.subscribe(f"trade:{MARKET}")
        await ws.subscribe(f"depth:{MARKET}")
        await ws.subscribe(f"orders:{user}")
        assert metric(broadcaster, "dex_broadcaster_connections") == 1
        assert metric(broadcaster, "dex_broadcaster_subscriptions", '{kind="trade"}') == 1
        assert metric(broadcaster, "dex_broadcaster_subscriptions", '{kind="orders"}') == 1
        ws.connection.transport.abort()  # the client vanishes without a close handshake

    run(scenario())
    assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)
    for kind in ("trade", "depth", "orders"):
        assert metric(broadcaster, "dex_broadcaster_subscriptions", f'{{kind="{kind}"}}') == 0
    assert metric(broadcaster, "dex_broadcaster_messages_sent_total") >= sent_before + 3
    # Nothing is left listening: publications to the dropped topics reach no one, and the
    # process still serves new clients.
    publish(r, f"trade:{MARKET}", 1, [trade(1)])

    async def again() -> dict[str, Any]:
        async with await WsClient.connect(broadcaster.ws) as ws:
            return await ws.subscribe(f"trade:{MARKET}")

    assert run(again())["type"] == "snapshot"
