"""The process's feeds by canonical topic: created with their first subscriber, closed
with their last (their hub channels dropped, their worker stopped).

The :class:`MarkWatcher` backs up the ``ticker:`` publications for ``pnl:`` and ``ticker:``:
a mark price can also change without one (``POST /v1/admin/oracle`` writes it directly), so
once a second it reads the marks the open state feeds depend on and re-reads those that moved.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import keys
from common.markets import MarketSet
from services.broadcaster import snapshots
from services.broadcaster.connection import Flusher, Subscription
from services.broadcaster.feeds import (
    EventFeed,
    Feed,
    OrderChanges,
    PnlFeed,
    Reader,
    SeqFeed,
    StateFeed,
    TickerFeed,
)
from services.broadcaster.hub import Hub
from services.broadcaster.metrics import Metrics
from services.broadcaster.topics import Kind, Topic

log = logging.getLogger(__name__)

TICKER_MIN_INTERVAL_S = 0.1  # ticker re-reads on trades are coalesced to at most 10 a second
MARK_POLL_S = 1.0


class Registry:
    def __init__(
        self, client: Any, hub: Hub, markets: MarketSet, metrics: Metrics, flusher: Flusher
    ) -> None:
        self.client = client
        self.hub = hub
        self.markets = markets
        self.metrics = metrics
        self.flusher = flusher
        self.feeds: dict[Topic, Feed] = {}
        self.derivatives = [s for s, m in markets.markets.items() if m.product.is_derivative]
        self.order_changes = OrderChanges(hub, list(markets.markets))

    async def subscribe(self, subscription: Subscription) -> None:
        """Join the topic's feed; returns once the snapshot is queued for the client."""
        topic = subscription.topic
        feed = self.feeds.get(topic)
        if feed is None:
            feed = self.feeds[topic] = self._create(topic)
        self.metrics.subscriptions[topic.kind].inc()
        try:
            await feed.subscribe(subscription)
        except BaseException:
            self.unsubscribe(subscription)
            raise

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.removed:
            return
        topic = subscription.topic
        feed = self.feeds.get(topic)
        subscription.removed = True
        self.metrics.subscriptions[topic.kind].dec()
        if feed is None:
            return
        feed.remove(subscription)
        if feed.empty:
            del self.feeds[topic]
            feed.close()

    def _create(self, topic: Topic) -> Feed:
        feed = self._build(topic)
        feed.reader = _retrying(feed.reader)
        return feed

    def _build(self, topic: Topic) -> Feed:
        client, markets, name = self.client, self.markets, topic.name
        if topic.kind is Kind.DEPTH:
            return SeqFeed(
                topic, self.hub, lambda: snapshots.depth_snapshot(client, name), self.flusher
            )
        if topic.kind is Kind.TRADE:
            return SeqFeed(
                topic, self.hub, lambda: snapshots.trade_snapshot(client, name), self.flusher
            )
        if topic.kind is Kind.ORDERS:
            return EventFeed(
                topic,
                self.hub,
                lambda: snapshots.orders_snapshot(client, markets, name),
                self.order_changes,
            )
        if topic.kind is Kind.TICKER:
            # The oracle publishes the ticker; a trade changes it too (last, 24 h figures).
            return TickerFeed(
                topic,
                self.hub,
                lambda: snapshots.ticker_snapshot(client, markets.markets[name]),
                TICKER_MIN_INTERVAL_S,
            )
        return PnlFeed(
            topic,
            self.hub,
            self.derivatives,
            lambda: snapshots.pnl_snapshot(client, markets, name),
        )

    def state_feeds(self) -> list[StateFeed]:
        return [feed for feed in self.feeds.values() if isinstance(feed, StateFeed)]


def _retrying(reader: Reader) -> Reader:
    """A snapshot reader that tries once more after a connection error: the first command on
    a pooled connection that Redis dropped (a restart) fails, the next one reconnects."""

    async def read() -> tuple[int, Any]:
        try:
            return await reader()
        except (RedisConnectionError, RedisTimeoutError):
            await asyncio.sleep(0.1)
            return await reader()

    return read


class MarkWatcher:
    """Re-reads a ``pnl:`` or ``ticker:`` state whose mark price moved without a publication."""

    def __init__(self, client: Any, registry: Registry, interval_s: float = MARK_POLL_S) -> None:
        self.client = client
        self.registry = registry
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("broadcaster: reading mark prices failed")

    async def check(self) -> None:
        feeds = [feed for feed in self.registry.state_feeds() if feed.marks]
        markets = sorted({market for feed in feeds for market in feed.marks})
        if not markets:
            return
        pipe = self.client.pipeline(transaction=False)
        for market in markets:
            pipe.hget(keys.market_prices(market), "mark")
        current = {
            market: int(value)
            for market, value in zip(markets, await pipe.execute(), strict=True)
            if value not in (None, "")
        }
        for feed in feeds:
            if any(m in current and current[m] != mark for m, mark in feed.marks.items()):
                feed.marks.update({m: current[m] for m in feed.marks if m in current})
                feed.trigger()
