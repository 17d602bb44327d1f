"""The gateway's lean pipelined Redis lane: replies in order, redis-py's exceptions, the
selected database, and recovery after the connection breaks."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.exceptions import NoScriptError, ResponseError
from support.redis_server import RedisServer

from services.gateway.lane import lane_for
from services.gateway.transport import REPLY_CONVERSIONS, Commands

pytestmark = pytest.mark.integration


def test_batches_answer_in_order_with_redis_py_errors_and_the_selected_db(
    redis_server: RedisServer,
) -> None:
    redis_server.flushall()
    url = redis_server.url_for_db(3)
    lane = lane_for(url, cluster=False)
    assert lane is not None and lane_for(url, cluster=True) is None
    assert lane_for("rediss://host:6380/0", cluster=False) is None

    async def scenario() -> list[list[object]]:
        try:
            first = lane.execute([("SET", "k", "v"), ("INCR", "n"), ("EVALSHA", "0" * 40, 0)])
            second = lane.execute([("HSET", "h", "a", 1, "b", 2), ("INCR", "k")])
            return list(await asyncio.gather(first, second))
        finally:
            await lane.close()

    first, second = asyncio.run(scenario())
    assert first[:2] == ["OK", 1] and isinstance(first[2], NoScriptError)
    assert second[0] == 2 and isinstance(second[1], ResponseError)
    direct = redis.Redis.from_url(url, decode_responses=True)
    assert direct.get("k") == "v" and direct.hgetall("h") == {"a": "1", "b": "2"}
    assert redis.Redis.from_url(redis_server.url).get("k") is None  # db 0 untouched
    direct.close()


def test_recorder_converts_like_redis_py() -> None:
    recorder = Commands().hgetall("h").xadd("s", {"c": "x", "d": 1})
    assert recorder == [("HGETALL", "h"), ("XADD", "s", "*", "c", "x", "d", 1)]
    convert = REPLY_CONVERSIONS["HGETALL"]
    assert convert(["a", "1", "b", "2"]) == {"a": "1", "b": "2"}


def test_a_broken_connection_fails_in_flight_batches_and_the_next_one_reconnects() -> None:
    server = RedisServer().start()
    lane = lane_for(server.url, cluster=False)
    assert lane is not None

    port = server.port
    restarted = RedisServer(port=port)

    async def scenario() -> tuple[object, object, object]:
        try:
            before = await lane.execute([("PING",)])
            server.stop()
            try:
                await lane.execute([("PING",)])
                during: object = None
            except redis.ConnectionError as exc:
                during = exc
            restarted.start()
            after = await lane.execute([("PING",)])
            return before, during, after
        finally:
            await lane.close()

    try:
        before, during, after = asyncio.run(scenario())
    finally:
        server.stop()
        restarted.stop()
    assert before == ["PONG"]
    assert isinstance(during, redis.ConnectionError)
    assert after == ["PONG"]


def test_a_redis_that_never_answers_fails_the_batches_in_flight_with_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchdog fails every batch waiting once the oldest has waited REPLY_TIMEOUT_S; the
    next batch gets a new connection."""
    from services.gateway import lane as lane_module

    monkeypatch.setattr(lane_module, "REPLY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(lane_module, "WATCHDOG_S", 0.05)

    async def scenario() -> tuple[list[object], int]:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # reads nothing, answers nothing

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        lane = lane_for(f"redis://127.0.0.1:{port}/0", cluster=False)
        assert lane is not None
        try:
            outcomes = await asyncio.gather(
                lane.execute([("PING",)]), lane.execute([("PING",)]), return_exceptions=True
            )
            with pytest.raises(redis.TimeoutError):
                await lane.execute([("PING",)])
            return list(outcomes), len(accepted)
        finally:
            await lane.close()
            for writer in accepted:
                writer.close()
            server.close()

    outcomes, connections = asyncio.run(scenario())
    assert all(isinstance(outcome, redis.TimeoutError) for outcome in outcomes)
    assert connections == 2  # the failed connection is closed; the third batch opened another
