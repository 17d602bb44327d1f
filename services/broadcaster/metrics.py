"""Prometheus metrics of one broadcaster process (served on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.broadcaster.topics import Kind


class Metrics:
    """Connections, subscriptions per topic kind, messages sent, disconnects by cause."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "dex_broadcaster_connections", "Open WebSocket connections", registry=self.registry
        )
        subscriptions = Gauge(
            "dex_broadcaster_subscriptions",
            "Active subscriptions by topic kind",
            ["kind"],
            registry=self.registry,
        )
        self.subscriptions = {kind: subscriptions.labels(kind.value) for kind in Kind}
        self.messages_sent = Counter(
            "dex_broadcaster_messages_sent",
            "Messages written to WebSocket clients (snapshots, updates, errors, pongs)",
            registry=self.registry,
        )
        self.slow_disconnects = Counter(
            "dex_broadcaster_slow_client_disconnects",
            "Clients closed with 1013 because their send queue filled",
            registry=self.registry,
        )
        self.idle_disconnects = Counter(
            "dex_broadcaster_idle_disconnects",
            "Connections closed for saying and subscribing nothing",
            registry=self.registry,
        )
        self.flood_disconnects = Counter(
            "dex_broadcaster_flood_disconnects",
            "Connections closed with 1008 for sending more than 50 messages in one second",
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "dex_broadcaster_refused_connections",
            "Connections closed with 1008 at once: their address held the most it may",
            registry=self.registry,
        )
        self.handler_errors = Counter(
            "dex_broadcaster_handler_errors",
            "Client messages whose handling raised (connection closed with 1011; a bug)",
            registry=self.registry,
        )
        self._publications = Counter(
            "dex_broadcaster_publications_received",
            "Redis publications received by channel kind (depth, trade, ticker, orders, acct)",
            ["kind"],
            registry=self.registry,
        )
        # Counted in plain dicts and ints on the hot path (a prometheus_client counter takes a
        # lock per increment), folded into the counters when they are rendered.
        self._publications_by_topic: dict[str, int] = {}
        self._sent = 0
        self.pubsub_resets = Counter(
            "dex_broadcaster_pubsub_resets",
            "Times the Redis pub/sub connection was lost and every client was asked to resync",
            registry=self.registry,
        )

    def count_publication(self, topic: str) -> None:
        counts = self._publications_by_topic
        counts[topic] = counts.get(topic, 0) + 1

    def count_sent(self, messages: int) -> None:
        """``messages`` written to clients (``messages_sent``, as of the next render)."""
        self._sent += messages

    def render(self) -> bytes:
        self._fold()
        return generate_latest(self.registry)

    def _fold(self) -> None:
        counts, self._publications_by_topic = self._publications_by_topic, {}
        kinds: dict[str, int] = {}
        for topic, count in counts.items():
            kind = topic.partition(":")[0]
            kinds[kind] = kinds.get(kind, 0) + count
        for kind, count in kinds.items():
            self._publications.labels(kind).inc(count)
        sent, self._sent = self._sent, 0
        if sent:
            self.messages_sent.inc(sent)
