"""Percentiles and summaries of latency samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The value below which ``fraction`` of ``values`` lie (nearest rank, 2 decimals)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """p50, p99 and the number of samples."""
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "samples": len(values),
    }


def histogram_percentile(histogram: list[int], fraction: float, bucket_us: int) -> float | None:
    """The upper edge (ms) of the bucket, ``bucket_us`` wide, that holds the ``fraction``
    point of ``histogram``."""
    total = sum(histogram)
    if total == 0:
        return None
    wanted = fraction * total
    running = 0
    for bucket, count in enumerate(histogram):
        running += count
        if running >= wanted:
            return (bucket + 1) * bucket_us / 1000
    return None
