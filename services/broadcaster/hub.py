"""The process's Redis pub/sub, fanned out to in-process sinks, over one backend.

A topic is subscribed when its first sink arrives and dropped with its last. ``add`` returns
only once Redis has taken the hub's own subscribe of every channel of the topic (the backend
confirms each subscribe command with a reply only that command can cause, see
backends/base.py ``Reader``), so a snapshot read after it can miss no publication. Subscribe
and unsubscribe commands go out in the order they were asked for, through one writer task, so
a quick unsubscribe + subscribe never leaves a topic dropped. When publications may have been
lost (the backend says so: a reconnect, a slot that moved), waiting adds are settled and
``on_reset`` is called: everyone must resync.

Which pub/sub carries the channels is the backend's business (services/broadcaster/backends):
classic ``dex:ch:<topic>`` channels on one connection, or shard channels on the nodes of a
Redis Cluster >= 7; the hub works the same over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from common.events import loads
from services.broadcaster.backends.base import Backend

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0


class Sink(Protocol):
    def on_publication(self, topic: str, payload: Any) -> None:
        """Handle one decoded publication of ``topic`` (never blocks)."""


# A command: its action, its topic and, for a subscribe, the future its adds wait on.
_Command = tuple[str, str, "asyncio.Future[None] | None"]


class _Commands:
    """Subscribe / unsubscribe commands in the order they were asked for."""

    def __init__(self) -> None:
        self._pending: deque[_Command] = deque()
        self._arrived = asyncio.Event()

    def put(self, action: str, topic: str, ready: asyncio.Future[None] | None = None) -> None:
        self._pending.append((action, topic, ready))
        self._arrived.set()

    async def next_batch(self) -> tuple[str, list[_Command]]:
        """The next command's action, with what queued up meanwhile behind it while the action
        stays the same (sent as one command)."""
        pending = self._pending
        while not pending:
            self._arrived.clear()
            await self._arrived.wait()
        batch = [pending.popleft()]
        action = batch[0][0]
        while pending and pending[0][0] == action:
            batch.append(pending.popleft())
        return action, batch


class Hub:
    """Sinks per topic over a :class:`Backend`, chosen when the hub starts."""

    def __init__(
        self,
        on_reset: Callable[[], None] | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.on_reset = on_reset
        self.on_message = on_message
        self.sinks: dict[str, set[Sink]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}  # topic -> its subscription is live
        self._commands = _Commands()
        self._backend: Backend | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._topic: Callable[[str], str] = _unstarted

    async def start(self, backend: Backend) -> None:
        self._backend = backend
        self._topic = backend.topic
        await backend.connect(self)
        self._writer_task = asyncio.create_task(self._writer(backend), name="hub-writer")

    async def stop(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
        if self._backend is not None:
            await self._backend.disconnect()

    # -- sinks ---------------------------------------------------------------------------
    def subscribed(self, topic: str) -> bool:
        return topic in self.sinks

    async def add(self, topic: str, sink: Sink) -> None:
        """Register ``sink`` for ``topic``; return once the topic's subscription is live."""
        sinks = self.sinks.get(topic)
        if sinks is None:
            self._started()  # before start() no writer would ever send the subscribe
            sinks = self.sinks[topic] = set()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready[topic] = ready
            # The subscribe command carries its future: a later add after a remove waits on
            # a command of its own, behind the unsubscribe.
            self._commands.put("subscribe", topic, ready)
        sinks.add(sink)
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes as the
        # subscription is settled (a reset does both), and the cancelled client would hang on.
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            await asyncio.shield(self._ready[topic])

    def remove(self, topic: str, sink: Sink) -> None:
        sinks = self.sinks.get(topic)
        if sinks is None:
            return
        sinks.discard(sink)
        if not sinks:
            del self.sinks[topic]
            del self._ready[topic]
            self._commands.put("unsubscribe", topic)

    def _started(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the hub has no backend yet: call start(backend) first")
        return self._backend

    # -- commands ------------------------------------------------------------------------
    async def _writer(self, backend: Backend) -> None:
        while True:
            action, batch = await self._commands.next_batch()
            channels = [c for _, topic, _ in batch for c in backend.channels(topic)]
            readies = [ready for _, _, ready in batch if ready is not None]
            try:
                if action == "subscribe":
                    confirmed = asyncio.ensure_future(await backend.subscribe(channels))
                    confirmed.add_done_callback(functools.partial(_settle, readies))
                else:
                    await backend.unsubscribe(channels)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("broadcaster: %s %s failed", action, channels)
                for ready in readies:
                    if not ready.done():
                        ready.set_exception(exc)

    # -- what the backend reports (services.broadcaster.backends.base.Listener) ----------

    def on_published(self, channel: str, data: Any) -> None:
        topic = self._topic(channel)
        if self.on_message is not None:
            self.on_message(topic)
        sinks = self.sinks.get(topic)
        if not sinks:
            return
        try:
            payload = loads(data)
        except ValueError:
            log.error("broadcaster: %s carried non-JSON %r", channel, data)
            return
        for sink in list(sinks):
            try:
                sink.on_publication(topic, payload)
            except Exception:
                log.exception("broadcaster: relaying %s failed", channel)

    def on_lost(self) -> None:
        """Publications may be missing, so everyone must resync.

        The backend's connections re-subscribe by themselves; waiting adds are settled (their
        clients are reset with everyone else).
        """
        _settle(list(self._ready.values()))
        if self.on_reset is not None:
            self.on_reset()


def _unstarted(channel: str) -> str:
    raise RuntimeError("the hub has no backend yet: call start(backend) first")


def _settle(readies: list[asyncio.Future[None]], _confirmed: object = None) -> None:
    """Let the adds waiting on ``readies`` return (once confirmed, or when a loss resets them)."""
    for ready in readies:
        if not ready.done():
            ready.set_result(None)
