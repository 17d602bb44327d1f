"""The chaos run: orders flow while every process is SIGKILLed in turn and Redis itself crashes.

Afterwards nothing accepted is lost and the auditor (DESIGN.md invariants) finds nothing
broken: conservation per asset, no negative balance, reservations equal to what open orders
need, every trade settled once, every accepted order final or resting, book not crossed. A
WebSocket client that subscribes afresh holds the REST book.

The default run is reduced (a few traders, one kill round); ``DEX_CHAOS_FULL=1`` runs the long
version (more traders, higher rate, three kill rounds).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import redis
import websockets
from support.exchange import Exchange
from support.redis_server import RedisServer, wait_for
from support.signing import Trader

from common.audit import audit
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

FULL = os.environ.get("DEX_CHAOS_FULL") == "1"
TRADERS = 12 if FULL else 4
ROUNDS = 3 if FULL else 1
PAUSE_S = 4.0 if FULL else 2.0
ORDERS_PER_SECOND = 120 if FULL else 40
PROCESSES = ("matcher", "settler", "beat", "broadcaster", "gateway")
FINAL_OR_RESTING = {"NEW", "PARTIAL", "FILLED", "CXL", "EXP", "REJECTED"}
MARKETS = {"BTC-USDC": "SPOT", "BTC-PERP": "PERP"}
MID = 3_000_000


@dataclass
class OrderFlow:
    """Random crossing orders from a background thread; remembers every 202."""

    exchange: Exchange
    traders: list[Trader]
    accepted: list[tuple[str, str]] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="order-flow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(7)
        interval = 1.0 / ORDERS_PER_SECOND
        with httpx.Client(base_url=self.exchange.http, timeout=5.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                trader = rng.choice(self.traders)
                market = rng.choice(list(MARKETS))
                side = rng.choice(("BUY", "SELL"))
                price = MID + rng.randint(-3, 3) * 100
                body = trader.order(
                    market, side, price, rng.randint(1, 20), product=MARKETS[market]
                )
                try:
                    response = client.post("/v1/orders", json=body)
                except httpx.HTTPError as exc:
                    self._count(type(exc).__name__)
                else:
                    if response.status_code == 202:
                        self.accepted.append((trader.address, body["clientOrderId"]))
                    else:
                        self._count(str(response.status_code))
                self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def _count(self, what: str) -> None:
        self.refused[what] = self.refused.get(what, 0) + 1


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A Redis that persists every write before answering, so a crash loses nothing acked."""
    server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    with server:
        yield server


def test_kills_and_a_redis_crash_lose_nothing_and_break_no_invariant(
    durable_redis: RedisServer,
) -> None:
    markets = load_markets(DEFAULT_MARKETS_FILE)
    traders = [Trader() for _ in range(TRADERS)]
    with Exchange(durable_redis.url) as exchange:
        exchange.start()
        for trader in traders:
            exchange.deposit(trader.address, "BTC", 10 * 10**8)
            exchange.deposit(trader.address, "USDC", 1_000_000 * 10**6)
        revived: list[str] = []
        flow = OrderFlow(exchange, traders)
        flow.start()
        try:
            for _ in range(ROUNDS):
                for name in PROCESSES:
                    time.sleep(PAUSE_S)
                    exchange.kill(name)
                    time.sleep(0.5)
                    exchange.start(name)
                time.sleep(PAUSE_S)
                durable_redis.crash_and_restart()
                revived += _supervise(exchange, PAUSE_S * 2)
        finally:
            flow.stop()
        revived += _supervise(exchange, 1.0)
        assert len(flow.accepted) > 10 * ROUNDS, f"too few orders got through: {flow.refused}"

        client = redis.Redis.from_url(durable_redis.url, decode_responses=True)
        with httpx.Client(base_url=exchange.http, timeout=10.0) as http:
            assert wait_for(lambda: _all_processed(http, flow.accepted), 90, interval=1.0), (
                _unprocessed(http, flow.accepted),
                exchange.log("matcher")[-3000:],
            )
            report: dict[str, Any] = {}

            def audit_clean() -> bool:
                report.clear()
                report.update(audit(client, markets))
                return not _broken(report)

            clean = wait_for(audit_clean, 90, interval=1.0)
            print("auditor report:\n" + json.dumps(report, indent=2, default=str))
            print(f"orders accepted: {len(flow.accepted)}, refused or failed: {flow.refused}")
            print(f"processes that exited on their own and were restarted: {revived}")
            assert clean, (_broken(report), exchange.log("settler")[-3000:])

            for symbol in MARKETS:
                rest = http.get(f"/v1/markets/{symbol}/depth", params={"limit": 1000}).json()
                seen = asyncio.run(_websocket_depth(exchange.ws, symbol))
                assert seen == {"seq": rest["seq"], "bids": rest["bids"], "asks": rest["asks"]}


def _supervise(exchange: Exchange, seconds: float) -> list[str]:
    """Play the supervisor (Kubernetes, compose) for a while: restart what exits."""
    revived: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        revived += exchange.revive()
        time.sleep(0.2)
    return revived


def _all_processed(http: httpx.Client, accepted: list[tuple[str, str]]) -> bool:
    return not _unprocessed(http, accepted)


def _unprocessed(http: httpx.Client, accepted: list[tuple[str, str]]) -> list[Any]:
    waiting: list[Any] = []
    for user, cid in accepted:
        response = http.get(f"/v1/orders/{user}/{cid}")
        status = response.json().get("status") if response.status_code == 200 else None
        if status not in FINAL_OR_RESTING:
            waiting.append((user, cid, response.status_code, status))
    return waiting[:20]


def _broken(report: dict[str, Any]) -> list[str]:
    """Names of the invariants the auditor did not find intact."""
    broken = []
    for name, verdict in report.get("invariants", {}).items():
        intact = verdict in ("ok", True) or (isinstance(verdict, dict) and verdict.get("ok"))
        if not intact:
            broken.append(f"{name}: {verdict}")
    for asset, line in report.get("assets", report.get("conservation", {})).items():
        if isinstance(line, dict) and int(line.get("difference", 0)) != 0:
            broken.append(f"conservation {asset}: {line}")
    return broken


async def _websocket_depth(url: str, market: str) -> dict[str, Any]:
    """Depth as a fresh subscriber holds it: the snapshot, updates applied while it waits."""
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "topic": f"depth:{market}"}).decode())
        book: dict[str, dict[int, int]] = {"bids": {}, "asks": {}}
        seq = -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=1.0))
            except TimeoutError:
                if seq >= 0:
                    break
                continue
            if message.get("topic") != f"depth:{market}":
                continue
            if message["type"] == "snapshot":
                book = {side: dict(map(tuple, message["data"][side])) for side in book}
            else:
                assert message["seq"] == seq + 1, f"depth gap: {seq} then {message['seq']}"
                for side in book:
                    for price, qty in message["data"][side]:
                        if qty:
                            book[side][price] = qty
                        else:
                            book[side].pop(price, None)
            seq = message["seq"]
    return {
        "seq": seq,
        "bids": [[p, q] for p, q in sorted(book["bids"].items(), reverse=True)],
        "asks": [[p, q] for p, q in sorted(book["asks"].items())],
    }
