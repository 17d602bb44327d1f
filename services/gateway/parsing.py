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
