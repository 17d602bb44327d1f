"""The broadcaster's hub over a stand-in backend, without Redis: commands leave in the order
they were asked for (runs of one action as one command), ``add`` returns once every channel of
its topic is confirmed, and a loss settles waiting adds and resets everyone. Then the hub over
the classic backend and its reader, on a stand-in Redis whose commands and replies the test
lets through one at a time: a reconnect's own re-subscription confirms no later subscribe."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.broadcaster.backends.base import Backend, Listener
from services.broadcaster.backends.classic import ClassicBackend
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


class StandInRedis:
    """One pub/sub connection to a Redis whose commands wait in ``inbound`` until ``step``
    has the server take the next one, as a real server may take them later than the client
    sent them. Replies are read in the order the server wrote them. ``pubsub()`` is the
    client's side, keeping redis-py's books: a channel is re-subscribed after a reconnect
    until its unsubscribe has been answered."""

    def __init__(self) -> None:
        self.inbound: deque[list[str]] = deque()  # commands sent, not yet taken
        self.replies: deque[dict[str, Any]] = deque()  # written by the server, not yet read
        self.server_channels: set[str] = set()
        self.client_channels: set[str] = set()
        self.connection = self  # the connection callbacks are registered on
        self.callbacks: list[Callable[[Any], None]] = []
        self.written = asyncio.Event()

    def pubsub(self) -> StandInRedis:
        return self

    def register_connect_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    async def subscribe(self, *channels: str) -> None:
        self.inbound.append(["SUBSCRIBE", *channels])
        self.client_channels.update(channels)

    async def unsubscribe(self, *channels: str) -> None:
        self.inbound.append(["UNSUBSCRIBE", *channels])

    async def ping(self, message: str) -> None:
        self.inbound.append(["PING", message])

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        if not self.replies:
            self.written.clear()
            try:
                await asyncio.wait_for(self.written.wait(), timeout)
            except TimeoutError:
                return None
        message = self.replies.popleft()
        if message["type"] == "unsubscribe":
            self.client_channels.discard(message["channel"])
        return message

    async def aclose(self) -> None:
        pass

    def step(self) -> None:
        """The server takes the next command."""
        name, *args = self.inbound.popleft()
        if name == "PING":
            self._write({"type": "pong", "channel": None, "data": args[0]})
            return
        for channel in args:
            if name == "SUBSCRIBE":
                self.server_channels.add(channel)
            else:
                self.server_channels.discard(channel)
            self._write({"type": name.lower(), "channel": channel, "data": 1})

    def publish(self, channel: str, data: str) -> None:
        if channel in self.server_channels:
            self._write({"type": "message", "channel": channel, "data": data})

    def reconnect(self, resend: bool = False) -> None:
        """The connection is lost and made again: what was in flight is gone, and the client
        re-subscribes what its books hold before anything else, as redis-py does; with
        ``resend``, the commands in flight failed to be written and redis-py sends them again
        on the new connection after the re-subscription."""
        lost = list(self.inbound)
        self.inbound.clear()
        self.replies.clear()
        self.server_channels.clear()
        if self.client_channels:
            self.inbound.append(["SUBSCRIBE", *sorted(self.client_channels)])
        if resend:
            self.inbound.extend(lost)
        for callback in self.callbacks:
            callback(self)

    def _write(self, message: dict[str, Any]) -> None:
        self.replies.append(message)
        self.written.set()


@pytest.mark.parametrize("in_flight", [False, True], ids=["subscribed", "subscribe-resent"])
def test_a_reconnects_own_resubscription_does_not_confirm_a_later_subscribe(
    in_flight: bool,
) -> None:
    # The race of a lost connection: redis-py re-subscribes the topic of a client that is
    # being reset (and, if its subscribe was in flight, sends that again); the hub
    # unsubscribes it as that client leaves, and subscribes it again for the client that comes
    # back. Redis may answer the re-subscription (or the resent subscribe) after the new
    # client's add began: that reply is no confirmation of the hub's subscribe, which may
    # still sit behind the unsubscribe. Whenever the add has returned, a publication must
    # arrive.
    channel = "dex:ch:depth:X"

    async def scenario() -> tuple[list[int], list[int]]:
        redis = StandInRedis()
        hub = Hub()
        await hub.start(ClassicBackend(redis))
        gone, back = Sink(), Sink()

        first = asyncio.create_task(hub.add("depth:X", gone))
        await settle(20)
        while not in_flight and not first.done():
            while redis.inbound:
                redis.step()
            await settle()
        hub.on_reset = lambda: hub.remove("depth:X", gone)
        redis.reconnect(resend=in_flight)
        await settle(20)  # the reset: the client leaves, the hub unsubscribes
        assert first.done()
        add = asyncio.create_task(hub.add("depth:X", back))
        await settle(20)
        # Redis takes one command at a time; a publication may come in between any two.
        published: list[int] = []
        while redis.inbound or not published:
            if redis.inbound:
                redis.step()
            await settle(20)
            if add.done():
                published.append(len(published) + 1)
                redis.publish(channel, f'{{"seq":{published[-1]}}}')
        await settle(20)
        await hub.stop()
        return published, [payload["seq"] for _, payload in back.received]

    published, received = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert published and received == published
