"""The WebSocket load: many lean clients in one process, each subscribed to some topics.

A client upgrades with a plain HTTP/1.1 request and speaks just enough of RFC 6455 (masked
frames out, pings answered, close codes counted), so the load generator, not the broadcaster,
stays cheap. Every ``measure_every``-th client parses each frame: publish-to-receive latency
(from the publication's ``benchNs``) into a histogram of ``BUCKET_US`` buckets, and gaps in each
topic's ``seq``; the others only count the bytes they read.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any

import orjson

from lib.entryload import mask_frame

BUCKET_US = 100  # latency histogram resolution
BUCKETS = 100_000  # up to 10 s


class Stats:
    """What one client process saw: latency histogram, messages, gaps, connections, bytes."""

    def __init__(self) -> None:
        self.histogram = [0] * BUCKETS
        self.messages = 0
        self.gaps = 0
        self.connected = 0
        self.closed: dict[str, int] = {}
        self.measuring = False
        self.measured_clients = 0
        self.measured_bytes = 0
        self.drained_clients = 0
        self.drained_bytes = 0


class LeanClient(asyncio.Protocol):
    """A minimal WebSocket client: so the load generator, not the broadcaster, stays cheap."""

    def __init__(
        self, host: str, port: int, topics: tuple[str, ...], stats: Stats, measure: bool
    ) -> None:
        self.host, self.port, self.topics, self.stats = host, port, topics, stats
        # A measuring client parses every frame; the others only count the bytes they read,
        # so the load generator's CPU goes to reading sockets, as real clients' would.
        self.measure = measure
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: Any = None
        self.last: dict[str, int] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        if self.upgraded and not self.measure:
            if stats.measuring:
                stats.drained_bytes += len(data)
            return
        if stats.measuring:
            stats.measured_bytes += len(data)
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.finish("refused")
                return
            del buffer[: end + 4]
            self.upgraded = True
            self.stats.connected += 1
            for topic in self.topics:
                self.send(1, orjson.dumps({"op": "subscribe", "topic": topic}))
            if not self.measure:
                return
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            head = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                head = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                head = 10
            if size - offset < head + length:
                break
            payload = bytes(buffer[offset + head : offset + head + length])
            offset += head + length
            if opcode == 1:
                now = time.time_ns()
                message = orjson.loads(payload)
                topic = message.get("topic")
                seq = message.get("seq")
                if message.get("type") == "update":
                    previous = self.last.get(topic)
                    if previous is not None and seq != previous + 1:
                        stats.gaps += 1
                    if stats.measuring:
                        data = message["data"]
                        sent = data[-1]["benchNs"] if isinstance(data, list) else data["benchNs"]
                        bucket = min((now - sent) // (BUCKET_US * 1000), BUCKETS - 1)
                        stats.histogram[bucket] += 1
                        stats.messages += 1
                self.last[topic] = seq
            elif opcode == 9:
                self.send(10, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.finish(str(code))
                return
        del buffer[:offset]

    def send(self, opcode: int, payload: bytes) -> None:
        self.transport.write(mask_frame(opcode, payload))

    def finish(self, why: str) -> None:
        if not self.done.done():
            self.stats.closed[why] = self.stats.closed.get(why, 0) + 1
            self.done.set_result(None)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.finish("lost")


def client_process(
    urls: list[str],
    topics: tuple[str, ...],
    count: int,
    measure_every: int,
    ready: Any,
    start: Any,
    stop: Any,
    results: Any,
) -> None:
    """Connect ``count`` clients over ``urls`` (in turn), subscribe each to ``topics``, set
    ``ready``; measure between ``start`` and ``stop``; put this process's figures on
    ``results``."""
    import uvloop

    async def main() -> dict[str, Any]:
        stats = Stats()
        loop = asyncio.get_running_loop()
        clients: list[LeanClient] = []
        for index in range(count):
            host, _, port = (
                urls[index % len(urls)].removeprefix("ws://").partition("/")[0].partition(":")
            )
            measure = index % measure_every == 0
            _, client = await loop.create_connection(
                lambda h=host, p=int(port), m=measure: LeanClient(h, p, topics, stats, m),
                host,
                int(port),
            )
            if measure:
                stats.measured_clients += 1
            else:
                stats.drained_clients += 1
            clients.append(client)
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        deadline = time.monotonic() + 60
        while stats.connected < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # snapshots arrive
        ready.set()
        while not start.is_set():
            await asyncio.sleep(0.01)
        stats.measuring = True
        while not stop.is_set():
            await asyncio.sleep(0.05)
        stats.measuring = False
        for client in clients:
            if not client.done.done():
                client.transport.close()
        return {
            "histogram": stats.histogram,
            "messages": stats.messages,
            "gaps": stats.gaps,
            "connected": stats.connected,
            "closed": stats.closed,
            "measured_clients": stats.measured_clients,
            "measured_bytes": stats.measured_bytes,
            "drained_clients": stats.drained_clients,
            "drained_bytes": stats.drained_bytes,
        }

    uvloop.install()
    results.put(asyncio.run(main()))
