"""common/lua.py Library against a real redis-server: a script kept as a function library is
run by FCALL, its top level once; loaded again when Redis lost it (through redis-py and through
a held connection); two versions of a script live side by side; a user who may not use
functions, or a Redis without them, gets the plain script."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support.redis_server import RedisServer, RedisServerUnavailable

from common.direct import direct_connection
from common.lua import CALL_LINE, Library

pytestmark = pytest.mark.integration

# A script in the form match.lua has: state a call keeps is set per call; `loads` counts how
# often the top level ran in this Lua state.
TOY = """
local loads = 0
local starts = {}
local function per_call(start) starts[#starts + 1] = start end
local seen
per_call(function() seen = 0 end)
local function build()
  loads = loads + 1
  local function main(keys, args)
    for i = 1, #starts do starts[i](keys, args) end
    seen = seen + 1
    redis.call('INCR', keys[1])
    return {args[1], loads, seen, VERSION}
  end
  return main
end
local main = build()
"""


def toy(version: str) -> str:
    return TOY.replace("VERSION", repr(version)) + CALL_LINE


def calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def fresh(r: redis.Redis) -> Iterator[redis.Redis]:
    r.function_flush()
    r.config_resetstat()
    yield r
    r.function_flush()


def test_the_top_level_runs_once_and_each_call_starts_afresh(fresh: redis.Redis) -> None:
    library = Library(fresh, "toy", toy("v1"))
    assert [library(keys=["n"], args=[str(i)]) for i in range(3)] == [
        ["0", 1, 1, "v1"],
        ["1", 1, 1, "v1"],
        ["2", 1, 1, "v1"],
    ]
    assert fresh.get("n") == "3"
    assert calls(fresh, "evalsha") == 0 and calls(fresh, "function|load") == 1


def test_a_library_redis_lost_is_loaded_again(fresh: redis.Redis) -> None:
    library = Library(fresh, "toy", toy("v1"))
    assert library(keys=["n"], args=["a"])[0] == "a"
    fresh.function_flush()  # a restarted Redis without persistence, a new cluster node
    assert library(keys=["n"], args=["b"])[0] == "b"
    direct = direct_connection(fresh)
    assert direct is not None
    fresh.function_flush()
    assert direct.run_script(library, ["n"], ["c"])[0] == "c"
    direct.close()
    assert fresh.get("n") == "3"  # a call Redis refused ran nothing
    assert calls(fresh, "function|load") == 3


def test_two_versions_of_a_script_keep_their_own_library(fresh: redis.Redis) -> None:
    old, new = Library(fresh, "toy", toy("v1")), Library(fresh, "toy", toy("v2"))
    assert old.function != new.function
    for _ in range(2):
        assert old(keys=["n"], args=["x"])[3] == "v1"
        assert new(keys=["n"], args=["x"])[3] == "v2"
    assert calls(fresh, "function|load") == 2  # neither replaced the other


def test_without_the_right_to_use_functions_the_plain_script_runs(
    fresh: redis.Redis, redis_url: str
) -> None:
    fresh.acl_setuser(
        "nofunctions", enabled=True, nopass=True, keys=["~*"], channels=["&*"],
        commands=["+@all", "-function", "-fcall", "-fcall_ro"],
    )  # fmt: skip
    limited = redis.Redis.from_url(redis_url, decode_responses=True, username="nofunctions")
    try:
        library = Library(limited, "toy", toy("v1"))
        assert library(keys=["n"], args=["a"]) == ["a", 1, 1, "v1"]
        assert library.functions is False
        assert library(keys=["n"], args=["b"]) == ["b", 1, 1, "v1"]  # by EVALSHA
        assert calls(fresh, "evalsha") >= 2 and fresh.function_list() == []
    finally:
        limited.close()
        fresh.acl_deluser("nofunctions")


def test_only_a_script_that_ends_with_the_call_line_is_a_library(fresh: redis.Redis) -> None:
    with pytest.raises(ValueError, match="does not end with"):
        Library(fresh, "plain", "return 1\n")


def test_past_the_memory_limit_a_call_still_runs_as_the_plain_script_did(
    fresh: redis.Redis,
) -> None:
    """Past maxmemory (noeviction) Redis refuses a function that may write unless it is
    flagged allow-oom; the plain script ran there once it had written (match.lua's
    XREADGROUP is a write Redis lets through), so the library is flagged: what the gateway
    accepted before its high-water mark is still matched."""
    library = Library(fresh, "toy", toy("v1"))
    plain = fresh.register_script(toy("v1"))
    assert library(keys=["n"], args=["a"])[0] == "a"
    fresh.config_set("maxmemory", 1)
    try:
        assert library(keys=["n"], args=["b"])[0] == "b"
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            plain(keys=["n"], args=["c"])  # its first write (INCR) may grow memory: refused
    finally:
        fresh.config_set("maxmemory", 0)
    assert fresh.get("n") == "2"


def test_a_redis_without_functions_runs_the_plain_script() -> None:
    """As a Redis older than 7.0 answers: FCALL and FUNCTION are unknown commands."""
    server = RedisServer(
        extra_args=("--rename-command", "FCALL", "", "--rename-command", "FUNCTION", "")
    )
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            library = Library(client, "toy", toy("v1"))
            assert library(keys=["n"], args=["a"]) == ["a", 1, 1, "v1"]
            assert library.functions is False
            direct = direct_connection(client)
            assert direct is not None
            assert direct.run_script(library, ["n"], ["b"])[0] == "b"
            direct.close()
            assert client.get("n") == "2"
    finally:
        server.stop()
