"""API errors in the contract's shape: ``{"error": {"code", "message"}}`` (API.md §5).

:class:`ErrorCode` is the one list of codes, each beside its HTTP status; an :class:`ApiError`
takes a member, so a misspelt code is a type error, not a 500 at the moment it is raised.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorCode(StrEnum):
    """Every error code of the contract (API.md §5) with the HTTP status it answers with.

    A member is its wire string (``ErrorCode.STALE_TS == "STALE_TS"``); ``.status`` is its
    status. Within one status the contract's table lists the codes in the order they are
    checked; this list follows it.
    """

    status: int

    def __new__(cls, value: str, status: int) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    BODY_TOO_LARGE = "BODY_TOO_LARGE", 413
    RATE_LIMITED = "RATE_LIMITED", 429
    INVALID_REQUEST = "INVALID_REQUEST", 400
    INVALID_USER = "INVALID_USER", 400
    UNKNOWN_MARKET = "UNKNOWN_MARKET", 400
    UNKNOWN_ASSET = "UNKNOWN_ASSET", 400
    INVALID_PRICE = "INVALID_PRICE", 400
    INVALID_QTY = "INVALID_QTY", 400
    INVALID_ORDER = "INVALID_ORDER", 400
    STALE_TS = "STALE_TS", 400
    INVALID_SIGNATURE = "INVALID_SIGNATURE", 401
    FORBIDDEN = "FORBIDDEN", 403
    NOT_FOUND = "NOT_FOUND", 404
    DUPLICATE = "DUPLICATE", 409
    ORDER_CLOSED = "ORDER_CLOSED", 409
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE", 422
    INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN", 422
    MARKET_HALTED = "MARKET_HALTED", 422
    MARKET_CLOSED = "MARKET_CLOSED", 422
    TOO_MANY_ORDERS = "TOO_MANY_ORDERS", 422
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED", 422
    UNAVAILABLE = "UNAVAILABLE", 503
    OVERLOADED = "OVERLOADED", 503
    INTERNAL = "INTERNAL", 500
    # Amend (docs/api.md "Amend"): what the book found, each answered after ORDER_CLOSED.
    FILLED_CHANGED = "FILLED_CHANGED", 409
    QTY_NOT_ABOVE_FILLED = "QTY_NOT_ABOVE_FILLED", 409
    POST_ONLY_WOULD_CROSS = "POST_ONLY_WOULD_CROSS", 409
    # Market states (docs/api.md "Market states"): what the market's status refuses, each
    # answered where MARKET_HALTED is.
    MARKET_CANCEL_ONLY = "MARKET_CANCEL_ONLY", 422
    MARKET_POST_ONLY = "MARKET_POST_ONLY", 422
    MARKET_REDUCE_ONLY = "MARKET_REDUCE_ONLY", 422


class ApiError(Exception):
    """A refusal with a contract code; the status follows from the code unless given (a
    market named in the path answers ``UNKNOWN_MARKET`` with 404).
    """

    def __init__(self, code: ErrorCode, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or self.code.status
        self.headers: dict[str, str] = {}


class JsonResponse(Response):
    """JSON rendered by orjson (FastAPI's ORJSONResponse is deprecated; this is the same)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(
    code: ErrorCode, message: str, status: int | None = None, **headers: str
) -> JsonResponse:
    """The contract's error body with ``code``'s status (or ``status`` when given)."""
    return JsonResponse(
        {"error": {"code": code, "message": message}},
        status_code=status or code.status,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the contract's error shape; never FastAPI's 422, never a 500."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
        return error_response(exc.code, exc.message, exc.status, **exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JsonResponse:
        return error_response(ErrorCode.INVALID_REQUEST, _describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JsonResponse:
        if exc.status_code == 404:
            return error_response(ErrorCode.NOT_FOUND, str(exc.detail))
        status = 405 if exc.status_code == 405 else 400
        return error_response(ErrorCode.INVALID_REQUEST, str(exc.detail), status)

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(_: Request, exc: Exception) -> JsonResponse:
        return error_response(ErrorCode.UNAVAILABLE, f"the exchange's store is unreachable: {exc}")

    @app.exception_handler(redis.exceptions.OutOfMemoryError)
    async def _redis_full(_: Request, exc: Exception) -> JsonResponse:
        # Redis refused a write whole (a script is refused before its first write): retry later.
        return error_response(ErrorCode.OVERLOADED, f"the exchange's store is full: {exc}")

    @app.exception_handler(redis.TimeoutError)
    async def _redis_slow(_: Request, exc: Exception) -> JsonResponse:
        return error_response(ErrorCode.UNAVAILABLE, f"the exchange's store timed out: {exc}")


def _describe(errors: Any) -> str:
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
