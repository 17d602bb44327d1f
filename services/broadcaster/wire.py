"""Fan-out without per-client framing: WebSocket frames built once, written in batches.

A server-to-client frame is not masked (RFC 6455 §5.1), so one update's frame is the same
bytes for every client: the feeds frame it once and every connection queues the same object.
The uvicorn WebSocket protocol below (its sans-I/O implementation, with one addition) hands
the application a :class:`FrameSink` through the ASGI scope extension ``dex.frames``, which
writes a client's queued frames to its socket in one call. Everything else — handshake,
incoming messages, pings, the close handshake — stays uvicorn's. Without the extension (another
server, a test client) :class:`~services.broadcaster.connection.Connection` falls back to plain
ASGI sends.

ASGI has no way to hand the application a socket, so this module is the one place that leans
on uvicorn's protocol internals: :class:`FrameProtocol` overrides ``handle_connect`` and
``resume_writing`` and reads ``scope``, ``writable``, ``close_sent`` and ``transport``.
pyproject.toml bounds uvicorn's version for that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

EXTENSION = "dex.frames"


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


def frame_text(frame: bytes) -> str:
    """The text a frame from :func:`text_frame` carries (for the plain ASGI path)."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return frame[start:].decode()


class FrameSink:
    """Direct, non-blocking frame writes to one client's socket."""

    def __init__(self, protocol: FrameProtocol) -> None:
        self._protocol = protocol
        self.on_writable: Callable[[], None] | None = None

    @property
    def ready(self) -> bool:
        """Open, and the socket's send buffer is under its high-water mark."""
        protocol = self._protocol
        return (
            protocol.writable.is_set()
            and not protocol.close_sent
            and not protocol.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)


class FrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering a :class:`FrameSink` in the scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink = FrameSink(self)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self.sink

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.sink.on_writable is not None:
            self.sink.on_writable()


def sink_of(scope: Mapping[str, Any]) -> FrameSink | None:
    sink = (scope.get("extensions") or {}).get(EXTENSION)
    return sink if isinstance(sink, FrameSink) else None
