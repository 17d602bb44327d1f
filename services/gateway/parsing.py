"""Strict parsing of request bodies: exact field sets, integers as numbers or digit strings.

Everything here raises :class:`ApiError` with ``INVALID_REQUEST`` (or the field's own code), so
a malformed body is a clear 400, never FastAPI's 422 and never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from services.gateway.errors import ApiError

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
DIGITS = re.compile(r"^[0-9]{1,78}$")
UINT256_LIMIT = 2**256
MAX_BODY_BYTES = 64 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError("INVALID_REQUEST", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("INVALID_REQUEST", "body must be a JSON object")
    return body


def require_fields(
    body: Mapping[str, Any], required: set[str], optional: frozenset = frozenset()
) -> None:
    missing = sorted(required - body.keys())
    if missing:
        raise ApiError("INVALID_REQUEST", f"missing field(s): {', '.join(missing)}")
    extra = sorted(body.keys() - required - optional)
    if extra:
        raise ApiError("INVALID_REQUEST", f"unexpected field(s): {', '.join(extra)}")


def uint(body: Mapping[str, Any], field: str, code: str = "INVALID_REQUEST") -> int:
    """A uint256 given as a JSON integer or a string of decimal digits."""
    value = body[field]
    if isinstance(value, bool):
        raise ApiError(code, f"{field} must be an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and DIGITS.match(value):
        number = int(value)
    else:
        raise ApiError(code, f"{field} must be a non-negative integer or digit string")
    if number < 0 or number >= UINT256_LIMIT:
        raise ApiError(code, f"{field} is outside the uint256 range")
    return number


def string(body: Mapping[str, Any], field: str) -> str:
    value = body[field]
    if not isinstance(value, str):
        raise ApiError("INVALID_REQUEST", f"{field} must be a string")
    return value


def boolean(body: Mapping[str, Any], field: str) -> bool:
    value = body[field]
    if not isinstance(value, bool):
        raise ApiError("INVALID_REQUEST", f"{field} must be true or false")
    return value


def user_id(value: str) -> str:
    """The lower-case form of an address; 400 ``INVALID_USER`` otherwise."""
    if not ADDRESS.match(value):
        raise ApiError(
            "INVALID_USER", f"userId must be a 0x-prefixed 20-byte address, got {value!r}"
        )
    return value.lower()


def signature(body: Mapping[str, Any]) -> str:
    value = body.get("sig")
    if not isinstance(value, str) or not SIGNATURE.match(value):
        raise ApiError("INVALID_REQUEST", "sig must be 0x followed by 130 hex digits")
    return value


async def read_body(request: Any) -> bytes:
    """The request body, refused with 413 once it passes 64 KiB (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError("BODY_TOO_LARGE", f"the body is {declared} bytes; the limit is 65536")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError("BODY_TOO_LARGE", "the body passes the limit of 65536 bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def limit(raw: str | None) -> int:
    """``limit=N``: default 100, capped at 1000; below 1 or not a number is a 400."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.lstrip("-").isdigit():
        raise ApiError("INVALID_REQUEST", f"limit must be an integer, got {raw!r}")
    value = int(raw)
    if value < 1:
        raise ApiError("INVALID_REQUEST", f"limit must be at least 1, got {value}")
    return min(value, MAX_LIMIT)


def flag(raw: str | None, name: str) -> bool:
    """A query flag: absent, ``0``/``false`` = off; ``1``/``true`` = on."""
    if raw is None or raw.lower() in ("", "0", "false"):
        return False
    if raw.lower() in ("1", "true"):
        return True
    raise ApiError("INVALID_REQUEST", f"{name} must be 1 or 0, got {raw!r}")


def ts_in_window(ts: int, max_age_ms: int, now_ms: int) -> None:
    """Refuse a signed ``ts`` further than the window from the server clock (STALE_TS)."""
    if abs(ts - now_ms) > max_age_ms:
        raise ApiError(
            "STALE_TS",
            f"ts {ts} is more than {max_age_ms} ms from the server clock {now_ms}",
        )
