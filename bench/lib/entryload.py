"""A lean client of the gateway's WebSocket order entry (``/v1/ws``), the twin of
``httpload.OrderConnection``: the upgrade by hand, masked text frames out,
server frames read on plain asyncio streams, server pings answered. ``order`` sends one
request and waits for its answer; ``send_order`` and ``answer`` keep many in flight on the one
connection, matched by id."""

from __future__ import annotations

import asyncio
import base64
import os

import orjson

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask, RFC 6455 §5.3), masked as one big integer: a
    byte-by-byte loop would cost the client tens of µs per order, counted as latency."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    keys = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")
    return header + key + masked.to_bytes(length, "big")


class EntrySocket:
    """One entry connection; :meth:`order` sends one order and returns its answer."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    async def open(self) -> EntrySocket:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        self._writer.write(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"the entry refused the upgrade: {head[:200]!r}")
        return self

    async def order(self, body: bytes, wait: bool = False) -> tuple[int, bytes]:
        """Send one pre-encoded order body; the answer's (status, body as JSON)."""
        self.send_order(body, wait)
        answer = orjson.loads(await self._text())
        return int(answer["status"]), orjson.dumps(answer["body"])

    def send_order(self, body: bytes, wait: bool = False) -> int:
        """Send one pre-encoded order body without waiting; its request id."""
        assert self._writer is not None, "open() first"
        self._next_id += 1
        envelope = b'{"id":%d,"op":"order","wait":%s,"body":%s}' % (
            self._next_id,
            b"true" if wait else b"false",
            body,
        )
        self._writer.write(mask_frame(TEXT, envelope))
        return self._next_id

    async def answer(self) -> tuple[int, int]:
        """The next answer, in the order the gateway sends them: (request id, status)."""
        answer = orjson.loads(await self._text())
        return int(answer["id"]), int(answer["status"])

    async def _text(self) -> bytes:
        assert self._reader is not None and self._writer is not None
        while True:
            first, second = await self._reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self._reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self._reader.readexactly(8), "big")
            payload = await self._reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == TEXT:
                return payload
            if opcode == PING:
                self._writer.write(mask_frame(PONG, payload))
            elif opcode == CLOSE:
                raise ConnectionError(f"the entry closed the connection: {payload[2:]!r}")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
