"""OrderV4 (docs/api.md "Trigger orders") as the gateway reads it, without a server: which body
is an OrderV4, each trigger field's check and code in their documented order, and the wire
words equal the domain enums."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from common.events.names import TrailingUnitName, TriggerSourceName, TriggerTypeName
from common.markets import load_markets
from common.types import OrderType, TrailingUnit, TriggerSource, TriggerType
from services.gateway import shapes
from services.gateway.errors import ApiError, ErrorCode

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
ADDRESS = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"
SIG = "0x" + "ab" * 65
P = 3_000_000


def body(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "clientOrderId": "c-1", "userId": ADDRESS, "market": "BTC-USDC", "side": "BUY",
        "type": "STOP_LIMIT", "price": P + 20, "qty": 1000, "product": "SPOT", "ts": 1,
        "timeInForce": "GTC", "reduceOnly": False, "expiresAt": 0, "selfTradePrevention": "",
        "triggerPrice": P + 10, "triggerSource": "", "trailingDelta": 0, "trailingUnit": "",
        "closePosition": False, "takeProfitPrice": 0, "stopLossPrice": 0, "sig": SIG,
    }  # fmt: skip
    return values | changes


def refusal(changes: dict[str, Any]) -> tuple[ErrorCode, str]:
    with pytest.raises(ApiError) as refused:
        shapes.parse_order_body(body(**changes), MARKETS)
    return refused.value.code, str(refused.value)


def test_the_wire_words_are_the_enums() -> None:
    assert set(typing.get_args(TriggerTypeName)) == {t.value for t in TriggerType}
    assert set(typing.get_args(TriggerSourceName)) == {s.value for s in TriggerSource}
    assert set(typing.get_args(TrailingUnitName)) == {u.value for u in TrailingUnit}
    assert {t.base for t in TriggerType} == {OrderType.LIMIT, OrderType.MARKET}
    assert [t for t in TriggerType if t.is_stop] == [
        TriggerType.STOP_MARKET, TriggerType.STOP_LIMIT, TriggerType.TRAILING_STOP_MARKET
    ]  # fmt: skip


def test_a_body_with_triggerPrice_is_an_OrderV4_and_parses() -> None:
    primary, values, sig = shapes.parse_order_body(body(), MARKETS)
    assert (primary, values["type"], values["triggerPrice"], sig) == (
        "OrderV4", "STOP_LIMIT", P + 10, SIG)  # fmt: skip
    trailing = body(type="TRAILING_STOP_MARKET", price=0, side="SELL", triggerPrice=0,
                    trailingDelta=25, trailingUnit="BPS")  # fmt: skip
    assert shapes.parse_order_body(trailing, MARKETS)[1]["trailingDelta"] == 25
    plain = body(type="LIMIT", triggerPrice=0)  # an OrderV4 without a trigger
    assert shapes.parse_order_body(plain, MARKETS)[0] == "OrderV4"
    shapes.ORDER_V4.parse(shapes.ORDER_V4.example(), MARKETS)


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"type": "STOP"}, ErrorCode.INVALID_ORDER, "type must be one of"),
        ({"type": "STOP_MARKET", "timeInForce": "POST_ONLY"}, ErrorCode.INVALID_ORDER,
         "cannot be POST_ONLY"),
        ({"type": "STOP_LIMIT", "price": 0}, ErrorCode.INVALID_PRICE, "price 0"),
        ({"triggerSource": "mark"}, ErrorCode.INVALID_ORDER, "triggerSource"),
        ({"type": "LIMIT"}, ErrorCode.INVALID_ORDER, "takes no triggerPrice"),
        ({"type": "TRAILING_STOP_MARKET", "price": 0}, ErrorCode.INVALID_ORDER,
         "takes no triggerPrice"),
        ({"triggerPrice": 0}, ErrorCode.INVALID_PRICE, "triggerPrice 0"),
        ({"triggerPrice": 2**53}, ErrorCode.INVALID_PRICE, "below 2^53"),
        ({"trailingDelta": 5}, ErrorCode.INVALID_ORDER, "takes no trailingDelta"),
        ({"type": "TRAILING_STOP_MARKET", "triggerPrice": 0, "trailingUnit": "TICKS"},
         ErrorCode.INVALID_ORDER, "TICKS must be positive"),
        ({"type": "TRAILING_STOP_MARKET", "triggerPrice": 0, "trailingDelta": 2**53,
          "trailingUnit": "TICKS"}, ErrorCode.INVALID_ORDER, "below 2^53"),
        ({"type": "TRAILING_STOP_MARKET", "triggerPrice": 0, "trailingDelta": 5001,
          "trailingUnit": "BPS"}, ErrorCode.INVALID_ORDER, "between 1 and 5000"),
        ({"type": "TRAILING_STOP_MARKET", "triggerPrice": 0, "trailingDelta": 5},
         ErrorCode.INVALID_ORDER, "TICKS or BPS"),
        # attached TP/SL and position TP/SL (more in test_attached_shapes.py)
        ({"closePosition": True}, ErrorCode.INVALID_ORDER, "closePosition is for a STOP_MARKET"),
        ({"takeProfitPrice": 1}, ErrorCode.INVALID_ORDER, "are for a LIMIT or MARKET order"),
        ({"stopLossPrice": 1}, ErrorCode.INVALID_ORDER, "are for a LIMIT or MARKET order"),
        ({"triggerPrice": -1}, ErrorCode.INVALID_REQUEST, "triggerPrice"),
        ({"closePosition": 0}, ErrorCode.INVALID_REQUEST, "closePosition"),
    ],
)  # fmt: skip
def test_each_trigger_field_is_refused_with_its_code(
    changes: dict[str, Any], code: ErrorCode, words: str
) -> None:
    got, message = refusal(changes)
    assert got is code and words in message, (got, message)


def test_the_trigger_checks_come_after_the_order_v3_checks_in_field_order() -> None:
    # a bad selfTradePrevention (an OrderV3 check) answers before a bad triggerSource
    code, message = refusal({"selfTradePrevention": "DECREMENT_BOTH", "triggerSource": "BID"})
    assert code is ErrorCode.INVALID_ORDER and "selfTradePrevention" in message
    code, message = refusal({"triggerSource": "BID", "triggerPrice": 0})
    assert "triggerSource" in message
