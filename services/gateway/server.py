"""The HTTP/1.1 protocol the gateway is served with: uvicorn's httptools protocol, whose
answers leave in one write each.

uvicorn writes a response's head (status line and headers) when the application sends
``http.response.start`` and its body when it sends ``http.response.body``: two ``send`` calls
on the socket, two TCP segments, and a client that wakes up twice, for an answer the gateway
sends in one go. :class:`CoalescingTransport` stands between the protocol and its socket and
holds a head back until the next write joins it (the body, sent by every route in the same
turn of the loop), or until the loop's next turn, whichever comes first: the bytes and their
order on the wire are the same, in one segment.

A request the app answers itself before any framework (``POST /v1/orders``: the app names
such routes in ``fast_paths``) takes a lean path through the protocol: once httptools has
parsed it whole, the app is called with the request's scope and a :class:`LeanCycle` in place
of uvicorn's request-response cycle (no event, no flow-control wait for the body, no header
checks on the answer the gateway wrote itself), and the answer's bytes are written at once.
The app, its checks, its logs and metrics are the same; the bytes on the wire are those
uvicorn would write. A request the lean path cannot answer exactly as uvicorn would (another
method or path, a percent-encoded or absolute URL, no or a too large ``Content-Length``,
``Transfer-Encoding``, ``Expect``, ``Upgrade``, forwarded-address headers, HTTP/0.9 or 2,
uvicorn's own access log or concurrency limit or root path, any middleware other than the
proxy-headers one in front of the app) takes uvicorn's path, unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

HEAD_START = b"HTTP/1."
HEAD_END = b"\r\n\r\n"


class CoalescingTransport:
    """A connection's transport that holds back a response head (a write that starts with a
    status line and ends with the blank line) until the next write or the loop's next turn.
    Every other call goes to the transport, a write or a close only after what is held."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        elif data[:7] == HEAD_START and data[-4:] == HEAD_END:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.flush()
        self._transport.writelines(lines)

    def flush(self) -> None:
        """Write what is held, if anything (once the transport is closing, nothing is)."""
        if self._held:
            data, self._held = self._held, b""
            if not self._transport.is_closing():
                self._transport.write(data)

    def is_closing(self) -> bool:  # asked once per request: not through __getattr__
        return self._transport.is_closing()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


LEAN_HEADERS_REFUSED = frozenset(
    (b"transfer-encoding", b"expect", b"upgrade", b"x-forwarded-for", b"x-forwarded-proto")
)
"""A request with any of these headers takes uvicorn's path."""


def lean_app(app: Any) -> Any:
    """The app that answers its ``fast_paths`` itself, if nothing but uvicorn's proxy-headers
    middleware stands before it (and it has such paths), else None."""
    if isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    return app if getattr(app, "fast_paths", None) else None


class _Nothing:
    @staticmethod
    def set() -> None:
        pass


class LeanCycle(RequestResponseCycle):
    """A lean-path request in the place of uvicorn's cycle: its body is whole before the app
    is called, and its answer (a start and one body) is written in one go, with the bytes
    uvicorn's cycle would write (the server's default headers first, ``connection: close``
    when the connection ends). uvicorn's ``run_asgi`` (an exception → its 500, a close after a
    started answer) and ``send_500_response`` are inherited as they are."""

    # What the protocol sets on a disconnect: nothing waits on it here.
    message_event = _Nothing()  # type: ignore[assignment]

    def __init__(self, protocol: GatewayHttpProtocol, scope: Any, keep_alive: bool) -> None:
        self.protocol = protocol
        self.scope = scope
        self.transport = protocol.transport
        self.logger = protocol.logger
        self.on_response = protocol.on_response_complete
        self.keep_alive = keep_alive
        self.disconnected = False
        self.body = bytearray()
        self.more_body = True
        self.turn = False  # the answers before it on the connection are complete
        self.response_started = False
        self.response_complete = False
        self.start: Any = None

    async def receive(self) -> Any:
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(self, message: Any) -> None:
        flow = self.protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self.response_started = True
            self.start = message
            return
        if self.response_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )
        if kind != "http.response.body" or message.get("more_body", False):
            raise RuntimeError(f"Expected one 'http.response.body', but got '{kind}'.")
        body = message.get("body", b"")
        content = [STATUS_LINE[self.start["status"]]]
        has_connection_close = False
        for name, value in [*self.protocol.server_state.default_headers, *self.start["headers"]]:
            if name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
                self.keep_alive = False
                has_connection_close = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        self.transport.write(b"".join(content))
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`, with the lean path
    for the app's fast routes; a connection that upgrades to a WebSocket hands its protocol
    the socket's own transport."""

    lean = True
    """Whether the lean path is taken (off: every request takes uvicorn's path, for tests)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.socket_transport = transport
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        app = lean_app(self.app) if self.lean else None
        if self.access_log or self.limit_concurrency is not None or self.root_path:
            app = None
        self.lean_app: Any = app

    def handle_websocket_upgrade(self) -> None:
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()
        self.transport = self.socket_transport
        super().handle_websocket_upgrade()

    def _lean_request(self) -> bool:
        """Whether the request whose head was just parsed can take the lean path."""
        app = self.lean_app
        parser = self.parser
        path, _, query = self.url.partition(b"?")
        if (
            (parser.get_method(), path) not in app.fast_paths
            or b"#" in query
            or parser.get_http_version() not in ("1.1", "1.0")
            or parser.should_upgrade()
        ):
            return False
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return False
                length = int(value)
            elif name in LEAN_HEADERS_REFUSED:
                return False
        return length is not None and length <= app.fast_body_limit

    def on_headers_complete(self) -> None:
        if self.lean_app is None or not self._lean_request():
            super().on_headers_complete()
            return
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        path, _, query = self.url.partition(b"?")
        scope["path"] = path.decode("ascii")
        scope["raw_path"] = path
        scope["query_string"] = query
        existing = self.cycle
        cycle = LeanCycle(self, scope, http_version != "1.0" and parser.should_keep_alive())
        self.cycle = cycle
        if existing is None or existing.response_complete:
            cycle.turn = True
        else:  # pipelined behind an answer not yet complete: started in its turn
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.lean_app))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is LeanCycle:
            cycle.body += body  # at most the declared length, within the app's limit
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is LeanCycle:
            cycle.more_body = False
            if cycle.turn:
                self._start_lean(cycle)
        else:
            super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if type(cycle) is LeanCycle:  # its turn, out of the pipeline
            cycle.turn = True
            if not cycle.more_body:
                self._start_lean(cycle)
        else:
            super()._start_asgi_task(cycle, app)

    def _start_lean(self, cycle: LeanCycle) -> None:
        run = cycle.run_asgi(self.lean_app)
        if self.config.reset_contextvars:
            task = self.loop.create_task(run, context=contextvars.Context())
        else:
            task = self.loop.create_task(run)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
