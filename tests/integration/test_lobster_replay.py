"""LOBSTER's AAPL sample replayed through the matcher (stream, consumer group, match.lua) as
../shared/data/README.md describes; after every event the book's levels, down to the depth the
seed state could know, equal LOBSTER's orderbook row.

Seed: one resting order per level of orderbook row 1. Then per message: 1 a new limit order,
2/3 take size off that order (an order the seed hid is found by its level), 4 a marketable
order of the opposite side for that size at that price, 5/7 nothing. A partial cancel (2) is
a cancel plus a new order for the rest (the matcher has no amend), which only moves that
remainder to the back of its level; later cancels find orders by level, so totals stay exact.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from common import keys
from services.matcher.consumer import MarketConsumer

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lobster"
MESSAGES = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
BOOK = DATA / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
M = "AAPL"
EMPTY_ASK, EMPTY_BID = 9_999_999_999, -9_999_999_999


def lobster_levels(row: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    asks: dict[int, int] = {}
    bids: dict[int, int] = {}
    for level in range(10):
        ask_p, ask_q, bid_p, bid_q = (int(v) for v in row[4 * level : 4 * level + 4])
        if ask_p != EMPTY_ASK and ask_q > 0:
            asks[ask_p] = ask_q
        if bid_p != EMPTY_BID and bid_q > 0:
            bids[bid_p] = bid_q
    return asks, bids


class Replay:
    """Turns LOBSTER messages into matcher commands and keeps our view of each order."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.consumer = MarketConsumer(client, M, "replay", lambda _m: None)
        self.consumer.ensure_group()
        self.cids = itertools.count(1)
        self.lobster_to_cid: dict[int, str] = {}
        # our resting orders: cid -> (side, price, remaining), in arrival order
        self.resting: dict[str, tuple[str, int, int]] = {}
        # the depth we can know: the seed's deepest levels, narrowed whenever LOBSTER showed
        # ten levels ending nearer (what lies beyond its sight may change without a message)
        self.bound_ask = 0
        self.bound_bid = 0
        self.known_takers: list[str] = []  # executions at levels we know: must fill in full

    def _order(self, user: str, side: str, price: int, qty: int, tif: str = "GTC") -> dict:
        cid = f"o{next(self.cids)}"
        if tif == "GTC":
            self.resting[cid] = (side, price, qty)
        return {"op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT",
                "price": price, "qty": qty, "tif": tif, "reduceOnly": False, "expiresAt": 0,
                "ts": 1, "reserved": 0, "acceptedAt": 1}  # fmt: skip

    def send(self, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            self.client.xadd(keys.market_in(M), {"c": orjson.dumps(command).decode()})
        handled = 0
        while handled < len(commands):
            handled += self.consumer.poll(block_ms=1000)

    def seed(self, asks: dict[int, int], bids: dict[int, int]) -> None:
        commands = [self._order("maker", "SELL", p, q) for p, q in asks.items()]
        commands += [self._order("maker", "BUY", p, q) for p, q in bids.items()]
        self.send(commands)

    def _take_off(self, lobster_id: int, side: str, price: int, size: int) -> list[dict]:
        """Remove ``size`` from level ``price``: that order first, else others at the level."""
        commands: list[dict[str, Any]] = []
        first = self.lobster_to_cid.get(lobster_id)
        candidates = [first] if first in self.resting else []
        candidates += [c for c, (s, p, _) in self.resting.items() if s == side and p == price]
        for cid in dict.fromkeys(candidates):
            if size == 0:
                break
            _, _, left = self.resting.pop(cid)
            commands.append({"op": "cancel", "user": "maker", "cid": cid, "ts": 1})
            taken = min(size, left)
            size -= taken
            if left > taken:
                rest = self._order("maker", side, price, left - taken)
                commands.append(rest)
                if cid == first:
                    self.lobster_to_cid[lobster_id] = rest["cid"]
        # a level out of LOBSTER's sight may have changed unseen: only a known one must suffice
        assert size == 0 or not self.is_known(side, price), f"level {price} lacks {size}"
        return commands

    def is_known(self, side: str, price: int) -> bool:
        return price <= self.bound_ask if side == "SELL" else price >= self.bound_bid

    def event(self, message: list[str]) -> None:
        kind, lobster_id, size, price = (
            int(message[1]),
            int(message[2]),
            int(message[3]),
            int(message[4]),
        )
        side = "BUY" if int(message[5]) == 1 else "SELL"
        if kind == 1:
            command = self._order("maker", side, price, size)
            self.lobster_to_cid[lobster_id] = command["cid"]
            self.send([command])
        elif kind in (2, 3):
            self.send(self._take_off(lobster_id, side, price, size))
        elif kind == 4:
            commands = self._execution(side, price, size)
            if self.is_known(side, price):
                self.known_takers.append(commands[0]["cid"])
            self.send(commands)

    def _execution(self, side: str, price: int, size: int) -> list[dict]:
        remaining = size
        for cid, (s, p, left) in list(self.resting.items()):
            if remaining == 0:
                break
            if s == side and p == price:
                taken = min(remaining, left)
                remaining -= taken
                if left == taken:
                    del self.resting[cid]
                else:
                    self.resting[cid] = (s, p, left - taken)
        taker_side = "BUY" if side == "SELL" else "SELL"
        return [self._order("taker", taker_side, price, size, "IOC")]

    def levels(self) -> tuple[dict[int, int], dict[int, int]]:
        asks = {int(p): int(q) for p, q in self.client.hgetall(keys.levels_asks(M)).items()}
        bids = {int(p): int(q) for p, q in self.client.hgetall(keys.levels_bids(M)).items()}
        return asks, bids


def visible(levels: dict[int, int], replay: Replay, asks: bool) -> dict[int, int]:
    side = "SELL" if asks else "BUY"
    return {p: q for p, q in levels.items() if replay.is_known(side, p)}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    connection.hset(keys.market_cfg(M), mapping={"product": "SPOT", "mult": "1"})
    yield connection
    connection.close()


def test_lobster_sample_levels_after_every_event(client: redis.Redis) -> None:
    messages = list(csv.reader(MESSAGES.open()))
    rows = list(csv.reader(BOOK.open()))
    assert len(messages) == len(rows) == 999
    replay = Replay(client)
    seed_asks, seed_bids = lobster_levels(rows[0])
    replay.seed(seed_asks, seed_bids)
    replay.bound_ask, replay.bound_bid = max(seed_asks), min(seed_bids)
    compared_levels = 0
    for i in range(1, len(messages)):
        want_asks, want_bids = lobster_levels(rows[i])
        # narrow the known depth first: a level that left LOBSTER's view may change unseen
        if len(want_asks) == 10:
            replay.bound_ask = min(replay.bound_ask, max(want_asks))
        if len(want_bids) == 10:
            replay.bound_bid = max(replay.bound_bid, min(want_bids))
        replay.event(messages[i])
        got_asks, got_bids = replay.levels()
        compared_levels += len(visible(want_asks, replay, True)) + len(
            visible(want_bids, replay, False)
        )
        assert visible(got_asks, replay, True) == visible(want_asks, replay, True), (
            f"asks differ after message {i + 1}: {messages[i]}"
        )
        assert visible(got_bids, replay, False) == visible(want_bids, replay, False), (
            f"bids differ after message {i + 1}: {messages[i]}"
        )
        best_bid, best_ask = max(got_bids, default=None), min(got_asks, default=None)
        assert best_bid is None or best_ask is None or best_bid < best_ask
    assert compared_levels >= 998 * 6  # about 6.4 known levels compared per event
    assert len(replay.known_takers) >= 55  # 59 of the 98 executions hit levels we can know
    for cid in replay.known_takers:
        record = client.hgetall(keys.market_order(M, "taker", cid))
        assert (record["status"], record["filled"]) == ("FILLED", record["qty"]), record
    assert client.scard(keys.market_user_open(M, "taker")) == 0
