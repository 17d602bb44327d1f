"""The outer ring of every request (a plain ASGI middleware, cheap on the hot path).

In order: a request id (``X-Request-ID`` echoed, or a new one), 413 for a declared body over
64 KiB, the per-IP rate limit for reads and for admin calls without the right token (writes
draw from the IP bucket in writes.py, and from the user's once the signature verifies), then
the route; afterwards the Prometheus
request metrics by route template and one JSON log line. Redis failures become 503
UNAVAILABLE and anything unforeseen a 500 in the contract's error shape.

A :class:`FastRoute` (``POST /v1/orders``) is answered here directly: the framework's
routing, dependency solving and exception layers cost more than the rest of an admission. Its
declaration is its only definition: app.add_fast_route derives from it the framework route
that documents it (and answers the path's other methods with 405)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
import redis

from services.gateway import admin, logs, metrics, ratelimit, shapes, writes
from services.gateway import schemas as s
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.parsing import MAX_BODY_BYTES

log = logging.getLogger("services.gateway.access")

Scope = MutableMapping[str, Any]


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


Handler = Callable[[Gateway, bytes, Scope], Awaitable[tuple[int, Any]]]
"""A fast route's work: (gateway, body, scope) → (status, JSON payload)."""


@dataclass(frozen=True, slots=True)
class FastRoute:
    """An endpoint the middleware answers itself, declared once: what serves it (``handler``)
    and what documents it (the rest, read by app.add_fast_route)."""

    method: str
    path: str
    name: str
    """The operation's name in the document (its operationId is made from it)."""
    handler: Handler
    body: tuple[shapes.Shape, ...]
    status_code: int
    responses: dict[int | str, Any]
    query: dict[str, str] = field(default_factory=dict)
    """Query parameter name → description (each an optional string)."""

    def openapi_extra(self) -> dict[str, Any]:
        """The operation's parameters and request body, for the OpenAPI document."""
        parameters = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
             "description": doc}
            for name, doc in self.query.items()
        ]  # fmt: skip
        return {"parameters": parameters, **shapes.openapi_body(*self.body)}


class GatewayMiddleware:
    def __init__(self, app: Any, gateway: Gateway, fast_only: bool = False) -> None:
        """``fast_only``: answer the fast routes and hand every other request to ``app``
        untouched (the server's outer copy; the app's own copy does the rest)."""
        self.app = app
        self.gateway = gateway
        self.fast_only = fast_only

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (
            self.fast_only and (scope["method"], scope["path"]) not in FAST_ROUTES
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        content_length = None
        authorization = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = _request_id(value)
            elif name == b"content-length":
                content_length = value
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        request_id = request_id or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        logs.REQUEST_ID.set(request_id)
        status_holder = [500]
        response_started = [False]
        request_id_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), request_id_header]
            await send(message)

        path = scope["path"]
        try:
            if content_length is not None and _too_large(content_length):
                raise ApiError(
                    ErrorCode.BODY_TOO_LARGE,
                    f"the body is {content_length.decode()} bytes; the limit is {MAX_BODY_BYTES}",
                )
            fast = FAST_ROUTES.get((scope["method"], path))
            if fast is not None:
                scope["route"] = fast
                await self._answer(fast, scope, receive, send_wrapper)
                return
            is_write = scope["method"] == "POST" and path in ratelimit.WRITE_PATHS
            if path.startswith(ratelimit.ADMIN_PREFIX):
                # A wrong or missing token costs the address a token, so none is guessed at
                # full speed; the operator's own calls are never limited.
                if not admin.authorized(self.gateway, authorization):
                    await ratelimit.check(self.gateway, client_ip(scope))
            elif not is_write and not ratelimit.exempt(path):
                await ratelimit.check(self.gateway, client_ip(scope))
            await self.app(scope, receive, send_wrapper)
        except ApiError as exc:
            await _send_error(send_wrapper, exc.code, exc.message, exc.headers, exc.status)
        except redis.exceptions.OutOfMemoryError as exc:
            if not response_started[0]:
                await _send_error(
                    send_wrapper, ErrorCode.OVERLOADED, f"the exchange's store is full: {exc}"
                )
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if not response_started[0]:
                await _send_error(
                    send_wrapper,
                    ErrorCode.UNAVAILABLE,
                    f"the exchange's store is unreachable: {exc}",
                )
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not response_started[0]:
                await _send_error(
                    send_wrapper, ErrorCode.INTERNAL, f"the gateway failed: {type(exc).__name__}"
                )
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            status = status_holder[0]
            metrics.observe_request(scope["method"], template, status, elapsed)
            if log.isEnabledFor(logging.INFO):
                logs.access(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": template,
                        "path": path,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        "client": client_ip(scope),
                    }
                )

    async def _answer(self, route: FastRoute, scope: Scope, receive: Any, send: Any) -> None:
        """A fast route without the framework: the body (413), then the route's handler."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(ErrorCode.BODY_TOO_LARGE, "the body passes the limit of 65536 bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        status, payload = await route.handler(self.gateway, b"".join(chunks), scope)
        body = orjson.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _place_order(gateway: Gateway, raw: bytes, scope: Scope) -> tuple[int, Any]:
    wait = None
    if scope.get("query_string"):
        values = parse_qs(scope["query_string"].decode("latin-1")).get("wait")
        wait = values[-1] if values else None
    return await writes.place_order(gateway, raw, client_ip(scope), wait)


PLACE_ORDER = FastRoute(
    method="POST",
    path="/v1/orders",
    name="post_order",
    handler=_place_order,
    body=(shapes.ORDER, shapes.ORDER_V2, shapes.ORDER_V3, shapes.ORDER_V4),
    status_code=202,
    responses={
        202: {"model": s.Accepted, "description": "accepted (with ?wait=1: the order)"},
        200: {"model": s.Order, "description": "with ?wait=1: the matched order"},
        **s.errors(400, 401, 409, 413, 422),
    },
    query={"wait": "1: wait up to 5 s for the matcher"},
)
FAST_ROUTES: dict[tuple[str, str], FastRoute] = {
    (route.method, route.path): route for route in (PLACE_ORDER,)
}


def _request_id(raw: bytes) -> str:
    """A client's ``X-Request-ID`` if it is 1-128 printable ASCII characters, else "" (a new
    one is made): it is echoed in a header and written in every log line of the request."""
    text = raw.decode("latin-1")
    return text if 0 < len(text) <= 128 and text.isascii() and text.isprintable() else ""


def _too_large(raw: bytes) -> bool:
    return not raw.isdigit() or int(raw) > MAX_BODY_BYTES


async def _send_error(
    send: Any,
    code: ErrorCode,
    message: str,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send(
        {"type": "http.response.start", "status": status or code.status, "headers": raw_headers}
    )
    await send({"type": "http.response.body", "body": body})
