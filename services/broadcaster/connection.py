"""One WebSocket client: its subscriptions and its bounded outgoing queue.

Everything a client receives goes through :meth:`Connection.push`, which never blocks: the
message joins a queue that one sender task drains. A client that lets the queue fill (it reads
slower than the feed runs) is marked slow and closed with 1013, so its backlog never grows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
from starlette.websockets import WebSocket

from services.broadcaster.metrics import Metrics

if TYPE_CHECKING:
    from services.broadcaster.feeds import Subscription

TRY_AGAIN_LATER = 1013
GOING_AWAY = 1001
SERVICE_RESTART = 1012


class Connection:
    def __init__(self, websocket: WebSocket, queue_limit: int, metrics: Metrics) -> None:
        self.websocket = websocket
        self.queue_limit = queue_limit
        self.metrics = metrics
        self.queue: deque[str] = deque()
        self.subscriptions: dict[str, Subscription] = {}  # topic as spelled -> subscription
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing = asyncio.Event()
        self._wakeup = asyncio.Event()

    def push(self, text: str) -> None:
        """Queue one server message (JSON text); a full queue closes the client with 1013."""
        if self.close_code is not None:
            return
        if len(self.queue) >= self.queue_limit:
            self.too_slow(f"more than {self.queue_limit} messages waiting to be sent")
            return
        self.queue.append(text)
        self._wakeup.set()

    def push_json(self, message: dict[str, Any]) -> None:
        self.push(orjson.dumps(message).decode())

    def error(self, code: str, message: str, topic: str | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if topic is not None:
            body["topic"] = topic
        self.push_json(body)

    def too_slow(self, why: str) -> None:
        """The client cannot keep up: close it with 1013 instead of buffering more."""
        if self.close_code is None:
            self.metrics.slow_disconnects.inc()
            self.close(TRY_AGAIN_LATER, f"client too slow: {why}")

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to end with ``code``; the endpoint does the closing."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.queue.clear()
            self.closing.set()

    async def send_loop(self) -> None:
        """Drain the queue into the socket, in order, until the connection ends."""
        queue, send, sent = self.queue, self.websocket.send_text, self.metrics.messages_sent
        while self.close_code is None:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await send(queue.popleft())
            sent.inc()
