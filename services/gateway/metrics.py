"""Prometheus metrics of the gateway, served at ``/metrics``.

Requests are counted by method, route *template* (``/v1/orders/{user_id}/{client_order_id}``,
never the raw path, so the label set stays small) and status; latency is a histogram by route;
orders are counted as accepted or rejected by the contract's error code. The settler's HTTP
oracle keeps its health in Redis (common/oracle_health.py); ``/metrics`` adds it, read at each
scrape, so every gateway shows the same figures (aggregate them with ``max``, not ``sum``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from common import keys, oracle_health

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "dex_gateway_requests_total",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "dex_gateway_request_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
ORDERS = Counter(
    "dex_gateway_orders_total",
    "Orders by outcome: accepted, or rejected with its error code",
    ["outcome", "code"],
    registry=REGISTRY,
)

_request_children: dict[tuple[str, str, int], object] = {}
_latency_children: dict[str, object] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    counter = _request_children.get(key)
    if counter is None:
        counter = REQUESTS.labels(method, route, str(status))
        _request_children[key] = counter
    counter.inc()  # type: ignore[attr-defined]
    histogram = _latency_children.get(route)
    if histogram is None:
        histogram = LATENCY.labels(route)
        _latency_children[route] = histogram
    histogram.observe(seconds)  # type: ignore[attr-defined]


_accepted = ORDERS.labels("accepted", "")
_rejected: dict[str, object] = {}


def order_accepted() -> None:
    _accepted.inc()


def order_rejected(code: str) -> None:
    counter = _rejected.get(code)
    if counter is None:
        counter = _rejected[code] = ORDERS.labels("rejected", code)
    counter.inc()  # type: ignore[attr-defined]


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class _Reading:
    """A collector of metric families read once, for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def oracle_families(raw: Mapping[str, str]) -> list[Metric]:
    """The HTTP oracle's health hash as metric families (none before an HTTP source ran)."""
    health = oracle_health.parse(raw)
    if health is None:
        return []
    ignored = CounterMetricFamily(
        "dex_oracle_ignored",
        "Values from the HTTP oracle source ignored, by reason and market",
        labels=["reason", "market"],
    )
    for (reason, market), count in sorted(health.ignored.items()):
        ignored.add_metric([reason, market], count)
    failures = CounterMetricFamily(
        "dex_oracle_source_failures",
        "Fetches of the HTTP oracle source that gave no prices, by reason",
        labels=["reason"],
    )
    for reason, count in sorted(health.failures.items()):
        failures.add_metric([reason], count)
    streak = GaugeMetricFamily(
        "dex_oracle_consecutive_failures",
        "Fetches of the HTTP oracle source that gave no prices since the last that did",
        value=health.consecutive_failures,
    )
    families: list[Metric] = [ignored, failures, streak]
    for name, doc, stamp in (
        ("success", "gave prices", health.last_success_ms),
        ("failure", "gave no prices", health.last_failure_ms),
    ):
        if stamp is not None:
            families.append(
                GaugeMetricFamily(
                    f"dex_oracle_last_{name}_timestamp_seconds",
                    f"When a fetch of the HTTP oracle source last {doc} (Unix time)",
                    value=stamp / 1000,
                )
            )
    return families


async def render_settler(redis: Any) -> bytes:
    """The settler's metrics kept in Redis; empty if Redis does not answer (logged)."""
    try:
        raw = await redis.hgetall(keys.oracle_health())
    except Exception as exc:
        log.warning("metrics: cannot read the oracle health from Redis: %s", exc)
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reading(oracle_families(raw)))
    return generate_latest(registry)
