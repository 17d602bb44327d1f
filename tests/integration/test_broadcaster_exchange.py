"""The broadcaster inside the running exchange: real signed orders over HTTP, matched by the
real matcher, watched by real WebSocket clients. A client that applies the depth updates to its
snapshot holds REST depth; trades arrive once each with contiguous seq; the taker's orders:
topic follows its fill."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import Trader
from support.ws import Message, WsClient

from common import keys

pytestmark = pytest.mark.integration

MARKET = "BTC-USDC"
MID = 3_000_000
ORDERS = int(os.environ.get("DEX_BROADCASTER_TEST_ORDERS", "0")) or (
    400 if os.environ.get("DEX_FULL_TESTS") == "1" else 80
)


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "broadcaster")
        yield running


def apply_depth(book: dict[str, dict[int, int]], data: dict[str, list[list[int]]]) -> None:
    for side in ("bids", "asks"):
        for price, qty in data[side]:
            if qty == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty


def book_of(snapshot: dict[str, Any]) -> dict[str, dict[int, int]]:
    return {side: {p: q for p, q in snapshot[side]} for side in ("bids", "asks")}


def as_rest(book: dict[str, dict[int, int]]) -> dict[str, list[list[int]]]:
    return {
        "bids": [[p, q] for p, q in sorted(book["bids"].items(), reverse=True)],
        "asks": [[p, q] for p, q in sorted(book["asks"].items())],
    }


def check_depth_stream(messages: list[Message], topic: str, rest: dict[str, Any]) -> None:
    """Snapshot + updates, applied in order with contiguous seq, equal REST depth."""
    mine = [m for m in messages if m.get("topic") == topic]
    assert mine[0]["type"] == "snapshot"
    book, seq = book_of(mine[0]["data"]), mine[0]["seq"]
    for message in mine[1:]:
        assert message["type"] == "update"
        assert message["seq"] == seq + 1, f"depth gap or duplicate after {seq}: {message}"
        seq = message["seq"]
        apply_depth(book, message["data"])
    assert seq == rest["seq"]
    assert as_rest(book) == {"bids": rest["bids"], "asks": rest["asks"]}


def check_trade_stream(messages: list[Message], topic: str, rest: list[dict[str, Any]]) -> None:
    """Every trade after the snapshot once, in seq order, as REST lists it."""
    mine = [m for m in messages if m.get("topic") == topic]
    assert mine[0]["type"] == "snapshot"
    seq = mine[0]["seq"]
    assert [t["seq"] for t in mine[0]["data"]] == list(range(seq, max(seq - 50, 0), -1))
    delivered: list[dict[str, Any]] = []
    for message in mine[1:]:
        assert message["type"] == "update"
        assert message["seq"] == message["data"][-1]["seq"]
        delivered += message["data"]
    assert [t["seq"] for t in delivered] == list(range(seq + 1, seq + 1 + len(delivered)))
    by_seq = {t["seq"]: t for t in rest}
    assert all(by_seq[t["seq"]] == t for t in delivered if t["seq"] in by_seq)
    if rest:
        assert seq + len(delivered) == rest[0]["seq"]


async def trades_as_rest(exchange: Exchange, client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """REST trades, newest first (straight from the trade log while the route is missing)."""
    response = await client.get(f"/v1/markets/{MARKET}/trades?limit=1000")
    if response.status_code == 200:
        trades: list[dict[str, Any]] = response.json()
        return trades
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        entries = r.xrevrange(keys.market_trades(MARKET), count=1000)
    return [orjson.loads(fields["t"]) for _, fields in entries]


def test_depth_and_trades_stay_in_sync_through_a_burst_of_crossing_orders(
    exchange: Exchange,
) -> None:
    rng = random.Random(6)
    traders = [Trader() for _ in range(4)]
    for trader in traders:
        exchange.deposit(trader.address, "BTC", 10**12)
        exchange.deposit(trader.address, "USDC", 10**13)
    bodies = [
        rng.choice(traders).order(
            MARKET,
            rng.choice(("BUY", "SELL")),
            MID + rng.randint(-8, 8),
            rng.randint(1, 30),
        )
        for _ in range(ORDERS)
    ]
    depth, trades = f"depth:{MARKET}", f"trade:{MARKET}"

    async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        response = await client.post("/v1/orders", json=body)
        assert response.status_code == 202, response.text

    async def scenario() -> tuple[list[Message], list[Message], dict[str, Any], list[Any]]:
        early = await WsClient.connect(exchange.ws)
        late = await WsClient.connect(exchange.ws)
        await early.subscribe(depth)
        await early.subscribe(trades)
        async with httpx.AsyncClient(base_url=exchange.http, timeout=30) as client:
            half = len(bodies) // 2
            for body in bodies[:half]:
                await post(client, body)
            # The second client joins while the first half is still being matched.
            await late.send({"op": "subscribe", "topic": depth})
            await late.send({"op": "subscribe", "topic": trades})
            for body in bodies[half:]:
                await post(client, body)

            async def settled_seq() -> dict[str, Any]:
                for _ in range(600):
                    rest = (await client.get(f"/v1/markets/{MARKET}/depth?limit=1000")).json()
                    if rest["seq"] == len(bodies):
                        return rest
                    await asyncio.sleep(0.1)
                raise AssertionError(f"the matcher did not process {len(bodies)} orders: {rest}")

            rest_depth = await settled_seq()
            rest_trades = await trades_as_rest(exchange, client)
        for ws in (early, late):
            await ws.seen(lambda m: m.get("topic") == depth and m["seq"] == rest_depth["seq"], 60)
            if rest_trades:
                last = rest_trades[0]["seq"]
                await ws.seen(lambda m, s=last: m.get("topic") == trades and m["seq"] == s, 60)
            await ws.drain(0.5)
            await ws.close()
        return early.inbox, late.inbox, rest_depth, rest_trades

    early, late, rest_depth, rest_trades = asyncio.run(scenario())
    assert rest_trades, "the burst should have crossed"
    for inbox in (early, late):
        check_depth_stream(inbox, depth, rest_depth)
        check_trade_stream(inbox, trades, rest_trades)
    # The early client saw every trade of the burst exactly once.
    early_trades = [
        t for m in early if m.get("topic") == trades and m["type"] == "update" for t in m["data"]
    ]
    assert len(early_trades) == rest_trades[0]["seq"] == len({t["tradeId"] for t in early_trades})


def test_taker_orders_topic_follows_its_fill(exchange: Exchange) -> None:
    maker, taker = Trader(), Trader()
    exchange.deposit(maker.address, "BTC", 10**10)
    exchange.deposit(taker.address, "USDC", 10**13)
    sell = maker.order(MARKET, "SELL", MID, 100)
    buy = taker.order(MARKET, "BUY", MID, 60)
    topic = f"orders:{taker.address}"  # checksummed: mixed case, named back as sent

    async def scenario() -> list[Message]:
        async with await WsClient.connect(exchange.ws) as ws:
            snapshot = await ws.subscribe(topic)
            assert snapshot["data"] == [] and snapshot["seq"] == 1
            with exchange.client() as client:
                for body in (sell, buy):
                    assert client.post("/v1/orders", json=body).status_code == 202
            await ws.next(lambda m: m.get("topic") == topic and m["data"]["status"] == "FILLED")
            return ws.of(topic, "update")

    updates = asyncio.run(scenario())
    assert [m["seq"] for m in updates] == list(range(2, 2 + len(updates)))
    final = updates[-1]["data"]
    assert final["clientOrderId"] == buy["clientOrderId"]
    assert final["filled"] == 60 and final["userId"] == taker.address.lower()
    with exchange.client() as client:
        rest = client.get(f"/v1/orders/{taker.address}/{buy['clientOrderId']}").json()
    assert final == rest
    assert wait_for(lambda: True, 0)


def test_one_call_filling_many_makers_reaches_each_user_and_no_one_else(
    exchange: Exchange,
) -> None:
    """A taker fills four makers (four other users) in one command, so one matcher call changes
    five users' orders, published together on the market's orderchanges: channel. Each user's
    orders: subscription gets exactly its own changes, numbered 2, 3, ... per subscription
    (a second subscription to a maker's topic, spelled otherwise, is numbered on its own), each
    equal to the REST order; Bob, subscribed to his own topic while they trade, gets nothing."""
    makers, taker, bob = [Trader() for _ in range(4)], Trader(), Trader()
    for maker in makers:
        exchange.deposit(maker.address, "BTC", 10**10)
    exchange.deposit(taker.address, "USDC", 10**13)
    sells = [maker.order(MARKET, "SELL", MID, 25) for maker in makers]
    buy = taker.order(MARKET, "BUY", MID, 100)
    topics = {t.address: f"orders:{t.address.lower()}" for t in [*makers, taker, bob]}
    again = f"orders:{makers[0].address}"  # checksummed: a subscription of its own
    raw = redis.Redis.from_url(exchange.redis_url, decode_responses=True).pubsub()
    raw.subscribe(keys.channel(keys.order_changes_topic(MARKET)))

    async def scenario() -> tuple[list[Message], list[Message]]:
        async with (
            await WsClient.connect(exchange.ws) as ws,
            await WsClient.connect(exchange.ws) as other,
        ):
            for topic in topics.values():
                assert (await ws.subscribe(topic))["data"] == []
            assert (await other.subscribe(again))["data"] == []
            with exchange.client() as client:
                for body in sells:
                    assert client.post("/v1/orders", json=body).status_code == 202
                for maker in makers:
                    await ws.seen(
                        lambda m, t=topics[maker.address]: (
                            m.get("topic") == t and m.get("type") == "update"
                        )
                    )
                assert client.post("/v1/orders", json=buy).status_code == 202
            for trader in [*makers, taker]:
                await ws.seen(
                    lambda m, t=topics[trader.address]: (
                        m.get("topic") == t and m.get("type") == "update"
                        and m["data"]["status"] == "FILLED"
                    )
                )  # fmt: skip
            await other.seen(lambda m: m.get("type") == "update" and m["seq"] == 3)
            await ws.drain(0.5)
            return ws.inbox, other.inbox

    inbox, others = asyncio.run(scenario())
    updates = {
        address: [m for m in inbox if m.get("topic") == topic and m["type"] == "update"]
        for address, topic in topics.items()
    }
    with exchange.client() as client:

        def rest(trader: Trader, body: dict[str, Any]) -> Any:
            return client.get(f"/v1/orders/{trader.address}/{body['clientOrderId']}").json()

        for maker, sell in zip(makers, sells, strict=True):
            mine = updates[maker.address]
            assert [(m["seq"], m["data"]["status"], m["data"]["filled"]) for m in mine] == [
                (2, "NEW", 0),
                (3, "FILLED", 25),
            ]
            assert mine[-1]["data"] == rest(maker, sell)
        assert [(m["seq"], m["data"]["status"]) for m in updates[taker.address]] == [(2, "FILLED")]
        assert updates[taker.address][-1]["data"] == rest(taker, buy)
    assert updates[bob.address] == []
    assert [(m["seq"], m["data"]["status"]) for m in others if m.get("type") == "update"] == [
        (2, "NEW"),
        (3, "FILLED"),
    ]
    # the taker's call: the five users' changes in one publication, taker first
    publications = []
    while (message := raw.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            publications.append(orjson.loads(message["data"])["data"])
    raw.close()
    wanted = [taker.address.lower(), *(m.address.lower() for m in makers)]
    filled = [p for p in publications if any(o["status"] == "FILLED" for o in p)]
    assert [[(o["userId"], o["status"]) for o in p] for p in filled] == [
        [(user, "FILLED") for user in wanted]
    ]
