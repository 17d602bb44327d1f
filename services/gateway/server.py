"""The HTTP/1.1 protocol the gateway is served with: uvicorn's httptools protocol, whose
answers leave in one write each.

uvicorn writes a response's head (status line and headers) when the application sends
``http.response.start`` and its body when it sends ``http.response.body``: two ``send`` calls
on the socket, two TCP segments, and a client that wakes up twice, for an answer the gateway
sends in one go. :class:`CoalescingTransport` stands between the protocol and its socket and
holds a head back until the next write joins it (the body, sent by every route in the same
turn of the loop), or until the loop's next turn, whichever comes first: the bytes and their
order on the wire are the same, in one segment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`; a connection that
    upgrades to a WebSocket hands its protocol the socket's own transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.socket_transport = transport
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()
        self.transport = self.socket_transport
        super().handle_websocket_upgrade()
