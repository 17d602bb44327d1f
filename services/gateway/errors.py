"""API errors in the contract's shape: ``{"error": {"code", "message"}}`` (API.md §5)."""

from __future__ import annotations

from typing import Any

import orjson
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

STATUS_BY_CODE: dict[str, int] = {
    "BODY_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "INVALID_REQUEST": 400,
    "INVALID_USER": 400,
    "UNKNOWN_MARKET": 400,
    "UNKNOWN_ASSET": 400,
    "INVALID_PRICE": 400,
    "INVALID_QTY": 400,
    "INVALID_ORDER": 400,
    "STALE_TS": 400,
    "INVALID_SIGNATURE": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "DUPLICATE": 409,
    "ORDER_CLOSED": 409,
    "INSUFFICIENT_BALANCE": 422,
    "INSUFFICIENT_MARGIN": 422,
    "MARKET_HALTED": 422,
    "MARKET_CLOSED": 422,
    "TOO_MANY_ORDERS": 422,
    "LIMIT_EXCEEDED": 422,
    "UNAVAILABLE": 503,
    "OVERLOADED": 503,
}


class ApiError(Exception):
    """A refusal with a contract code; the status follows from the code unless given."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE[code]
        self.headers: dict[str, str] = {}


class JsonResponse(Response):
    """JSON rendered by orjson (FastAPI's ORJSONResponse is deprecated; this is the same)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(code: str, message: str, status: int, **headers: str) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the contract's error shape; never FastAPI's 422, never a 500."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
        return error_response(exc.code, exc.message, exc.status, **exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JsonResponse:
        return error_response("INVALID_REQUEST", _describe(exc.errors()), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = "NOT_FOUND" if exc.status_code == 404 else "INVALID_REQUEST"
        status = exc.status_code if exc.status_code in (404, 405) else 400
        return error_response(code, str(exc.detail), status)

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(_: Request, exc: Exception) -> JsonResponse:
        return error_response("UNAVAILABLE", f"the exchange's store is unreachable: {exc}", 503)

    @app.exception_handler(redis.exceptions.OutOfMemoryError)
    async def _redis_full(_: Request, exc: Exception) -> JsonResponse:
        # Redis refused a write whole (a script is refused before its first write): retry later.
        return error_response("OVERLOADED", f"the exchange's store is full: {exc}", 503)

    @app.exception_handler(redis.TimeoutError)
    async def _redis_slow(_: Request, exc: Exception) -> JsonResponse:
        return error_response("UNAVAILABLE", f"the exchange's store timed out: {exc}", 503)


def _describe(errors: Any) -> str:
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
