"""What a match.lua call skips by its state's hints (match/state.lua nexp, nage, ltrig,
untrimmed) and by the newest candles kept in the stats hash (match/statistics.lua): the expiry
index, the 24 h window's ageing, the LAST trigger sets and the streams' trims are looked at
only when something may be there, and what they would have found still happens on time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from common import keys
from common.events import events_of
from common.lua import ScriptSet
from common.order_reads import order_view
from services.matcher.consumer import LUA_DIR, match_args, match_keys

pytestmark = pytest.mark.integration

M = "HINT-SPOT"
DAY = 86_400_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY  # a day boundary
A, B = "0x" + "a" * 40, "0x" + "b" * 40
TRIM_EVERY = 100  # match/state.lua


def order(who: str, cid: str, side: str, price: int, qty: int, **extra: Any) -> dict[str, Any]:
    return {
        "op": "order", "user": who, "cid": cid, "side": side, "type": "LIMIT", "price": price,
        "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0,
    } | extra  # fmt: skip


class Driver:
    """match.lua called directly, at the `now` each call names, entries passed in ARGV."""

    def __init__(self, client: redis.Redis, trades_maxlen: int | None = None) -> None:
        client.hset(keys.market_cfg(M), mapping={"product": "SPOT", "mult": "1", "lotSize": "1"})
        self.client = client
        self.scripts = ScriptSet(client, LUA_DIR)
        self.trades_maxlen = trades_maxlen
        self.n = 0

    def run(self, now: int, *commands: dict[str, Any]) -> None:
        args = match_args(M, now, "")
        if self.trades_maxlen is not None:
            args[5] = self.trades_maxlen  # ARGV[6]
        for command in commands:
            self.n += 1
            args.extend((f"1-{self.n}", orjson.dumps(command).decode()))
        self.scripts["match"](keys=match_keys(M), args=args)

    def trade(self, now: int, price: int, qty: int) -> None:
        self.run(
            now,
            order(A, f"s{self.n}", "SELL", price, qty),
            order(B, f"b{self.n}", "BUY", price, qty),
        )

    def calls(self, command: str) -> int:
        stats = self.client.info("commandstats").get(f"cmdstat_{command}")
        return int(stats["calls"]) if stats else 0

    def state(self, field: str) -> str | None:
        return self.client.hget(keys.market_state(M), field)

    def status(self, who: str, cid: str) -> tuple[str, str]:
        record = order_view(self.client.hgetall(keys.market_order(M, who, cid)))
        return record["status"], record["reason"]


def test_orders_expire_in_the_first_call_at_their_time_and_no_call_before_reads_the_index(
    client: redis.Redis,
) -> None:
    m = Driver(client)
    m.run(T0, order(A, "late", "SELL", 105, 5, expiresAt=T0 + 5_000))
    assert m.state("nexp") == str(T0 + 5_000)
    # an earlier expiry brings the hint forward; one that fills first leaves it stale
    m.run(T0 + 1, order(A, "early", "SELL", 104, 5, expiresAt=T0 + 3_000))
    m.run(T0 + 2, order(A, "filled", "SELL", 100, 1, expiresAt=T0 + 1_000))
    m.run(T0 + 3, order(B, "taker", "BUY", 100, 1))
    assert m.state("nexp") == str(T0 + 1_000)
    client.config_resetstat()
    m.run(T0 + 999)
    assert m.calls("zrangebyscore") == 0
    m.run(T0 + 1_000)  # the stale hint: one look, nothing due, the index's first is next
    assert (m.calls("zrangebyscore"), m.state("nexp")) == (1, str(T0 + 3_000))
    m.run(T0 + 2_999)
    assert m.calls("zrangebyscore") == 1
    assert m.status(A, "early") == ("NEW", None)
    m.run(T0 + 3_000)
    assert m.status(A, "early") == ("EXP", "EXPIRES_AT")
    assert (m.status(A, "late"), m.state("nexp")) == (("NEW", None), str(T0 + 5_000))
    m.run(T0 + 5_000)
    assert m.status(A, "late") == ("EXP", "EXPIRES_AT")
    assert m.calls("zrangebyscore") == 3
    assert m.state("nexp") == "-"
    assert client.zcard(keys.market_expiries(M)) == 0
    assert client.zcard(keys.book_asks(M)) == 0 and client.hgetall(keys.levels_asks(M)) == {}
    done = [
        (e["cid"], e["status"], e["reason"])
        for _, f in client.xrange(keys.market_events(M))
        for e in events_of(f)
        if e["k"] == "done"
    ]
    assert done == [
        ("filled", "FILLED", None), ("taker", "FILLED", None),
        ("early", "EXP", "EXPIRES_AT"), ("late", "EXP", "EXPIRES_AT"),
    ]  # fmt: skip
    # nothing in the index any more: no call reads it, however late
    m.run(T0 + DAY)
    assert m.calls("zrangebyscore") == 3


def test_a_state_without_hints_or_kept_candles_looks_everything_up(client: redis.Redis) -> None:
    """A market whose state and stats predate the hints: the call looks, as before them."""
    m = Driver(client)
    m.trade(T0 + 1_000, 100, 2)
    m.run(T0 + 1_001, order(A, "e1", "SELL", 105, 5, expiresAt=T0 + 2_000))
    client.hdel(keys.market_state(M), "nexp", "nage", "ltrig", "untrimmed")
    client.hdel(keys.market_stats(M), "c:1m", "c:5m", "c:15m", "c:1h", "c:4h", "c:1d")
    m.trade(T0 + 2_000, 103, 1)  # the same minute: merged into the candles of the hashes
    assert m.status(A, "e1") == ("EXP", "EXPIRES_AT")
    for interval in ("1m", "1d"):
        candle = orjson.loads(client.hget(keys.market_candles(M, interval), str(T0)))
        assert candle == [100, 103, 100, 103, 3, 200 + 103]
    assert (m.state("nexp"), m.state("nage"), m.state("ltrig")) == (
        "-", str(T0 + DAY + 60_000), "0",
    )  # fmt: skip


def test_a_clock_that_went_back_merges_into_the_older_candle(client: redis.Redis) -> None:
    m = Driver(client)
    m.trade(T0 + 1_000, 100, 1)
    m.trade(T0 + 61_000, 110, 1)
    m.trade(T0 + 2_000, 90, 1)  # a matcher whose clock is a minute behind
    m.trade(T0 + 62_000, 111, 1)
    one_minute = {
        int(t): orjson.loads(v) for t, v in client.hgetall(keys.market_candles(M, "1m")).items()
    }
    assert one_minute == {
        T0: [100, 100, 90, 90, 2, 190],
        T0 + 60_000: [110, 111, 110, 111, 2, 221],
    }
    assert orjson.loads(client.hget(keys.market_candles(M, "5m"), str(T0))) == [
        100, 111, 90, 111, 4, 411,
    ]  # fmt: skip
    stats = client.hgetall(keys.market_stats(M))
    assert [stats[f] for f in ("last", "high", "low", "open")] == ["111", "111", "90", "100"]
    assert (stats["vol"], stats["qvol"]) == ("4", "411")


def test_the_window_ages_once_a_bucket_is_due_and_no_call_looks_before(
    client: redis.Redis,
) -> None:
    m = Driver(client)
    m.trade(T0 + 1_000, 100, 2)
    m.trade(T0 + 61_000, 105, 1)
    assert m.state("nage") == str(T0 + DAY + 60_000)
    client.config_resetstat()
    m.run(T0 + DAY + 59_999)
    assert m.calls("zrangebyscore") == 0
    m.run(T0 + DAY + 60_000)  # the first minute leaves
    assert m.calls("zrangebyscore") == 2
    stats = client.hgetall(keys.market_stats(M))
    assert (stats["open"], stats["high"], stats["low"], stats["vol"]) == ("105", "105", "105", "1")
    assert m.state("nage") == str(T0 + DAY + 120_000)
    m.run(T0 + DAY + 120_000)
    stats = client.hgetall(keys.market_stats(M))
    assert (stats["open"], stats["high"], stats["vol"], stats["qvol"]) == ("", "", "0", "0")
    assert m.state("nage") == "-"
    client.config_resetstat()
    m.run(T0 + 3 * DAY)
    assert m.calls("zrangebyscore") == 0


def test_a_last_trigger_placed_after_the_state_said_none_fires(client: redis.Redis) -> None:
    m = Driver(client)
    m.trade(T0, 100, 1)
    assert m.state("ltrig") == "0"
    client.config_resetstat()
    m.run(T0 + 1)
    assert m.calls("exists") == 0  # (an order passed in ARGV has its record looked up: EXISTS)
    m.run(T0 + 1, order(B, "rest", "BUY", 95, 1))
    stop = order(A, "stop", "SELL", 0, 1, type="MARKET", trigger="STOP_MARKET",
                 triggerPrice=97, triggerSource="LAST")  # fmt: skip
    m.run(T0 + 2, stop)
    assert (m.status(A, "stop"), m.state("ltrig")) == (("UNTRIGGERED", None), "1")
    m.trade(T0 + 3, 96, 1)  # LAST falls to 96: the stop fires into the resting bid at 95
    assert m.status(A, "stop") == ("FILLED", None)
    assert m.status(B, "rest") == ("FILLED", None)
    m.run(T0 + 4)  # the sets are empty again: the state says so after one look
    assert m.state("ltrig") == "0"


def test_the_trades_stream_is_trimmed_every_hundred_trades(client: redis.Redis) -> None:
    m = Driver(client, trades_maxlen=10)
    client.config_resetstat()
    for i in range(250):
        m.trade(T0 + i, 100, 1)
    # a trim in the calls that passed trade 100 and 200; "~" drops whole nodes only
    assert m.calls("xtrim") == 2
    assert 10 <= client.xlen(keys.market_trades(M)) <= 10 + TRIM_EVERY + 100


def test_24h_volumes_past_2_to_the_53_are_added_by_redis_exactly(client: redis.Redis) -> None:
    m = Driver(client)
    m.trade(T0, 100, 1)
    client.hset(keys.market_stats(M), mapping={"vol": 2**53 - 1, "qvol": 2**60})
    m.trade(T0 + 1, 100, 2)
    stats = client.hgetall(keys.market_stats(M))
    assert (stats["vol"], stats["qvol"]) == (str(2**53 + 1), str(2**60 + 200))
    client.hset(keys.market_stats(M), mapping={"vol": 7, "qvol": 700})
    m.trade(T0 + 2, 100, 1)  # below 2^53 again: summed in the script
    stats = client.hgetall(keys.market_stats(M))
    assert (stats["vol"], stats["qvol"]) == ("8", "800")
