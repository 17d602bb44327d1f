"""match.lua's trigger book on a real Redis, the matcher's consumer in process (no gateway, no
settler): a cascade past FIRES_PER_CALL fires the rest in the next call, by the prices
command the call appends, each order once; expiresAt, cancel_all and the market's expiry end
untriggered orders, each with its done event, and leave no trace in the trigger sets."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import pytest
import redis

from common import keys
from common.events import events_of
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.matcher.consumer import MarketConsumer, write_market_cfg

pytestmark = pytest.mark.integration

M = "BTC-USDC"
P = 3_000_000
MAKER, TAKER = "0x" + "a" * 40, "0x" + "b" * 40
FIRES_PER_CALL = 100  # match/triggers.lua


def user(n: int) -> str:
    return f"0x{n:040x}"


def order(who: str, cid: str, side: str, price: int, qty: int, **extra: Any) -> dict[str, Any]:
    return {
        "op": "order", "user": who, "cid": cid, "side": side, "type": "LIMIT", "price": price,
        "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0,
        "acceptedAt": 1,
    } | extra  # fmt: skip


def stop_sell(who: str, cid: str, trigger: int, **extra: Any) -> dict[str, Any]:
    return order(who, cid, "SELL", 0, 1, type="MARKET", trigger="STOP_MARKET",
                 triggerPrice=trigger, triggerSource="LAST", **extra)  # fmt: skip


class Matcher:
    def __init__(self, client: redis.Redis) -> None:
        write_market_cfg(client, load_markets(DEFAULT_MARKETS_FILE).markets[M])
        self.client = client
        self.consumer = MarketConsumer(client, M, "trig", lambda _m: None, lease_ms=60_000)
        self.consumer.ensure_group()
        assert self.consumer.acquire()

    def run(self, *commands: dict[str, Any]) -> None:
        for command in commands:
            self.client.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})
        handled = 0
        while handled < len(commands):
            handled += self.consumer.poll(block_ms=10)

    def status(self, who: str, cid: str) -> tuple[str, str]:
        status, reason = self.client.hmget(keys.market_order(M, who, cid), "status", "reason")
        return status or "", reason or ""

    def waiting(self) -> int:
        sets = [keys.market_triggers(M, s, d) for s in ("MARK", "LAST", "INDEX") for d in "UD"]
        return sum(self.client.zcard(k) for k in sets)

    def done_events(self) -> dict[str, tuple[str, str]]:
        done = {}
        for _, fields in self.client.xrange(keys.market_events(M)):
            for event in events_of(fields):
                if event["k"] == "done":
                    done[event["cid"]] = (event["status"], event["reason"] or "")
        return done


def test_a_cascade_past_the_bound_fires_the_rest_in_the_next_call_each_once(
    client: redis.Redis,
) -> None:
    m = Matcher(client)
    count = FIRES_PER_CALL + 50
    m.run(order(MAKER, "bid", "BUY", P - 100, count))
    m.run(*(stop_sell(user(i + 1), f"s{i}", P - 10) for i in range(count)))
    assert m.waiting() == count
    # one trade at P - 10: every stop is due; each sells 1 into the bid at P - 100
    m.run(order(MAKER, "ask", "SELL", P - 10, 1), order(TAKER, "buy", "BUY", P - 10, 1))
    filled = [m.status(user(i + 1), f"s{i}")[0] for i in range(count)]
    assert filled.count("FILLED") == FIRES_PER_CALL and m.waiting() == count - FIRES_PER_CALL
    # the first 100 by arrival (one trigger price), the rest in the next call
    assert filled[:FIRES_PER_CALL] == ["FILLED"] * FIRES_PER_CALL
    tail = [e for _, e in client.xrange(keys.market_in(M)) if '"prices"' in e["c"]]
    assert len(tail) <= 1
    deadline = time.monotonic() + 10
    while m.waiting() and time.monotonic() < deadline:
        m.consumer.poll(block_ms=10)
    assert [m.status(user(i + 1), f"s{i}")[0] for i in range(count)] == ["FILLED"] * count
    for _ in range(3):  # more calls fire nothing more
        m.consumer.poll(block_ms=10)
    assert client.hget(keys.market_state(M), "tseq") == str(1 + count)
    assert m.status(MAKER, "bid") == ("FILLED", "")
    assert sum(1 for cid in m.done_events() if cid.startswith("s")) == count


def test_expiry_cancel_all_and_the_markets_expiry_end_untriggered_orders(
    client: redis.Redis,
) -> None:
    m = Matcher(client)
    now = int(time.time() * 1000)
    ids = itertools.count()
    a, b = user(1), user(2)
    m.run(
        stop_sell(a, "exp", P - 10, expiresAt=now + 150),
        stop_sell(a, "a1", P - 10),
        order(
            a,
            "a2",
            "BUY",
            P + 20,
            1,
            trigger="STOP_LIMIT",
            triggerPrice=P + 10,
            triggerSource="MARK",
        ),
        stop_sell(b, "b1", P - 20),
    )
    assert [m.status(a, c)[0] for c in ("exp", "a1", "a2")] == ["UNTRIGGERED"] * 3
    time.sleep(0.2)
    m.run({"op": "cancel_all", "user": a, "ts": next(ids)})  # the expiry runs first
    assert m.status(a, "exp") == ("EXP", "EXPIRES_AT")
    assert m.status(a, "a1") == ("CXL", "USER") and m.status(a, "a2") == ("CXL", "USER")
    assert m.status(b, "b1")[0] == "UNTRIGGERED"
    m.run({"op": "expire", "ts": next(ids)})
    assert m.status(b, "b1") == ("CXL", "MARKET_EXPIRED")
    assert m.waiting() == 0 and client.zcard(keys.market_expiries(M)) == 0
    assert m.done_events() == {
        "exp": ("EXP", "EXPIRES_AT"), "a1": ("CXL", "USER"), "a2": ("CXL", "USER"),
        "b1": ("CXL", "MARKET_EXPIRED"),
    }  # fmt: skip
    for who in (a, b):
        assert client.smembers(keys.market_user_open(M, who)) == set()
