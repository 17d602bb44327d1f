"""The outer ring of every request (a plain ASGI middleware, cheap on the hot path).

In order: a request id (``X-Request-ID`` echoed, or a new one), 413 for a declared body over
64 KiB, the per-IP rate limit for reads and for admin calls without the right token (writes
draw from the IP bucket in writes.py, and from the user's once the signature verifies), then
the route; afterwards the Prometheus
request metrics by route template and one JSON log line. Redis failures become 503
UNAVAILABLE and anything unforeseen a 500 in the contract's error shape.

``POST /v1/orders`` is answered here directly, with the same code as its route (writes.py):
the framework's routing, dependency solving and exception layers cost more than the rest of
an admission."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson
import redis

from services.gateway import admin, logs, metrics, ratelimit, writes
from services.gateway.context import Gateway
from services.gateway.errors import ApiError
from services.gateway.parsing import MAX_BODY_BYTES

log = logging.getLogger("services.gateway.access")

Scope = MutableMapping[str, Any]


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class GatewayMiddleware:
    def __init__(self, app: Any, gateway: Gateway, orders_only: bool = False) -> None:
        self.app = app
        self.gateway = gateway
        self.orders_only = orders_only

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (
            self.orders_only and (scope["path"] != ORDERS_PATH or scope["method"] != "POST")
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
                    "BODY_TOO_LARGE",
                    f"the body is {content_length.decode()} bytes; the limit is {MAX_BODY_BYTES}",
                )
            if path == ORDERS_PATH and scope["method"] == "POST":
                scope["route"] = ORDERS_ROUTE
                await self._place_order(scope, receive, send_wrapper)
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
            await _send_error(send_wrapper, exc.status, exc.code, exc.message, exc.headers)
        except redis.exceptions.OutOfMemoryError as exc:
            if not response_started[0]:
                await _send_error(
                    send_wrapper, 503, "OVERLOADED", f"the exchange's store is full: {exc}"
                )
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if not response_started[0]:
                await _send_error(
                    send_wrapper, 503, "UNAVAILABLE", f"the exchange's store is unreachable: {exc}"
                )
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not response_started[0]:
                await _send_error(
                    send_wrapper, 500, "INTERNAL", f"the gateway failed: {type(exc).__name__}"
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

    async def _place_order(self, scope: Scope, receive: Any, send: Any) -> None:
        """``POST /v1/orders`` without the framework: body (413), then writes.place_order."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError("BODY_TOO_LARGE", "the body passes the limit of 65536 bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        wait = None
        if scope.get("query_string"):
            values = parse_qs(scope["query_string"].decode("latin-1")).get("wait")
            wait = values[-1] if values else None
        status, payload = await writes.place_order(
            self.gateway, b"".join(chunks), client_ip(scope), wait
        )
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


class _Route:
    """Stands for the FastAPI route in metrics when the fast path answers."""

    path = "/v1/orders"


ORDERS_PATH = "/v1/orders"
ORDERS_ROUTE = _Route()


def _request_id(raw: bytes) -> str:
    """A client's ``X-Request-ID`` if it is 1-128 printable ASCII characters, else "" (a new
    one is made): it is echoed in a header and written in every log line of the request."""
    text = raw.decode("latin-1")
    return text if 0 < len(text) <= 128 and text.isascii() and text.isprintable() else ""


def _too_large(raw: bytes) -> bool:
    return not raw.isdigit() or int(raw) > MAX_BODY_BYTES


async def _send_error(
    send: Any, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
