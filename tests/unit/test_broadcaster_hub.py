"""The broadcaster's hub over a stand-in backend, without Redis: commands leave in the order
they were asked for (runs of one action as one command), ``add`` returns once every channel of
its topic is confirmed, and a loss settles waiting adds and resets everyone. The hub over the
real backends and their reader, against a real Redis, is in
tests/integration/test_broadcaster_pubsub.py."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any

from services.broadcaster.backends.base import Backend, Listener
from services.broadcaster.hub import Hub


class RecordingBackend(Backend):
    """Two channels per ``orders:`` topic, one for any other; commands are recorded (and held
    while ``gate`` is clear), confirmed only when the test says so (``confirm``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str]]] = []
        self.listener: Listener | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.unconfirmed: dict[str, deque[asyncio.Future[None]]] = {}

    def channels(self, topic: str) -> list[str]:
        if topic.startswith("orders:"):
            return [f"a:{topic}", f"b:{topic}"]
        return [f"a:{topic}"]

    def topic(self, channel: str) -> str:
        return channel.partition(":")[2]

    async def connect(self, listener: Listener) -> None:
        self.listener = listener

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        self.sent.append(("subscribe", channels))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in channels]
        for channel, future in zip(channels, futures, strict=True):
            self.unconfirmed.setdefault(channel, deque()).append(future)
        await self.gate.wait()
        return asyncio.gather(*futures)

    async def unsubscribe(self, channels: list[str]) -> None:
        self.sent.append(("unsubscribe", channels))
        await self.gate.wait()

    def confirm(self, channel: str) -> None:
        self.unconfirmed[channel].popleft().set_result(None)


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []

    def on_publication(self, topic: str, payload: Any) -> None:
        self.received.append((topic, payload))


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def test_commands_leave_in_order_and_a_run_of_one_action_is_one_command() -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        backend = RecordingBackend()
        hub = Hub()
        await hub.start(backend)
        sink = Sink()
        first = asyncio.create_task(hub.add("depth:X", sink))
        await settle()
        backend.confirm("a:depth:X")
        await first
        # A quick unsubscribe + subscribe of one topic, and a second topic, queued while the
        # writer holds on to the unsubscribe.
        backend.gate.clear()
        hub.remove("depth:X", sink)
        await settle()
        again = asyncio.create_task(hub.add("depth:X", sink))
        other = asyncio.create_task(hub.add("trade:X", sink))
        await settle()
        backend.gate.set()
        await settle()
        for channel in ("a:depth:X", "a:trade:X"):
            backend.confirm(channel)
        await asyncio.gather(again, other)
        assert hub.subscribed("depth:X") and hub.subscribed("trade:X")
        await hub.stop()
        return backend.sent

    assert asyncio.run(scenario()) == [
        ("subscribe", ["a:depth:X"]),
        ("unsubscribe", ["a:depth:X"]),
        ("subscribe", ["a:depth:X", "a:trade:X"]),
    ]


def test_add_returns_once_every_channel_of_its_topic_is_confirmed() -> None:
    async def scenario() -> None:
        backend = RecordingBackend()
        hub = Hub()
        await hub.start(backend)
        sink = Sink()
        add = asyncio.create_task(hub.add("orders:u", sink))
        await settle()
        backend.confirm("a:orders:u")
        await settle()
        assert not add.done()
        backend.confirm("b:orders:u")
        await settle()
        assert add.done() and add.exception() is None
        hub.on_published("b:orders:u", '{"seq":1}')
        hub.on_published("a:trade:X", '{"seq":2}')  # nobody's topic: dropped
        assert sink.received == [("orders:u", {"seq": 1})]
        await hub.stop()

    asyncio.run(scenario())


def test_a_loss_settles_waiting_adds_and_resets_everyone() -> None:
    resets: list[bool] = []

    async def scenario() -> None:
        backend = RecordingBackend()
        hub = Hub(on_reset=lambda: resets.append(True))
        await hub.start(backend)
        add = asyncio.create_task(hub.add("orders:u", Sink()))
        await settle()
        hub.on_lost()
        await asyncio.wait_for(add, 1)
        await hub.stop()

    asyncio.run(scenario())
    assert resets == [True]


def test_an_add_cancelled_as_a_loss_settles_it_ends_cancelled() -> None:
    # A reset settles waiting adds and closes every client in one step: the client's handler is
    # then cancelled while its add is already settled, and must stop rather than carry on.
    async def scenario() -> bool:
        backend = RecordingBackend()
        hub = Hub()
        await hub.start(backend)
        add = asyncio.create_task(hub.add("orders:u", Sink()))
        await settle()
        hub.on_lost()
        await asyncio.sleep(0)
        add.cancel()
        await asyncio.wait([add])
        await hub.stop()
        return add.cancelled()

    assert asyncio.run(scenario())
