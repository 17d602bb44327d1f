"""The broadcaster's limits without a server: the message window's exact edges, topic parsing
of hostile spellings, and the settings' defaults (docs/api.md "WebSocket limits")."""

from __future__ import annotations

import pytest

from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
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
