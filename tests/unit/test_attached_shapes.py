"""Attached TP/SL and position TP/SL (docs/api.md "Attached TP/SL and position TP/SL") as the
gateway reads an OrderV4, without a server: each rule's code and words, in the documented
order, and the children's ids an admitted parent takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.markets import load_markets
from services.gateway import shapes
from services.gateway.errors import ApiError, ErrorCode

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
ADDRESS = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"
SIG = "0x" + "ab" * 65
P = 3_000_000


def body(**changes: Any) -> dict[str, Any]:
    """A perp BUY LIMIT parent at P with a take-profit above and a stop-loss below."""
    values: dict[str, Any] = {
        "clientOrderId": "c-1", "userId": ADDRESS, "market": "BTC-PERP", "side": "BUY",
        "type": "LIMIT", "price": P, "qty": 1000, "product": "PERP", "ts": 1,
        "timeInForce": "GTC", "reduceOnly": False, "expiresAt": 0, "selfTradePrevention": "",
        "triggerPrice": 0, "triggerSource": "LAST", "trailingDelta": 0, "trailingUnit": "",
        "closePosition": False, "takeProfitPrice": P + 100, "stopLossPrice": P - 100, "sig": SIG,
    }  # fmt: skip
    return values | changes


CLOSE = {"type": "STOP_MARKET", "side": "SELL", "price": 0, "qty": 0, "triggerPrice": P - 100,
         "takeProfitPrice": 0, "stopLossPrice": 0, "closePosition": True}  # fmt: skip


def refusal(changes: dict[str, Any]) -> tuple[ErrorCode, str]:
    with pytest.raises(ApiError) as refused:
        shapes.parse_order_body(body(**changes), MARKETS)
    return refused.value.code, str(refused.value)


def test_parents_and_position_orders_parse() -> None:
    for changes in (
        {},
        {"side": "SELL", "takeProfitPrice": P - 100, "stopLossPrice": P + 100},
        {"takeProfitPrice": 0},
        {"type": "MARKET", "price": 0, "stopLossPrice": 0},  # no price to judge against
        {"clientOrderId": "x" * 61},
        {"market": "BTC-USDC", "product": "SPOT"},  # a SPOT BUY parent
        {
            "market": "BTC-USDC",
            "product": "SPOT",
            "side": "SELL",
            "takeProfitPrice": P - 100,
            "stopLossPrice": P + 100,
        },  # a SPOT SELL parent (its children buy back)
        CLOSE,
        CLOSE | {"type": "TAKE_PROFIT_MARKET", "market": "BTC-FUT-20270326", "product": "FUTURE"},
    ):
        primary, _, _ = shapes.parse_order_body(body(**changes), MARKETS)
        assert primary == "OrderV4", changes


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"takeProfitPrice": P}, ErrorCode.INVALID_PRICE, "must be above its price"),
        ({"stopLossPrice": P + 1}, ErrorCode.INVALID_PRICE, "must be below its price"),
        ({"side": "SELL"}, ErrorCode.INVALID_PRICE, "must be below its price"),
        ({"type": "MARKET", "price": 0, "takeProfitPrice": P - 200}, ErrorCode.INVALID_PRICE,
         "must be above stopLossPrice"),
        ({"takeProfitPrice": 2**53}, ErrorCode.INVALID_PRICE, "below 2^53"),
        ({"stopLossPrice": -1}, ErrorCode.INVALID_REQUEST, "stopLossPrice"),
        ({"clientOrderId": "x" * 62}, ErrorCode.INVALID_ORDER, "at most 61"),
        ({"type": "STOP_MARKET", "triggerPrice": P + 10}, ErrorCode.INVALID_ORDER,
         "are for a LIMIT or MARKET order"),
        ({"market": "BTC-USDC", "product": "SPOT", "side": "SELL", "takeProfitPrice": P + 100,
          "stopLossPrice": P + 200}, ErrorCode.INVALID_PRICE, "must be below its price"),
        ({"market": "BTC-C-40000-20270326", "product": "OPTION"}, ErrorCode.INVALID_ORDER,
         "on OPTION"),
        (CLOSE | {"qty": 1000}, ErrorCode.INVALID_QTY, "takes qty 0"),
        (CLOSE | {"type": "STOP_LIMIT", "price": P - 200, "qty": 1000}, ErrorCode.INVALID_ORDER,
         "closePosition is for"),
        (CLOSE | {"market": "BTC-USDC", "product": "SPOT"}, ErrorCode.INVALID_ORDER, "on SPOT"),
        (CLOSE | {"stopLossPrice": P - 200}, ErrorCode.INVALID_ORDER, "no takeProfitPrice"),
        (CLOSE | {"qty": 0, "closePosition": False}, ErrorCode.INVALID_QTY, "qty 0 must be"),
    ],
)  # fmt: skip
def test_each_attached_rule_is_refused_with_its_code(
    changes: dict[str, Any], code: ErrorCode, words: str
) -> None:
    got, message = refusal(changes)
    assert got is code and words in message, (got, message)


def test_the_checks_come_in_their_documented_order() -> None:
    # qty before closePosition, closePosition before the attached prices, whose type and market
    # come before the prices themselves
    code, _ = refusal(CLOSE | {"qty": 5, "takeProfitPrice": 1})
    assert code is ErrorCode.INVALID_QTY
    code, message = refusal(CLOSE | {"takeProfitPrice": 1})
    assert code is ErrorCode.INVALID_ORDER and "closePosition" in message
    code, message = refusal(
        {"market": "BTC-C-40000-20270326", "product": "OPTION", "takeProfitPrice": 1}
    )
    assert code is ErrorCode.INVALID_ORDER and "on OPTION" in message
    # a SPOT parent, BUY or SELL, is judged on its prices like a derivative one
    code, message = refusal({"market": "BTC-USDC", "product": "SPOT", "takeProfitPrice": 1})
    assert code is ErrorCode.INVALID_PRICE and "must be above its price" in message
    code, message = refusal(
        {"market": "BTC-USDC", "product": "SPOT", "side": "SELL", "takeProfitPrice": 1}
    )
    assert code is ErrorCode.INVALID_PRICE and "stopLossPrice 2999900 of a SELL" in message


def test_the_children_ids_are_the_parent_cid_with_a_suffix() -> None:
    assert shapes.ATTACHED_SUFFIXES == (".tp", ".sl")
    assert shapes.MAX_PARENT_CID + len(".tp") == 64
