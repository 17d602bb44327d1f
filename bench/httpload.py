"""A minimal keep-alive HTTP/1.1 client for the benchmarks' load generators.

The load generator shares the machine's cores with the exchange it measures, so every
microsecond it spends is taken from the system under test. One connection sends a
pre-encoded ``POST /v1/orders`` and reads the answer on plain asyncio streams: no per-request
task, session, header object or cookie jar (what a general client like aiohttp spends).
"""

from __future__ import annotations

import asyncio


class OrderConnection:
    """One keep-alive connection to the gateway, one request at a time."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self._head = (
            f"POST /v1/orders HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> OrderConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send one order body; its (status, payload)."""
        assert self._reader is not None and self._writer is not None, "open() first"
        self._writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
        header = await self._reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return int(header[9:12]), await self._reader.readexactly(length)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
