"""common/direct.py against a real redis-server: replies as the client decodes them, errors as
the client raises them, a script Redis forgot loaded again, a killed connection replaced."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from common.direct import DirectConnection, direct_connection, read_stream


@pytest.fixture
def direct(r: redis.Redis) -> DirectConnection:
    connection = direct_connection(r)
    assert connection is not None
    yield connection
    connection.close()


def test_replies_are_decoded_and_raw(r: redis.Redis, direct: DirectConnection) -> None:
    r.xadd("s", {"c": "é"}, id="1-0")
    assert direct.call("SET", "k", 7) == "OK"
    assert r.get("k") == "7"
    # Redis's own reply shape (a map under RESP3): no redis-py callback turns fields into dicts
    entries = [["1-0", ["c", "é"]]]
    read = direct.call("XREAD", "COUNT", 1, "STREAMS", "s", "0")
    assert read in ({"s": entries}, [["s", entries]])
    assert direct.call("XREAD", "COUNT", 1, "BLOCK", 10, "STREAMS", "s", "1-0") is None
    # xread answers in redis-py's client's shape: (id, fields) pairs
    assert direct.xread("s", "0", 1, 10) == r.xread({"s": "0"}, count=1)[0][1]
    assert direct.xread("s", "0", 1, 10) == [("1-0", {"c": "é"})]
    assert direct.xread("s", "1-0", 1, 10) is None


def test_error_reply_raises_what_the_client_raises(direct: DirectConnection) -> None:
    direct.call("SET", "k", "text")
    with pytest.raises(ResponseError, match="not an integer"):
        direct.call("INCR", "k")
    assert direct.call("GET", "k") == "text"  # the connection is still usable


def test_a_script_redis_forgot_is_loaded_again(r: redis.Redis, direct: DirectConnection) -> None:
    script = r.register_script("redis.call('INCR', KEYS[1]) return ARGV[1]")
    assert direct.run_script(script, ["n"], ["once"]) == "once"
    r.script_flush()
    assert direct.run_script(script, ["n"], ["twice"]) == "twice"
    assert r.get("n") == "2"  # the refused EVALSHA ran nothing


def test_a_killed_connection_is_replaced(r: redis.Redis, direct: DirectConnection) -> None:
    direct.call("CLIENT", "SETNAME", "held")
    r.client_kill_filter(_type="normal", skipme=True)
    assert direct.call("PING") == "PONG"
    assert direct.call("CLIENT", "GETNAME") is None  # a new connection answered


def test_close_returns_the_connection_to_the_pool(r: redis.Redis) -> None:
    direct = DirectConnection(r)
    direct.call("PING")
    before = len(r.connection_pool._available_connections)
    direct.close()
    assert len(r.connection_pool._available_connections) == before + 1
    assert direct.call("PING") == "PONG"  # and takes one again when used after
    direct.close()


def test_a_cluster_client_gets_none() -> None:
    cluster = RedisCluster.__new__(RedisCluster)  # never connects: only its type is looked at
    assert direct_connection(cluster) is None


def test_read_stream_answers_alike_held_or_through_the_client(
    r: redis.Redis, direct: DirectConnection
) -> None:
    r.xadd("s", {"c": "1"}, id="1-0")
    r.xadd("s", {"c": "2"}, id="2-0")
    held = read_stream(direct, r, "s", "0", 5, 10)
    assert (
        held == read_stream(None, r, "s", "0", 5, 10) == [("1-0", {"c": "1"}), ("2-0", {"c": "2"})]
    )
    assert read_stream(direct, r, "s", "2-0", 5, 10) is None
    assert read_stream(None, r, "s", "2-0", 5, 10) is None
