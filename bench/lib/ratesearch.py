"""The highest order rate the exchange holds: step up, then bisect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

P99_GOAL_MS = 50.0


def held(result: dict[str, Any]) -> bool:
    """A rate is held when the exchange accepted it (within 5 %: orders waiting in the client
    mean the gateway fell behind), refused nothing, and neither backlog grew past a second's
    work."""
    grown = result["backlog_end_of_send"]
    kept_up = result["orders_accepted_per_s"] >= 0.95 * result["target_rate"]
    return (
        kept_up
        and not result["rejected"]
        and all(v <= result["target_rate"] for v in grown.values())
    )


def find_max(run_once: Callable[[float], dict[str, Any]], refine: int) -> dict[str, Any]:
    """Step the rate ×1.5 from 500/s until one is not held, then bisect ``refine`` times
    between the last held and the first missed (to 25/s). Reports the highest rate held and
    the highest held with p99 send→trade ≤ 50 ms (the goal's figure)."""
    results: dict[float, dict[str, Any]] = {}
    rate, best = 500.0, 0.0  # 0: no rate held
    while held(results.setdefault(rate, run_once(rate))):
        best, rate = rate, rate * 1.5
    missed = rate
    for _ in range(refine if best else 0):
        middle = float(round((best + missed) / 2 / 25) * 25)
        if middle in (best, missed):
            break
        results[middle] = run_once(middle)
        if held(results[middle]):
            best = middle
        else:
            missed = middle
    within_goal = [
        rate
        for rate, result in results.items()
        if held(result) and (result["accept_to_trade_ms"]["p99"] or float("inf")) <= P99_GOAL_MS
    ]
    return {
        "max_rate_held": best or None,
        "max_rate_held_with_p99_within_50ms": max(within_goal, default=None),
    }
