"""Prometheus metrics of the gateway, served at ``/metrics``.

Requests are counted by method, route *template* (``/v1/orders/{user_id}/{client_order_id}``,
never the raw path, so the label set stays small) and status; latency is a histogram by route;
orders are counted as accepted or rejected by the contract's error code.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

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


def order_accepted() -> None:
    ORDERS.labels("accepted", "").inc()


def order_rejected(code: str) -> None:
    ORDERS.labels("rejected", code).inc()


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
