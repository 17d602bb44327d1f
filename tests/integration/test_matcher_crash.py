"""The real matcher process killed with SIGKILL mid-stream, restarted, and a second matcher
taking over a market from a killed lease holder: every command applied exactly once, checked
against the reference book trade by trade, order by order; events contiguous, none doubled."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.reference_book import ReferenceBook

from common import keys
from common.events import events_of

pytestmark = pytest.mark.integration

M = "BTC-USDC"
USERS = [f"0x{i:040x}" for i in range(1, 6)]
TOTAL = 6000 if os.environ.get("DEX_FULL_TESTS") == "1" else 3000
LEASE_MS = "1500"


def commands(total: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    placed: list[tuple[str, str]] = []
    for i in range(total):
        user = rng.choice(USERS)
        if placed and rng.random() < 0.1:
            owner, cid = rng.choice(placed)
            out.append({"op": "cancel", "user": owner, "cid": cid, "ts": 1})
            continue
        cid = f"k{i}"
        placed.append((user, cid))
        out.append({
            "op": "order", "user": user, "cid": cid, "side": rng.choice(["BUY", "SELL"]),
            "type": "LIMIT", "price": rng.randint(2_999_995, 3_000_005),
            "qty": rng.randint(1, 20), "tif": rng.choice(["GTC", "GTC", "GTC", "IOC"]),
            "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0, "acceptedAt": 1,
        })  # fmt: skip
    return out


class Feeder(threading.Thread):
    """XADDs the commands in small chunks, so a kill lands while the stream still grows."""

    def __init__(self, client: redis.Redis, items: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.client, self.items = client, items
        self.last_id = ""

    def run(self) -> None:
        for start in range(0, len(self.items), 100):
            with self.client.pipeline(transaction=False) as pipe:
                for command in self.items[start : start + 100]:
                    pipe.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})
                self.last_id = pipe.execute()[-1]
            time.sleep(0.02)


def applied_upto(client: redis.Redis) -> str:
    return client.hget(keys.market_state(M), "last") or "0-0"


def processed(client: redis.Redis) -> int:
    """Orders applied so far: the matcher trims applied entries off the stream, so they are
    counted from the arrival sequence (every item here is an order)."""
    return int(client.hget(keys.market_state(M), "aseq") or 0)


def wait_all_applied(client: redis.Redis, feeder: Feeder) -> None:
    feeder.join(timeout=60)
    assert not feeder.is_alive()
    ok = wait_for(lambda: applied_upto(client) == feeder.last_id, timeout=60, interval=0.1)
    assert ok, f"applied up to {applied_upto(client)}, stream ends at {feeder.last_id}"


def check_exactly_once(client: redis.Redis, items: list[dict[str, Any]]) -> None:
    reference = ReferenceBook(product="SPOT")
    reference.batch(0, items)
    trades = [orjson.loads(f["t"]) for _, f in client.xrange(keys.market_trades(M))]
    assert [(t["price"], t["qty"], t["buyOid"], t["sellOid"]) for t in trades] == [
        (t.price, t.qty, t.buy_cid, t.sell_cid) for t in reference.trades
    ]
    assert [t["seq"] for t in trades] == list(range(1, len(trades) + 1))
    events = [e for _, f in client.xrange(keys.market_events(M)) for e in events_of(f)]
    assert [e["eseq"] for e in events] == list(range(1, len(events) + 1))
    done = Counter((e["user"], e["cid"]) for e in events if e["k"] == "done")
    assert max(done.values()) == 1, "an order finished twice"
    assert sum(1 for e in events if e["k"] == "fill") == len(reference.trades)
    for (user, cid), order in reference.orders.items():
        record = client.hgetall(keys.market_order(M, user, cid))
        assert (record["status"], int(record["filled"])) == (order.status, order.filled), cid
        assert done[(user, cid)] == (0 if order.is_open else 1), cid
    for side, zkey in (("BUY", keys.book_bids(M)), ("SELL", keys.book_asks(M))):
        members = [m.split("|", 1)[1] for m in client.zrange(zkey, 0, -1)]
        assert members == [f"{o.user}|{o.cid}" for o in reference._side_list(side)]
    pending = client.xpending(keys.market_in(M), keys.MATCHER_GROUP)
    assert pending["pending"] == 0


def _matcher(redis_url: str, markets: str = M) -> Exchange:
    return Exchange(redis_url, DEX_MATCHER_MARKETS=markets, DEX_MATCHER_LEASE_MS=LEASE_MS)


def test_sigkill_mid_stream_then_restart_applies_every_command_once(
    redis_url: str, client: redis.Redis
) -> None:
    items = commands(TOTAL, seed=7)
    with _matcher(redis_url) as exchange:
        exchange.start("matcher")
        feeder = Feeder(client, items)
        feeder.start()
        assert wait_for(lambda: processed(client) >= TOTAL // 3, timeout=60, interval=0.01)
        exchange.kill("matcher")
        at_kill = processed(client)
        assert at_kill < TOTAL, "the matcher finished before the kill; the test proved nothing"
        exchange.start("matcher")
        wait_all_applied(client, feeder)
    check_exactly_once(client, items)


def _lease_holder_pid(client: redis.Redis) -> int:
    token = client.get(keys.market_lease(M)) or ""
    # token = "<host>:<pid>:<uuid>"
    return int(token.split(":")[-2]) if token else 0


def test_second_matcher_takes_over_from_a_killed_lease_holder(
    redis_url: str, client: redis.Redis
) -> None:
    items = commands(TOTAL, seed=11)
    with _matcher(redis_url) as first, _matcher(redis_url) as second:
        first.start("matcher")
        second.start("matcher")
        assert wait_for(lambda: _lease_holder_pid(client) != 0, timeout=30)
        pids = {first.processes["matcher"].pid: first, second.processes["matcher"].pid: second}
        holder = pids[_lease_holder_pid(client)]
        standby = first if holder is second else second
        feeder = Feeder(client, items)
        feeder.start()
        assert wait_for(lambda: processed(client) >= TOTAL // 3, timeout=60, interval=0.01)
        holder.kill("matcher")
        assert processed(client) < TOTAL
        standby_pid = standby.processes["matcher"].pid
        assert wait_for(lambda: _lease_holder_pid(client) == standby_pid, timeout=30)
        wait_all_applied(client, feeder)
        assert "lease taken" in standby.log("matcher")
        consumers = client.xinfo_consumers(keys.market_in(M), keys.MATCHER_GROUP)
        assert [c["name"].rsplit(":", 1)[-1] for c in consumers] == [str(standby_pid)]
    check_exactly_once(client, items)


def test_sigterm_releases_the_lease_and_disjoint_shards_each_match(
    redis_url: str, client: redis.Redis
) -> None:
    with _matcher(redis_url, "BTC-USDC") as spot, _matcher(redis_url, "BTC-PERP") as perp:
        spot.start("matcher")
        perp.start("matcher")
        for market in ("BTC-USDC", "BTC-PERP"):
            for user, side in ((USERS[0], "SELL"), (USERS[1], "BUY")):
                command = {
                    "op": "order", "user": user, "cid": f"{market}-{side}", "side": side,
                    "type": "LIMIT", "price": 3_000_000, "qty": 5, "tif": "GTC",
                    "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0,
                    "acceptedAt": 1,
                }  # fmt: skip
                client.xadd(keys.market_in(market), {"c": orjson.dumps(command).decode()})
        for market in ("BTC-USDC", "BTC-PERP"):
            assert wait_for(lambda m=market: client.xlen(keys.market_trades(m)) == 1, timeout=30)
        assert client.hgetall(keys.market_positions("BTC-PERP")) == {USERS[1]: "5", USERS[0]: "-5"}
        assert client.hget(keys.market_cfg("BTC-PERP"), "product") == "PERP"
        spot.stop()  # SIGTERM: drains and releases the lease at once
        assert client.get(keys.market_lease("BTC-USDC")) is None
        assert client.get(keys.market_lease("BTC-PERP")) is not None
