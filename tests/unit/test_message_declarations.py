"""The message declarations of common.events: their literal words equal the domain enums, and
validation is strict (no coercion, no undeclared key, one declaration per message)."""

from __future__ import annotations

import typing

import pytest

from common.events import (
    Command,
    DepthBatch,
    DepthUpdate,
    OrderCommand,
    SettlementEvent,
    depth_updates,
    dumps,
    topic_message,
)
from common.events.names import (
    FinalStatusName,
    LiquidityName,
    MarketStatusName,
    OrderStatusName,
    OrderTypeName,
    SideName,
    TimeInForceName,
)
from common.events.schema import validate, which
from common.types import (
    FINAL_STATUSES,
    Liquidity,
    MarketStatus,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

ORDER: OrderCommand = {
    "op": "order", "user": "0x" + "a" * 40, "cid": "c1", "side": "BUY", "type": "LIMIT",
    "price": 100, "qty": 2, "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1,
    "reserved": 200, "acceptedAt": 2,
}  # fmt: skip


def words(literal: typing.Any) -> set[str]:
    return set(typing.get_args(literal))


def test_literal_words_are_the_enums_values() -> None:
    assert words(SideName) == {s.value for s in Side}
    assert words(OrderTypeName) == {t.value for t in OrderType}
    assert words(TimeInForceName) == {t.value for t in TimeInForce}
    assert words(MarketStatusName) == {s.value for s in MarketStatus}
    assert words(LiquidityName) == {s.value for s in Liquidity}
    # ACCEPTED is the gateway's view of an order the matcher has not seen: never on the wire
    assert words(OrderStatusName) == {s.value for s in OrderStatus} - {"ACCEPTED"}
    assert words(FinalStatusName) == {s.value for s in FINAL_STATUSES}


def test_a_command_is_validated_against_the_one_declaration_it_matches() -> None:
    assert which(Command, dumps(ORDER)) is OrderCommand
    assert validate(Command, dumps({**ORDER, "open": 2, "reply": "r"}))["open"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"price": "100"},  # a number as text
        {"qty": 2.0},  # a float
        {"reduceOnly": 0},  # a number for a bool
        {"side": "buy"},  # not a word of the wire
        {"extra": 1},  # an undeclared key
    ],
)
def test_a_command_off_its_declaration_is_refused(change: dict[str, typing.Any]) -> None:
    with pytest.raises(ValueError):
        validate(Command, dumps({**ORDER, **change}))


def test_a_missing_key_is_refused() -> None:
    event = {"k": "done", "eseq": 1, "user": "u", "cid": "c", "side": "BUY", "status": "CXL"}
    with pytest.raises(ValueError, match="matches no declaration"):
        which(SettlementEvent, dumps({**event, "filled": 0, "ts": 1}))
    assert validate(SettlementEvent, dumps({**event, "reason": "USER", "filled": 0, "ts": 1}))


def test_depth_publications_split_into_updates() -> None:
    update: DepthUpdate = {"seq": 4, "data": {"bids": [(10, 1)], "asks": []}}
    batch: DepthBatch = {"seq": 5, "batch": [update, {**update, "seq": 5}]}
    assert depth_updates(update) == [update]
    assert [u["seq"] for u in depth_updates(batch)] == [4, 5]
    assert which(topic_message("depth:BTC-USDC"), dumps(batch)) is DepthBatch


def test_a_topic_without_a_declaration_is_named() -> None:
    with pytest.raises(ValueError, match="'candles'"):
        topic_message("candles:BTC-USDC")
