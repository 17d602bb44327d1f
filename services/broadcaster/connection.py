"""One WebSocket client: its subscriptions and its bounded outgoing queue.

A :class:`Subscription` is one topic of one connection, named as the client spelled it; the
feeds (services/broadcaster/feeds.py) fill it.

Everything a client receives goes through :meth:`Connection.push_frame`, which never blocks:
the frame joins the client's queue. With uvicorn's frame sink (services/broadcaster/wire.py)
the process's :class:`Flusher` writes each client's queued frames in one call, soon after they
arrive; otherwise a sender task sends them one by one through ASGI. A client whose socket stops
draining lets its queue fill, and is closed with 1013 rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections import deque
from typing import Any

import orjson
from starlette.websockets import WebSocket

from services.broadcaster.metrics import Metrics
from services.broadcaster.topics import Topic
from services.broadcaster.wire import FrameSink, frame_text, sink_of, text_frame

TRY_AGAIN_LATER = 1013
GOING_AWAY = 1001
SERVICE_RESTART = 1012
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

# API.md §7: a connection that sends more than this many messages in one second is closed.
MAX_MESSAGES_PER_S = 50


# Adaptive flush delay: per connection waiting to be written, capped. A flush pass costs a few
# microseconds per connection (one socket write each); waiting a few times that long before
# the pass lets updates that arrive meanwhile share the writes, so a thousand clients at a
# thousand updates a second cost tens of thousands of writes a second, not a million, while a
# handful of clients are written to at once.
FLUSH_DELAY_PER_CONNECTION_S = 20e-6
FLUSH_DELAY_MAX_S = 0.02


class Flusher:
    """Writes the queued frames of every connection that has some, batched per connection.

    ``interval_s`` fixes the delay between the first queued frame and the write pass (0: the
    event loop's next turn); ``None`` adapts it to the number of connections to write.
    """

    def __init__(self, metrics: Metrics, interval_s: float | None = None) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.dirty: set[Connection] = set()
        self._handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, connection: Connection) -> None:
        self.dirty.add(connection)
        self.schedule()

    def schedule(self) -> None:
        if self._handle is None:
            loop = self._loop
            if loop is None or loop.is_closed():
                loop = self._loop = asyncio.get_running_loop()
            delay = self.interval_s
            if delay is None:
                delay = min(len(self.dirty) * FLUSH_DELAY_PER_CONNECTION_S, FLUSH_DELAY_MAX_S)
            if delay > 0:
                self._handle = loop.call_later(delay, self.flush)
            else:
                self._handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        self._handle = None
        dirty, self.dirty = self.dirty, set()
        written = 0
        for connection in dirty:
            written += connection.flush()
        if written:
            self.metrics.count_sent(written)


class MessageWindow:
    """At most ``limit`` messages in any span of ``window_s`` (a sliding window, exact).

    The arrival times of the last ``limit`` messages sit in a ring (``limit`` doubles, 400
    bytes for 50); a new message is over the limit when the one ``limit`` messages before it
    arrived less than ``window_s`` ago, since then ``limit`` + 1 fell within one window. One
    comparison and one store per message; no bursts beyond the limit at window edges, as a
    fixed window or a token bucket would allow.
    """

    __slots__ = ("next", "times", "window_s")

    def __init__(self, limit: int = MAX_MESSAGES_PER_S, window_s: float = 1.0) -> None:
        self.times = array("d", [-math.inf]) * limit
        self.next = 0
        self.window_s = window_s

    def admit(self, now: float) -> bool:
        """Count a message arriving at ``now`` (monotonic seconds); False: one too many."""
        index = self.next
        if now - self.times[index] < self.window_s:
            return False
        self.times[index] = now
        index += 1
        self.next = 0 if index == len(self.times) else index
        return True


class Connection:
    def __init__(
        self, websocket: WebSocket, queue_limit: int, metrics: Metrics, flusher: Flusher
    ) -> None:
        self.websocket = websocket
        self.queue_limit = queue_limit
        self.metrics = metrics
        self.flusher = flusher
        self.queue: deque[bytes] = deque()
        self.subscriptions: dict[str, Subscription] = {}  # topic as spelled -> subscription
        self.close_code: int | None = None
        self.close_reason = ""
        self.closing = asyncio.Event()
        self.received = MessageWindow()
        self._wakeup = asyncio.Event()
        self.sink: FrameSink | None = sink_of(websocket.scope)
        if self.sink is not None:
            self.sink.on_writable = self._writable_again

    def push(self, text: str) -> None:
        """Queue one server message (JSON text) for this client only."""
        self.push_frame(text_frame(text.encode()))

    def push_frame(self, frame: bytes) -> None:
        """Queue one frame (possibly shared with other clients); a full queue means 1013."""
        if self.close_code is not None:
            return
        if len(self.queue) >= self.queue_limit:
            self.too_slow(f"more than {self.queue_limit} messages waiting to be sent")
            return
        self.queue.append(frame)
        self.flusher.mark(self)

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

    def flush(self) -> int:
        """Write every queued frame in one call, unless the socket is backed up or closed;
        without a frame sink, wake the sender task. Returns the frames written."""
        queue, sink = self.queue, self.sink
        if not queue or self.close_code is not None:
            return 0
        if len(queue) > self.queue_limit:
            self.too_slow(f"more than {self.queue_limit} messages waiting to be sent")
            return 0
        if sink is None:
            self._wakeup.set()
            return 0
        if not sink.ready:
            return 0  # closed: the receive side ends the connection; backed up: it resumes us
        count = len(queue)
        if count == 1:
            sink.write(queue.popleft())
        else:
            sink.write(b"".join(queue))
            queue.clear()
        return count

    def _writable_again(self) -> None:
        if self.queue and self.close_code is None:
            self.flusher.mark(self)

    async def send_loop(self) -> None:
        """Without a frame sink: send the queue through ASGI, in order, until the end."""
        if self.sink is not None:
            await self.closing.wait()
            return
        queue, send, sent = self.queue, self.websocket.send_text, self.metrics.messages_sent
        while self.close_code is None:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await send(frame_text(queue.popleft()))
            sent.inc()


class Subscription:
    """One topic of one connection, named as the client spelled it."""

    def __init__(self, connection: Connection, spelled: str, topic: Topic) -> None:
        self.connection = connection
        self.spelled = spelled
        self.topic = topic
        self.live = False
        self.removed = False
        self.seq = 0  # last seq sent to the client
        self.held: list[Any] = []  # publications that arrived while the snapshot was taken
        self._head = '{"topic":' + orjson.dumps(spelled).decode() + ',"type":'

    def message(self, kind: str, seq: int, data_json: str) -> str:
        return f'{self._head}"{kind}","seq":{seq},"data":{data_json}}}'

    def send(self, kind: str, seq: int, data_json: str) -> None:
        self.seq = seq
        self.connection.push(self.message(kind, seq, data_json))

    def hold(self, payload: Any) -> None:
        if len(self.held) >= self.connection.queue_limit:
            self.connection.too_slow("updates piled up while the snapshot was taken")
            return
        self.held.append(payload)
