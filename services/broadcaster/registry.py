"""The process's feeds by canonical topic: created with their first subscriber, closed
with their last (their hub channels dropped, their worker stopped)."""

from __future__ import annotations

from typing import Any

from common.markets import MarketSet
from services.broadcaster import snapshots
from services.broadcaster.feeds import EventFeed, Feed, PnlFeed, SeqFeed, StateFeed, Subscription
from services.broadcaster.hub import Hub
from services.broadcaster.metrics import Metrics
from services.broadcaster.topics import Kind, Topic

TICKER_MIN_INTERVAL_S = 0.1  # ticker re-reads on trades are coalesced to at most 10 a second


class Registry:
    def __init__(self, client: Any, hub: Hub, markets: MarketSet, metrics: Metrics) -> None:
        self.client = client
        self.hub = hub
        self.markets = markets
        self.metrics = metrics
        self.feeds: dict[Topic, Feed] = {}
        self.derivatives = [s for s, m in markets.markets.items() if m.product.is_derivative]

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
        client, markets, name = self.client, self.markets, topic.name
        if topic.kind is Kind.DEPTH:
            return SeqFeed(topic, self.hub, lambda: snapshots.depth_snapshot(client, name))
        if topic.kind is Kind.TRADE:
            return SeqFeed(topic, self.hub, lambda: snapshots.trade_snapshot(client, name))
        if topic.kind is Kind.ORDERS:
            return EventFeed(
                topic, self.hub, lambda: snapshots.orders_snapshot(client, markets, name)
            )
        if topic.kind is Kind.TICKER:
            # The oracle publishes the ticker; a trade changes it too (last, 24 h figures).
            return StateFeed(
                topic,
                self.hub,
                [topic.canonical, f"trade:{name}"],
                lambda: snapshots.ticker_snapshot(client, markets, name),
                min_interval_s=TICKER_MIN_INTERVAL_S,
            )
        return PnlFeed(
            topic,
            self.hub,
            self.derivatives,
            lambda: snapshots.pnl_snapshot(client, markets, name),
        )

    def resync_all(self) -> list[Subscription]:
        """Every live subscription (after a lost pub/sub connection, all must resync)."""
        return [member for feed in self.feeds.values() for member in feed.members]


__all__ = ["Registry", "StateFeed"]
