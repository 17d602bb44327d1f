"""A WebSocket test client for the broadcaster (API.md §7), on the ``websockets`` library.

Every received message is kept in order in ``inbox``; the helpers wait (with generous
deadlines) for the first one that matches, so tests never sleep for a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import websockets

Message = dict[str, Any]


class WsClient:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.inbox: list[Message] = []
        self._read = 0  # inbox index up to which messages were handed out by next()

    @classmethod
    async def connect(cls, url: str, **options: Any) -> WsClient:
        return cls(await websockets.connect(url, **options))

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def send(self, message: Message | str) -> None:
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        await self.connection.send(text)

    async def subscribe(self, topic: str, timeout: float = 30.0) -> Message:
        """Subscribe and return the snapshot (or the error) for ``topic``."""
        await self.send({"op": "subscribe", "topic": topic})
        return await self.next(
            lambda m: m.get("topic") == topic and m.get("type") in ("snapshot", "error"),
            timeout,
        )

    async def receive(self, timeout: float) -> Message | None:
        try:
            raw = await asyncio.wait_for(self.connection.recv(), timeout)
        except TimeoutError:
            return None
        message: Message = orjson.loads(raw)
        self.inbox.append(message)
        return message

    async def next(self, match: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        """The first message after the last one returned that satisfies ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(self._read, len(self.inbox)):
                if match(self.inbox[index]):
                    self._read = index + 1
                    return self.inbox[index]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching message within {timeout} s; last received: {self.inbox[-5:]}"
                )
            await self.receive(min(left, 1.0))

    async def seen(self, match: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        """Any message received so far (or within ``timeout``) that satisfies ``match``."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for message in self.inbox[checked:]:
                if match(message):
                    return message
            checked = len(self.inbox)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching message within {timeout} s; last received: {self.inbox[-5:]}"
                )
            await self.receive(min(left, 1.0))

    async def drain(self, quiet: float = 0.5) -> list[Message]:
        """Read until nothing arrives for ``quiet`` seconds; return what came."""
        start = len(self.inbox)
        while await self.receive(quiet) is not None:
            pass
        return self.inbox[start:]

    def of(self, topic: str, kind: str | None = None) -> list[Message]:
        return [
            m for m in self.inbox if m.get("topic") == topic and (kind is None or m["type"] == kind)
        ]
