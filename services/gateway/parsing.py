"""Strict reading of requests: the body (64 KiB cap, JSON with integers of any size, one JSON
object), query values (``limit``, flags), user ids in paths and the ``ts`` window.

Everything here raises :class:`ApiError` (``INVALID_REQUEST`` unless the value has its own
code), so malformed input is a clear 400, never FastAPI's 422 and never a 500. The fields of
each body are declared in ``shapes``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from services.gateway.errors import ApiError, ErrorCode

# Every pattern is applied with ``fullmatch``: ``re.match`` with ``$`` would accept a trailing
# newline ("abc\n"), and ``[0-9]`` (not ``\d`` or ``str.isdigit``) admits ASCII digits only.
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
DEPOSIT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
DIGITS = re.compile(r"[0-9]{1,78}")
SIGNED_DIGITS = re.compile(r"-?[0-9]+")
UINT256_LIMIT = 2**256
MAX_BODY_BYTES = 64 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def loads(raw: bytes) -> Any:
    """JSON with integers of any size: orjson, or the standard parser when orjson met an
    integer past 64 bits (it refuses some and turns others into floats; a uint256 field may
    carry one). NaN and Infinity, a key twice in one object, and a lone surrogate (``\\ud800``,
    which no UTF-8 text can hold) are refused with 400 INVALID_REQUEST."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _slow_loads(raw, exc)
    if isinstance(body, dict):
        # Each key occurrence, at any depth, owns one ':' outside strings: as many colons in
        # the text as distinct keys in every object means no key came twice at any depth.
        try:
            keys = _keys_if_no_float(body)
        except RecursionError:
            keys = None
        if keys is None or raw.count(b":") != keys:
            return _slow_loads(raw, None)
    return body


def _keys_if_no_float(value: Any) -> int | None:
    """The keys of every object in ``value``, or None if it holds a float anywhere."""
    is_object = type(value) is dict
    count = len(value) if is_object else 0
    for item in value.values() if is_object else value:
        if type(item) is dict or type(item) is list:
            inner = _keys_if_no_float(item)
            if inner is None:
                return None
            count += inner
        elif type(item) is float:
            return None
    return count


def _slow_loads(raw: bytes, first_error: Exception | None) -> Any:
    if first_error is not None and "depth" in str(first_error):
        # Never handed to the json module: where a dependency has raised the recursion limit
        # (py_ecc, under eth-account, sets 100,000) its C scanner overflows the stack instead.
        raise ApiError(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {first_error}")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        reason = exc if first_error is None or isinstance(exc, _Refused) else first_error
        raise ApiError(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {reason}") from None
    _refuse_surrogates(body)
    return body


class _Refused(ValueError):
    """Valid to the standard parser, refused by this API."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"key {key!r} appears more than once in one object")
        result[key] = value
    return result


def _refuse_surrogates(body: Any) -> None:
    """400 for any string (key or value, at any depth) holding a lone UTF-16 surrogate."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            texts: Any = (value,)
        elif isinstance(value, dict):
            texts = value.keys()
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
            continue
        else:
            continue
        for text in texts:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ApiError(
                        ErrorCode.INVALID_REQUEST,
                        "body is not valid JSON: a string holds a lone UTF-16 surrogate",
                    ) from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    body = loads(raw)
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_REQUEST, "body must be a JSON object")
    return body


def user_id(value: str) -> str:
    """The lower-case form of an address; 400 ``INVALID_USER`` otherwise."""
    if not ADDRESS.fullmatch(value):
        raise ApiError(
            ErrorCode.INVALID_USER, f"userId must be a 0x-prefixed 20-byte address, got {value!r}"
        )
    return value.lower()


async def read_body(request: Any) -> bytes:
    """The request body, refused with 413 once it passes 64 KiB (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and _declared_too_large(declared):
        raise ApiError(
            ErrorCode.BODY_TOO_LARGE, f"the body is {declared} bytes; the limit is 65536"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(ErrorCode.BODY_TOO_LARGE, "the body passes the limit of 65536 bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _declared_too_large(declared: str) -> bool:
    """A ``Content-Length`` past the cap; one that is not ASCII digits is left to the read."""
    digits = declared.strip()
    return bool(DIGITS.fullmatch(digits)) and int(digits) > MAX_BODY_BYTES


def limit(raw: str | None) -> int:
    """``limit=N``: default 100, capped at 1000; below 1 or not an ASCII integer is a 400."""
    if raw is None:
        return DEFAULT_LIMIT
    if not SIGNED_DIGITS.fullmatch(raw):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"limit must be an integer, got {raw!r}")
    magnitude = raw.lstrip("-").lstrip("0")
    if raw.startswith("-") or not magnitude:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"limit must be at least 1, got {raw!r}")
    # More digits than the cap has are past the cap (and int() refuses past 4300 digits).
    return MAX_LIMIT if len(magnitude) > len(str(MAX_LIMIT)) else min(int(magnitude), MAX_LIMIT)


def flag(raw: str | None, name: str) -> bool:
    """A query flag: absent, ``0``/``false`` = off; ``1``/``true`` = on."""
    if raw is None or raw.lower() in ("", "0", "false"):
        return False
    if raw.lower() in ("1", "true"):
        return True
    raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be 1 or 0, got {raw!r}")


def ts_in_window(ts: int, max_age_ms: int, now_ms: int) -> None:
    """Refuse a signed ``ts`` further than the window from the server clock (STALE_TS)."""
    if abs(ts - now_ms) > max_age_ms:
        raise ApiError(
            ErrorCode.STALE_TS,
            f"ts {ts} is more than {max_age_ms} ms from the server clock {now_ms}",
        )
