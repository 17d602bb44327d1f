"""The broadcaster's limits without a server: the message window's exact edges, topic parsing
of hostile spellings, the settings' defaults, and the connection handler's endings on a
stand-in WebSocket (a handler error, a flood, every way the per-address count is released)
(docs/api.md "WebSocket limits")."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.broadcaster.app import Broadcaster
from services.broadcaster.connection import MAX_MESSAGES_PER_S, MessageWindow
from services.broadcaster.settings import BroadcasterSettings
from services.broadcaster.topics import MAX_TOPIC_LENGTH, Kind, Topic, TopicError, parse_topic

MARKETS = load_markets(DEFAULT_MARKETS_FILE)
USER = "0x" + "ab" * 20


def test_fifty_messages_at_once_pass_and_the_51st_within_the_second_does_not() -> None:
    window = MessageWindow()
    assert all(window.admit(10.0) for _ in range(MAX_MESSAGES_PER_S))
    assert not window.admit(10.999)


def test_a_message_a_full_second_after_the_oldest_of_the_last_fifty_passes() -> None:
    window = MessageWindow()
    assert all(window.admit(10.0) for _ in range(MAX_MESSAGES_PER_S))
    # Each message at 11.0 comes a full second after one at 10.0: never 51 within a second.
    assert all(window.admit(11.0) for _ in range(MAX_MESSAGES_PER_S))
    assert not window.admit(11.5)


def test_fifty_a_second_evenly_spread_never_trips_and_fifty_one_does() -> None:
    # Times in milliseconds, so the spacing is exact.
    steady = MessageWindow(window_s=1000.0)
    assert all(steady.admit(n * 20.0) for n in range(10 * MAX_MESSAGES_PER_S))
    fast = MessageWindow(window_s=1000.0)
    admitted = [fast.admit(n * 19.0) for n in range(MAX_MESSAGES_PER_S + 1)]
    assert admitted == [True] * MAX_MESSAGES_PER_S + [False]


def test_a_refused_message_is_not_counted() -> None:
    window = MessageWindow(limit=2)
    assert window.admit(0.0) and window.admit(0.5)
    assert not window.admit(0.9)
    assert window.admit(1.0)  # one second after the first: the refusal did not move the window


@pytest.mark.parametrize(
    "spelled",
    [
        f"orders:{USER}\n",  # a trailing newline passed a $-anchored pattern
        "tic\u212aer:BTC-USDC",  # KELVIN SIGN lowers to "k"
        "depth:BTC-U\u017fDC",  # LONG S uppers to "S"
        "depth:" + "A" * MAX_TOPIC_LENGTH,
        "pnl:__RESERVED__",
        'depth:BTC-USDC"}',
    ],
)
def test_hostile_spellings_name_no_topic(spelled: str) -> None:
    with pytest.raises(TopicError) as raised:
        parse_topic(spelled, MARKETS)
    assert len(str(raised.value)) < 400


def test_any_ascii_letter_case_still_names_the_topic() -> None:
    assert parse_topic("DEPTH:btc-usdc", MARKETS) == Topic(Kind.DEPTH, "BTC-USDC")
    assert parse_topic(f"Orders:{USER.upper().replace('0X', '0x')}", MARKETS) == Topic(
        Kind.ORDERS, USER
    )


def test_limit_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEX_BROADCASTER_MAX_SUBSCRIPTIONS", "DEX_BROADCASTER_MAX_CONNECTIONS_PER_IP"):
        monkeypatch.delenv(name, raising=False)
    settings = BroadcasterSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.broadcaster_max_subscriptions == 100
    assert settings.broadcaster_max_connections_per_ip == 100
    assert settings.broadcaster_max_message_bytes == 65536


# -- the connection handler, on a stand-in WebSocket (no server, no Redis) -------------------
class FakeWebSocket:
    """Hands the handler ``incoming`` (ASGI messages, or exceptions to raise), then, once
    ``replies`` messages were sent (or 2 s passed), a disconnect; records what is sent and how
    it is closed."""

    def __init__(
        self,
        incoming: list[dict[str, Any] | BaseException],
        address: str = "198.51.100.7",
        accept_error: BaseException | None = None,
        replies: int = 1,
    ) -> None:
        self.scope: dict[str, Any] = {"type": "websocket", "client": (address, 40000)}
        self.incoming = list(incoming)
        self.accept_error = accept_error
        self.replies = replies
        self.sent: list[str] = []
        self.closed: tuple[int, str | None] | None = None

    async def accept(self) -> None:
        if self.accept_error is not None:
            raise self.accept_error

    async def receive(self) -> dict[str, Any]:
        if not self.incoming:
            for _ in range(200):  # the client lingers until answered (2 s at most)
                if len(self.sent) >= self.replies:
                    break
                await asyncio.sleep(0.01)
            return {"type": "websocket.disconnect", "code": 1000}
        item = self.incoming.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)


def text(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": orjson.dumps(message).decode()}


PING = text({"op": "ping"})


def serve_all(connections_per_ip: int, sockets: list[FakeWebSocket], patch: Any = None) -> Any:
    """Serve each stand-in in turn on one Broadcaster; return it (its client closed)."""

    async def scenario() -> Any:
        settings = BroadcasterSettings(
            _env_file=None,  # type: ignore[call-arg]
            redis_url="redis://127.0.0.1:1/0",  # never reached: nothing here reads Redis
            broadcaster_max_connections_per_ip=connections_per_ip,
        )
        broadcaster = Broadcaster(settings)
        if patch is not None:
            patch(broadcaster)
        try:
            for socket in sockets:
                # A failed handshake raises out of serve to the server, as in uvicorn.
                with contextlib.suppress(OSError):
                    await broadcaster.serve(socket)  # type: ignore[arg-type]
        finally:
            await broadcaster.client.aclose()
        return broadcaster

    return asyncio.run(scenario())


def sample(broadcaster: Any, name: str) -> float | None:
    value: float | None = broadcaster.metrics.registry.get_sample_value(name)
    return value


def test_a_message_whose_handling_raises_closes_1011_and_the_next_connection_is_served() -> None:
    def patch(broadcaster: Any) -> None:
        real = broadcaster.handle

        async def handle(connection: Any, raw: str) -> None:
            if "boom" in raw:
                raise RuntimeError("a bug")
            await real(connection, raw)

        broadcaster.handle = handle

    failing = FakeWebSocket([text({"op": "boom"}), PING])
    after = FakeWebSocket([PING])
    broadcaster = serve_all(1, [failing, after], patch)
    assert failing.closed == (1011, "internal error handling the message")
    assert failing.sent == []  # the ping after the failure was never read
    assert after.closed is None and after.sent == ['{"op":"pong"}']
    assert sample(broadcaster, "dex_broadcaster_handler_errors_total") == 1
    assert broadcaster.per_address == {}


def test_the_51st_message_is_not_handled_and_closes_1008() -> None:
    handled: list[str] = []

    def patch(broadcaster: Any) -> None:
        async def handle(connection: Any, raw: str) -> None:
            handled.append(raw)

        broadcaster.handle = handle

    flooding = FakeWebSocket([PING] * (MAX_MESSAGES_PER_S + 5))
    broadcaster = serve_all(1, [flooding], patch)
    assert len(handled) == MAX_MESSAGES_PER_S
    assert flooding.closed == (1008, "more than 50 messages in one second")
    assert sample(broadcaster, "dex_broadcaster_flood_disconnects_total") == 1


def test_a_binary_frame_is_answered_bad_message_and_not_handled() -> None:
    binary = FakeWebSocket(
        [{"type": "websocket.receive", "bytes": b'{"op":"ping"}'}, PING], replies=2
    )
    serve_all(1, [binary])
    first, second = (orjson.loads(m) for m in binary.sent)
    assert first["type"] == "error" and first["code"] == "BAD_MESSAGE"
    assert first["message"].startswith("binary frames are not accepted")
    assert second == {"op": "pong"}


def test_the_address_gets_its_place_back_however_the_connection_ends() -> None:
    endings = [
        FakeWebSocket([], accept_error=OSError("reset during the handshake")),
        FakeWebSocket([OSError("connection reset")]),
        FakeWebSocket([asyncio.CancelledError()]),
        FakeWebSocket([PING] * (MAX_MESSAGES_PER_S + 1)),  # closed 1008
        FakeWebSocket([PING]),  # a plain disconnect
    ]
    last = FakeWebSocket([PING])
    broadcaster = serve_all(1, [*endings, last])
    assert last.closed is None and last.sent == ['{"op":"pong"}']
    assert broadcaster.per_address == {}
    assert sample(broadcaster, "dex_broadcaster_refused_connections_total") == 0


def test_over_the_bound_the_connection_is_closed_at_once_and_others_are_untouched() -> None:
    def patch(broadcaster: Any) -> None:
        broadcaster.per_address["198.51.100.7"] = 2  # two held elsewhere

    refused = FakeWebSocket([PING])
    other = FakeWebSocket([PING], address="198.51.100.8")
    broadcaster = serve_all(2, [refused, other], patch)
    assert refused.closed == (
        1008,
        "too many connections from this address: at most 2; close one first",
    )
    assert refused.sent == [] and refused.incoming == [PING]  # never read
    assert other.sent == ['{"op":"pong"}']
    assert broadcaster.per_address == {"198.51.100.7": 2}
    assert sample(broadcaster, "dex_broadcaster_refused_connections_total") == 1


def test_no_bound_when_the_setting_is_zero() -> None:
    def patch(broadcaster: Any) -> None:
        broadcaster.per_address["198.51.100.7"] = 10_000

    served = FakeWebSocket([PING])
    serve_all(0, [served], patch)
    assert served.sent == ['{"op":"pong"}'] and served.closed is None
