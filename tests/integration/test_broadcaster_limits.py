"""The broadcaster's limits (API.md §1 and §7, docs/api.md "WebSocket limits") on the real
process and a real redis-server: ALREADY_SUBSCRIBED, the subscription bound, the message rate
(1008), the bound on connections per address (1008 at once), and bad input of every kind
answered with a bounded error message or a documented close, never a crash.

Connections name their address with ``X-Forwarded-For``: uvicorn trusts it from 127.0.0.1 (its
default ``FORWARDED_ALLOW_IPS``), so each test counts against an address of its own.
"""

from __future__ import annotations

import asyncio
import itertools
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

pytestmark = pytest.mark.integration

MARKET = "BTC-USDC"
MAX_SUBSCRIPTIONS = 3
MAX_CONNECTIONS_PER_IP = 3
MAX_MESSAGES_PER_S = 50  # API.md §7
REFUSED_REASON = (
    f"too many connections from this address: at most {MAX_CONNECTIONS_PER_IP}; close one first"
)
_addresses = (f"203.0.113.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def broadcaster(redis_server: RedisServer) -> Iterator[Exchange]:
    with Exchange(
        redis_server.url,
        DEX_BROADCASTER_MAX_SUBSCRIPTIONS=str(MAX_SUBSCRIPTIONS),
        DEX_BROADCASTER_MAX_CONNECTIONS_PER_IP=str(MAX_CONNECTIONS_PER_IP),
    ) as running:
        running.start("broadcaster")
        yield running


@pytest.fixture
def r(redis_url: str, broadcaster: Exchange) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)
    yield client
    client.close()


def metric(exchange: Exchange, name: str, labels: str = "") -> float:
    text = httpx.get(f"http://127.0.0.1:{exchange.broadcaster_port}/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def publish(r: redis.Redis, topic: str, seq: int, data: Any) -> None:
    r.publish(keys.channel(topic), orjson.dumps({"seq": seq, "data": data}))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def connect(exchange: Exchange, address: str, **options: Any) -> WsClient:
    return await WsClient.connect(
        exchange.ws, additional_headers={"X-Forwarded-For": address}, **options
    )


async def closed_with(ws: WsClient, timeout: float = 30.0) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.connection.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        if closed.rcvd is None:
            return None, ""
        return closed.rcvd.code, closed.rcvd.reason


async def pong(ws: WsClient) -> None:
    await ws.send({"op": "ping"})
    await ws.next(lambda m: m.get("op") == "pong")


# -- ALREADY_SUBSCRIBED ----------------------------------------------------------------------
def test_subscribing_again_is_already_subscribed_and_sends_no_second_snapshot(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    topic = f"trade:{MARKET}"
    trade = {"tradeId": f"{MARKET}:1", "price": 3_000_000, "qty": 1, "seq": 1}

    async def scenario() -> list[dict[str, Any]]:
        async with await connect(broadcaster, next(_addresses)) as ws:
            assert (await ws.subscribe(topic))["type"] == "snapshot"
            await ws.send({"op": "subscribe", "topic": topic})
            await ws.send({"op": "subscribe", "topic": "TRADE:btc-usdc"})  # the same topic
            await pong(ws)
            publish(r, topic, 1, [trade])
            await ws.next(lambda m: m.get("type") == "update")
            await pong(ws)
            # A client that wants a fresh snapshot unsubscribes, then subscribes.
            await ws.send({"op": "unsubscribe", "topic": topic})
            assert (await ws.subscribe(topic))["type"] == "snapshot"
            await pong(ws)
            return ws.inbox

    messages = run(scenario())
    assert [(m.get("type"), m.get("code"), m.get("topic")) for m in messages] == [
        ("snapshot", None, topic),
        ("error", "ALREADY_SUBSCRIBED", topic),
        ("error", "ALREADY_SUBSCRIBED", "TRADE:btc-usdc"),
        (None, None, None),  # pong
        ("update", None, topic),  # one update: one subscription
        (None, None, None),  # pong
        ("snapshot", None, topic),
        (None, None, None),  # pong
    ]
    assert messages[1]["message"] == (
        f"already subscribed to {topic!r}; for a fresh snapshot unsubscribe, then subscribe"
    )
    assert f"(as {topic!r})" in messages[2]["message"]
    assert messages[4]["seq"] == 1 and messages[6]["seq"] == 0
    assert wait_for(
        lambda: metric(broadcaster, "dex_broadcaster_subscriptions", '{kind="trade"}') == 0, 30
    )


# -- DEX_BROADCASTER_MAX_SUBSCRIPTIONS ---------------------------------------------------------
def test_one_subscription_over_the_bound_is_refused_and_nothing_is_subscribed(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    held = [f"depth:{MARKET}", f"trade:{MARKET}", f"ticker:{MARKET}"]
    extra = "trade:BTC-PERP"

    async def scenario() -> list[dict[str, Any]]:
        async with await connect(broadcaster, next(_addresses)) as ws:
            replies = [await ws.subscribe(topic) for topic in held]
            replies.append(await ws.subscribe(extra))
            assert metric(broadcaster, "dex_broadcaster_subscriptions", '{kind="trade"}') == 1
            assert r.pubsub_numsub(keys.channel(extra)) == [(keys.channel(extra), 0)]
            publish(r, extra, 1, [{"seq": 1}])  # reaches no one
            await ws.send({"op": "unsubscribe", "topic": extra})
            replies.append(await ws.next(lambda m: m.get("type") == "error"))
            await pong(ws)
            # With one place free, the same subscription is taken.
            await ws.send({"op": "unsubscribe", "topic": held[0]})
            replies.append(await ws.subscribe(extra))
            await pong(ws)
            assert [m for m in ws.inbox if m.get("type") == "update"] == []
            return replies

    replies = run(scenario())
    assert [(m["type"], m.get("code"), m["topic"]) for m in replies] == [
        ("snapshot", None, held[0]),
        ("snapshot", None, held[1]),
        ("snapshot", None, held[2]),
        ("error", "TOO_MANY_SUBSCRIPTIONS", extra),
        ("error", "NOT_SUBSCRIBED", extra),
        ("snapshot", None, extra),
    ]
    assert replies[3]["message"] == (
        f"a connection may hold {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe one first"
    )
    assert replies[5]["seq"] == 0


# -- more than 50 messages a second: 1008 -----------------------------------------------------
def test_the_51st_message_within_one_second_closes_the_connection_with_1008(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    before = metric(broadcaster, "dex_broadcaster_flood_disconnects_total")

    async def scenario() -> tuple[int, float, int | None, str]:
        async with await connect(broadcaster, next(_addresses)) as ws:
            started = time.monotonic()
            for _ in range(MAX_MESSAGES_PER_S):
                await ws.send({"op": "ping"})
            for _ in range(MAX_MESSAGES_PER_S):
                await ws.next(lambda m: m.get("op") == "pong")
            await ws.send({"op": "ping"})
            elapsed = time.monotonic() - started
            code, reason = await closed_with(ws)
            return len(ws.inbox), elapsed, code, reason

    answered, elapsed, code, reason = run(scenario())
    assert elapsed < 1.0, f"the 51 messages took {elapsed:.2f} s: the test needs them in 1 s"
    assert answered == MAX_MESSAGES_PER_S  # 50 pongs; the 51st got no answer but the close
    assert (code, reason) == (1008, "more than 50 messages in one second")
    assert metric(broadcaster, "dex_broadcaster_flood_disconnects_total") == before + 1
    assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)


def test_fifty_messages_every_second_are_all_answered(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    async def scenario() -> int:
        async with await connect(broadcaster, next(_addresses)) as ws:
            for _ in range(3):
                for _ in range(MAX_MESSAGES_PER_S):
                    await ws.send({"op": "ping"})
                await ws.next(lambda m: m.get("op") == "pong")
                # The server took the burst's first message before this pong came back: the
                # next burst leaves just over a second after it, whatever the delays.
                first_answered = time.monotonic()
                for _ in range(MAX_MESSAGES_PER_S - 1):
                    await ws.next(lambda m: m.get("op") == "pong")
                await asyncio.sleep(max(0.0, first_answered + 1.02 - time.monotonic()))
            await pong(ws)
            return len(ws.inbox)

    assert run(scenario()) == 3 * MAX_MESSAGES_PER_S + 1


# -- connections per address ------------------------------------------------------------------
def test_a_connection_over_the_per_address_bound_is_closed_at_once_with_1008(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    address, other = next(_addresses), next(_addresses)
    before = metric(broadcaster, "dex_broadcaster_refused_connections_total")

    async def scenario() -> None:
        held = [await connect(broadcaster, address) for _ in range(MAX_CONNECTIONS_PER_IP)]
        for ws in held:
            await pong(ws)
        refused = await connect(broadcaster, address)
        assert await closed_with(refused) == (1008, REFUSED_REASON)
        assert refused.inbox == []
        # Another address is not affected; the refused one never counted.
        async with await connect(broadcaster, other) as ws:
            await pong(ws)
        assert metric(broadcaster, "dex_broadcaster_connections") == MAX_CONNECTIONS_PER_IP
        # One closes: the address has a place again.
        await held.pop().close()
        assert wait_for(
            lambda: (
                metric(broadcaster, "dex_broadcaster_connections") == MAX_CONNECTIONS_PER_IP - 1
            ),
            30,
        )
        again = await connect(broadcaster, address)
        await pong(again)
        for ws in (*held, again):
            await ws.close()

    run(scenario())
    assert metric(broadcaster, "dex_broadcaster_refused_connections_total") == before + 1


def test_every_way_a_connection_ends_gives_its_address_the_place_back(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    address = next(_addresses)

    async def fill() -> list[WsClient]:
        held = [await connect(broadcaster, address) for _ in range(MAX_CONNECTIONS_PER_IP)]
        for ws in held:
            await pong(ws)
        return held

    async def scenario() -> None:
        # Reset without a close handshake, closed by the server for flooding, closed by the
        # server for an oversized message (1009), and closed by the client.
        aborted, flooding, oversized = await fill()
        aborted.connection.transport.abort()
        for _ in range(MAX_MESSAGES_PER_S + 1):
            await flooding.send({"op": "ping"})
        assert (await closed_with(flooding))[0] == 1008
        await oversized.send("x" * 70_000)
        assert (await closed_with(oversized))[0] == 1009
        assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)
        held = await fill()
        refused = await connect(broadcaster, address)
        assert await closed_with(refused) == (1008, REFUSED_REASON)
        for ws in held:
            await ws.close()
        assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)
        for ws in await fill():
            await ws.close()

    run(scenario())


# -- bad input -------------------------------------------------------------------------------
HUGE = "x" * 60_000
BAD_INPUTS: list[tuple[str | bytes, str]] = [
    # (what the client sends, the error code of the answer)
    ("not json", "BAD_MESSAGE"),
    ("[1, 2]", "BAD_MESSAGE"),
    ("{}", "BAD_MESSAGE"),
    ('"\\ud800"', "BAD_MESSAGE"),  # a lone surrogate, escaped
    ('{"op": "subscribe", "topic": "depth:\\ud800"}', "BAD_MESSAGE"),
    ('{"op": "subscribe", "topic": "depth:BTC-USDC", "n": 1e400}', "BAD_MESSAGE"),
    ("[" * 2000, "BAD_MESSAGE"),  # nested deeper than the parser allows
    ('{"op": "' + HUGE + '"}', "BAD_MESSAGE"),
    ('{"op": {"subscribe": ["' + HUGE + '"]}}', "BAD_MESSAGE"),
    ('{"op": "subscribe", "topic": "depth:' + HUGE + '"}', "BAD_MESSAGE"),
    ('{"op": "unsubscribe", "topic": "' + HUGE + '"}', "BAD_MESSAGE"),
    ('{"op": "subscribe", "topic": ["depth:BTC-USDC"]}', "BAD_MESSAGE"),
    (b'{"op": "ping"}', "BAD_MESSAGE"),  # a binary frame
    ('{"op": "subscribe", "topic": "orders:0x' + "ab" * 20 + '\\n"}', "UNKNOWN_TOPIC"),
    ('{"op": "subscribe", "topic": "orderchanges:BTC-USDC"}', "UNKNOWN_TOPIC"),  # internal
    ('{"op": "subscribe", "topic": "tic\\u212aer:BTC-USDC"}', "UNKNOWN_TOPIC"),
    ('{"op": "subscribe", "topic": "pnl:__RESERVED__"}', "UNKNOWN_TOPIC"),
    ('{"op": "subscribe", "topic": "depth:BTC-USDC\\"}, {\\"x"}', "UNKNOWN_TOPIC"),
    ('{"op": "unsubscribe", "topic": "depth:\\u00e9\\n\\"<>"}', "NOT_SUBSCRIBED"),
]


def test_bad_input_of_every_kind_gets_a_bounded_error_and_the_connection_lives_on(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with await connect(broadcaster, next(_addresses)) as ws:
            for raw, _ in BAD_INPUTS:
                await ws.connection.send(raw)
            await pong(ws)
            assert (await ws.subscribe(f"depth:{MARKET}"))["type"] == "snapshot"
            return ws.inbox

    replies = run(scenario())
    errors = replies[: len(BAD_INPUTS)]
    assert [m["code"] for m in errors] == [code for _, code in BAD_INPUTS]
    for (raw, _), error in zip(BAD_INPUTS, errors, strict=True):
        assert error["type"] == "error" and error["message"], error
        assert len(error["message"]) <= 500, (raw[:80], error["message"][:600])
        assert "x" * 300 not in error["message"]
        if error["code"] == "BAD_MESSAGE":
            assert "topic" not in error
        else:  # the topic exactly as sent, through the encoder
            sent = orjson.loads(raw)["topic"]
            assert error["topic"] == sent
    assert replies[len(BAD_INPUTS)] == {"op": "pong"}
    assert replies[-1]["type"] == "snapshot"
    assert "binary frames are not accepted" in errors[12]["message"]
    assert "at most 128 characters, got 60006" in errors[9]["message"]


def test_oversized_message_is_closed_with_1009_and_the_process_serves_on(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    async def scenario() -> tuple[int | None, str]:
        async with await connect(broadcaster, next(_addresses)) as ws:
            await ws.send('{"op": "ping", "pad": "' + "x" * 70_000 + '"}')
            return await closed_with(ws)

    code, _ = run(scenario())
    assert code == 1009

    async def again() -> None:
        async with await connect(broadcaster, next(_addresses)) as ws:
            await pong(ws)

    run(again())


def test_text_frame_that_is_not_utf8_is_closed_with_1007_and_the_process_serves_on(
    broadcaster: Exchange, r: redis.Redis
) -> None:
    async def scenario() -> tuple[int | None, str]:
        async with await connect(broadcaster, next(_addresses)) as ws:
            # "\ud800" encoded as UTF-8 would be: not valid UTF-8, sent as a text frame.
            await ws.connection.send(b'{"op": "subscribe", "topic": "\xed\xa0\x80"}', text=True)
            return await closed_with(ws)

    code, _ = run(scenario())
    assert code == 1007
    assert wait_for(lambda: metric(broadcaster, "dex_broadcaster_connections") == 0, 30)

    async def again() -> None:
        async with await connect(broadcaster, next(_addresses)) as ws:
            await pong(ws)

    run(again())
