"""The market-data WebSocket (the broadcaster's ``/ws``, API.md §7), kept alive.

``MarketStream`` holds one connection and a set of topics. It subscribes every topic on each
connection, and when the connection drops it reconnects with exponential backoff and full
jitter (0.1 s doubling to 5 s) and subscribes them all again; each topic's snapshot then starts
it afresh. ``OrderBook`` keeps a local copy of ``depth:{market}`` by ``seq``: a snapshot sets
it, an update with the next ``seq`` applies, an older one is ignored, and a gap (an update
lost) makes the book unsynced and re-subscribes the topic (unsubscribe, subscribe) by itself.

    async with MarketStream("ws://127.0.0.1:8001/ws") as stream:
        book = stream.book("BTC-USDC")
        await book.wait_synced()
        print(book.best_bid(), book.best_ask())
        async for trade in stream.trades("BTC-USDC"):
            print(trade.price, trade.qty)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import websockets

from orderbookdex.models import Level, Trade

__all__ = ["MarketStream", "OrderBook", "Subscription"]

log = logging.getLogger(__name__)

Message = dict[str, Any]
MAX_MESSAGE = 16 * 2**20  # a snapshot of a deep book is large, but not without bound


class OrderBook:
    """A local copy of one market's depth, in step with ``seq`` (API.md §7 ``depth:{m}``)."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.topic = f"depth:{market}"
        self.seq = -1
        self.synced = False
        self.resyncs = 0  # gaps seen (each re-subscribed)
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        self._changed = asyncio.Event()

    @property
    def bids(self) -> list[Level]:
        """``[(price, qty)]`` best (highest) first."""
        return sorted(self._bids.items(), key=lambda level: -level[0])

    @property
    def asks(self) -> list[Level]:
        """``[(price, qty)]`` best (lowest) first."""
        return sorted(self._asks.items())

    def best_bid(self) -> int | None:
        return max(self._bids) if self._bids else None

    def best_ask(self) -> int | None:
        return min(self._asks) if self._asks else None

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Return once the book holds a snapshot and every update since."""
        await self.wait_for(lambda: self.synced, timeout)

    async def wait_for_seq(self, seq: int, timeout: float = 30.0) -> None:
        """Return once the book is synced at ``seq`` or later."""
        await self.wait_for(lambda: self.synced and self.seq >= seq, timeout)

    async def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    def unsync(self) -> None:
        self.synced = False
        self._notify()

    def on_snapshot(self, seq: int, data: Message) -> None:
        self._bids = {int(p): int(q) for p, q in data.get("bids", []) if int(q) > 0}
        self._asks = {int(p): int(q) for p, q in data.get("asks", []) if int(q) > 0}
        self.seq = seq
        self.synced = True
        self._notify()

    def on_update(self, seq: int, data: Message) -> bool:
        """Apply an update; False on a gap (the caller re-subscribes)."""
        if not self.synced or seq <= self.seq:
            return True  # before the snapshot, or already in it
        if seq != self.seq + 1:
            self.resyncs += 1
            self.unsync()
            return False
        for side, levels in (
            (self._bids, data.get("bids", [])),
            (self._asks, data.get("asks", [])),
        ):
            for price, qty in levels:
                if int(qty) == 0:
                    side.pop(int(price), None)
                else:
                    side[int(price)] = int(qty)
        self.seq = seq
        self._notify()
        return True


class Subscription:
    """An async iterator over one topic's messages (``{"topic", "type", "seq", "data"}``).

    Holds at most ``maxsize`` unread messages; when full the oldest is dropped (and counted
    in ``dropped``), so a slow reader never makes the stream buffer without bound.
    """

    def __init__(self, topic: str, maxsize: int = 10_000) -> None:
        self.topic = topic
        self.dropped = 0
        self._items: deque[Message] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()

    def put(self, message: Message) -> None:
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(message)
        self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class MarketStream:
    """One broadcaster connection, re-established with backoff, and its topics."""

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8001/ws",
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.url = url
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connects = 0  # connections made (1 + reconnections)
        self._books: dict[str, OrderBook] = {}
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> MarketStream:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"MarketStream {self.url}")

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- topics -----------------------------------------------------------------------------
    @property
    def topics(self) -> set[str]:
        return set(self._subscriptions) | {book.topic for book in self._books.values()}

    def book(self, market: str) -> OrderBook:
        """The synced book of ``market`` (subscribes ``depth:{market}``)."""
        book = self._books.get(market)
        if book is None:
            book = self._books[market] = OrderBook(market)
            self._send_soon({"op": "subscribe", "topic": book.topic}, book.topic)
        return book

    def subscribe(self, topic: str) -> Subscription:
        """Every message of ``topic``, snapshots and updates, as an async iterator."""
        subscription = Subscription(topic)
        first = topic not in self.topics
        self._subscriptions.setdefault(topic, []).append(subscription)
        if first:
            self._send_soon({"op": "subscribe", "topic": topic}, topic)
        return subscription

    async def trades(self, market: str) -> AsyncIterator[Trade]:
        """Each new trade of ``market`` (after the snapshot's last 50)."""
        async for message in self.subscribe(f"trade:{market}"):
            if message.get("type") == "update":
                for trade in message.get("data") or []:
                    yield Trade.from_json(trade)

    def orders(self, user: str) -> Subscription:
        """The user's order updates (``orders:{userId}``), snapshot first."""
        return self.subscribe(f"orders:{user}")

    def pnl(self, user: str) -> Subscription:
        """The user's positions and margin (``pnl:{userId}``), snapshot first."""
        return self.subscribe(f"pnl:{user}")

    def ticker(self, market: str) -> Subscription:
        return self.subscribe(f"ticker:{market}")

    # -- the connection ----------------------------------------------------------------------
    def _send_soon(self, message: Message, topic: str) -> None:
        """Send now if connected; otherwise the next connection subscribes every topic."""
        ws = self._ws
        if ws is not None:
            asyncio.get_running_loop().create_task(self._send(ws, message))

    async def _send(self, ws: Any, message: Message) -> None:
        with contextlib.suppress(Exception):
            await ws.send(json.dumps(message))

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with websockets.connect(self.url, max_size=MAX_MESSAGE) as ws:
                    self._ws = ws
                    self.connects += 1
                    attempt = 0
                    for topic in sorted(self.topics):
                        await ws.send(json.dumps({"op": "subscribe", "topic": topic}))
                    self.connected.set()
                    async for raw in ws:
                        self._dispatch(ws, json.loads(raw))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("market stream %s: %s; reconnecting", self.url, exc)
            finally:
                self._ws = None
                self.connected.clear()
                for book in self._books.values():
                    book.unsync()
            if self._closed:
                return
            delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
            attempt += 1
            await asyncio.sleep(random.uniform(0, delay))  # full jitter

    def _dispatch(self, ws: Any, message: Message) -> None:
        topic = message.get("topic")
        if message.get("type") == "error":
            log.warning("market stream: %s", message)
            if topic is None:
                return
        for subscription in self._subscriptions.get(topic or "", ()):
            subscription.put(message)
        if topic is None or not topic.startswith("depth:"):
            return
        book = self._books.get(topic[len("depth:") :])
        if book is None:
            return
        kind, seq = message.get("type"), message.get("seq")
        if kind == "snapshot" and isinstance(seq, int):
            book.on_snapshot(seq, message.get("data") or {})
        elif kind == "update" and isinstance(seq, int) and not book.on_update(seq, message["data"]):
            log.info(
                "depth %s: gap after seq %s (got %s); re-subscribing", book.market, book.seq, seq
            )
            asyncio.get_running_loop().create_task(self._resubscribe(ws, topic))

    async def _resubscribe(self, ws: Any, topic: str) -> None:
        await self._send(ws, {"op": "unsubscribe", "topic": topic})
        await self._send(ws, {"op": "subscribe", "topic": topic})
