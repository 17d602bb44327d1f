"""The HTTP oracle source's health in Redis: written by the settler, read by ``/metrics``.

``dex.oracle`` (services/settler/oracle.py) keeps one hash, ``keys.oracle_health()``, while
``DEX_ORACLE_SOURCE`` is an ``http(s)://`` URL; the gateway's ``/metrics`` exposes it, so the
numbers are the same whichever worker fetched and survive worker restarts. Fields::

    ignored:<reason>:<market>   values ignored, by reason (market empty for a whole body)
    failures:<reason>           fetches that gave no prices, by reason
    consecutiveFailures         fetches that gave no prices since the last one that did
    lastSuccessMs               epoch ms of the last fetch that gave prices
    lastFailureMs               epoch ms of the last fetch that gave none
    lastFailure                 what that fetch received and what was expected (text)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

INVALID_PRICE = "invalid_price"
"""A price that is not a positive integer below 2^53 (JSON integer or plain decimal digits)."""
INVALID_ENTRY = "invalid_entry"
"""An entry of ``markets`` that is not an object with a string ``symbol``, or a symbol twice."""
MOVE_TOO_LARGE = "move_too_large"
"""A price further than ``DEX_ORACLE_MAX_MOVE_BPS`` from the market's last accepted index."""
BODY_TOO_LARGE = "body_too_large"
"""A response body over the size cap (1 MiB): not read past the cap, nothing in it used."""
IGNORED_REASONS = (INVALID_PRICE, INVALID_ENTRY, MOVE_TOO_LARGE, BODY_TOO_LARGE)

UNREACHABLE = "unreachable"
"""No answer: connection refused, name not resolved, timeout, connection cut."""
HTTP_STATUS = "http_status"
"""An answer with a status other than 200."""
INVALID_JSON = "invalid_json"
"""A body that is not JSON (or not UTF-8, or nested past the parser's depth)."""
INVALID_SHAPE = "invalid_shape"
"""JSON that is not an object with a list ``markets``."""
FAILURE_REASONS = (UNREACHABLE, HTTP_STATUS, BODY_TOO_LARGE, INVALID_JSON, INVALID_SHAPE)

CONSECUTIVE_FAILURES = "consecutiveFailures"
LAST_SUCCESS_MS = "lastSuccessMs"
LAST_FAILURE_MS = "lastFailureMs"
LAST_FAILURE = "lastFailure"


def ignored_field(reason: str, market: str = "") -> str:
    return f"ignored:{reason}:{market}"


def failure_field(reason: str) -> str:
    return f"failures:{reason}"


@dataclass(frozen=True)
class OracleHealth:
    """One reading of the hash."""

    ignored: dict[tuple[str, str], int]
    """``(reason, market) -> count``."""
    failures: dict[str, int]
    """``reason -> count``, every reason of ``FAILURE_REASONS`` present (0 if none yet)."""
    consecutive_failures: int
    last_success_ms: int | None
    last_failure_ms: int | None


def parse(raw: Mapping[str, str]) -> OracleHealth | None:
    """The hash as read by HGETALL; ``None`` when it is empty (no HTTP source has run)."""
    if not raw:
        return None
    ignored: dict[tuple[str, str], int] = {}
    failures = dict.fromkeys(FAILURE_REASONS, 0)
    for name, value in raw.items():
        kind, _, rest = name.partition(":")
        if kind == "ignored":
            reason, _, market = rest.partition(":")
            ignored[(reason, market)] = int(value)
        elif kind == "failures":
            failures[rest] = int(value)

    def stamp(field: str) -> int | None:
        value = raw.get(field)
        return int(value) if value else None

    return OracleHealth(
        ignored=ignored,
        failures=failures,
        consecutive_failures=int(raw.get(CONSECUTIVE_FAILURES) or 0),
        last_success_ms=stamp(LAST_SUCCESS_MS),
        last_failure_ms=stamp(LAST_FAILURE_MS),
    )
