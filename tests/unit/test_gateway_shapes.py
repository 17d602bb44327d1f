"""The gateway's request declarations: the OpenAPI document's request bodies are generated from
them, each body is checked in the contract's order, and every error code carries its status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.eip712 import PRIMARY_TYPES
from common.markets import load_markets
from common.settings import DexSettings
from services.gateway import shapes
from services.gateway.app import create_app
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.middleware import FAST_ROUTES, PLACE_ORDER

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
ADDRESS = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"
SIG = "0x" + "ab" * 65

BODIES = {
    ("/v1/orders", "post"): (shapes.ORDER, shapes.ORDER_V2, shapes.ORDER_V3, shapes.ORDER_V4),
    ("/v1/orders/cancel", "post"): (shapes.CANCEL,),
    ("/v1/orders/cancel-all", "post"): (shapes.CANCEL_ALL,),
    ("/v1/withdrawals", "post"): (shapes.WITHDRAW,),
    ("/v1/orders/schedule-cancel", "post"): (shapes.SCHEDULE_CANCEL,),
    ("/v1/admin/deposits", "post"): (shapes.DEPOSIT,),
    ("/v1/admin/oracle", "post"): (shapes.ORACLE,),
    ("/v1/accounts/agents", "post"): (shapes.APPROVE_AGENT,),
    ("/v1/accounts/agents/revoke", "post"): (shapes.REVOKE_AGENT,),
    ("/v1/orders/cancel-replace", "post"): (shapes.CANCEL_REPLACE,),
    ("/v1/orders/amend", "post"): (shapes.AMEND,),
    ("/v1/orders/batch", "post"): (shapes.BATCH,),
    ("/v1/admin/markets/{market}/status", "post"): (shapes.MARKET_STATUS,),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = DexSettings(redis_url="redis://127.0.0.1:1/0", admin_token="unused")
    return create_app(settings, sweeper=False).openapi()


def test_openapi_request_bodies_are_the_shape_declarations(document: dict[str, Any]) -> None:
    with_body = {
        (path, method): operation["requestBody"]["content"]["application/json"]["schema"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert set(with_body) == set(BODIES)
    for route, declared in BODIES.items():
        assert with_body[route] == shapes.body_schema(*declared), route


def test_post_orders_is_documented_from_its_one_declaration(document: dict[str, Any]) -> None:
    assert FAST_ROUTES == {("POST", "/v1/orders"): PLACE_ORDER}
    operation = document["paths"]["/v1/orders"]["post"]
    assert set(operation["responses"]) == {str(status) for status in PLACE_ORDER.responses}
    assert [p["name"] for p in operation["parameters"]] == list(PLACE_ORDER.query)
    assert operation["operationId"] == "post_order_v1_orders_post"


def test_a_signed_body_is_its_eip712_fields_in_order_then_sig() -> None:
    signed = {
        "Order": shapes.ORDER,
        "OrderV2": shapes.ORDER_V2,
        "OrderV3": shapes.ORDER_V3,
        "OrderV4": shapes.ORDER_V4,
        "Cancel": shapes.CANCEL,
        "CancelAll": shapes.CANCEL_ALL,
        "Withdraw": shapes.WITHDRAW,
    }
    for primary_type, shape in signed.items():
        fields = [(f.name, f.kind.value) for f in shape.fields]
        assert fields == [*PRIMARY_TYPES[primary_type], ("sig", "signature")]


def test_every_declared_example_parses() -> None:
    for shape in (shapes.ORDER, shapes.CANCEL, shapes.CANCEL_ALL, shapes.DEPOSIT, shapes.ORACLE):
        shape.parse(shape.example(), MARKETS)


def order(**changes: Any) -> dict[str, Any]:
    body = {
        "clientOrderId": "c-1", "userId": ADDRESS, "market": "BTC-USDC", "side": "BUY",
        "type": "LIMIT", "price": 3000000, "qty": 1000, "product": "SPOT", "ts": 1, "sig": SIG,
    }  # fmt: skip
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def refusal(shape: shapes.Shape, body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ApiError) as refused:
        shape.parse(body, MARKETS)
    return refused.value.code, refused.value.message


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (order(ts=None, extra=1), "INVALID_REQUEST", "missing field(s): ts"),
        (order(extra=1), "INVALID_REQUEST", "unexpected field(s): extra"),
        (order(userId="x", qty=True), "INVALID_REQUEST", "qty must be an integer, got a boolean"),
        (order(userId="x", sig="0x1"), "INVALID_REQUEST", "sig must be 0x followed by 130"),
        (order(userId="x", market="NOPE"), "INVALID_USER", "userId must be a 0x-prefixed"),
        (order(market="NOPE", price=7), "UNKNOWN_MARKET", "no market named 'NOPE'"),
        (order(price=0, qty=0), "INVALID_PRICE", "price 0 must be a positive multiple"),
        (order(qty=0, side="UP"), "INVALID_QTY", "qty 0 must be a multiple of lotSize"),
        (order(side="UP", clientOrderId="?"), "INVALID_ORDER", "side must be one of BUY/SELL"),
        (order(clientOrderId="?", product="PERP"), "INVALID_ORDER", "clientOrderId must be"),
        (order(product="PERP"), "INVALID_ORDER", "product PERP does not match SPOT"),
    ],
)
def test_an_order_is_refused_by_its_first_failing_check(
    body: dict[str, Any], code: str, message: str
) -> None:
    got_code, got_message = refusal(shapes.ORDER, body)
    assert got_code == code and got_message.startswith(message)


def test_an_order_v2_checks_its_own_fields_after_the_order_ones() -> None:
    v2 = order(timeInForce="POST_ONLY", reduceOnly=False, expiresAt=1, type="MARKET", price=0)
    assert refusal(shapes.ORDER_V2, {**v2, "side": "UP"})[0] == "INVALID_ORDER"
    assert refusal(shapes.ORDER_V2, v2) == ("INVALID_ORDER", "a MARKET order cannot be POST_ONLY")
    late = {**v2, "timeInForce": "GTC"}
    assert refusal(shapes.ORDER_V2, late) == ("INVALID_ORDER", "expiresAt 1 is already past")


def test_a_deposit_id_is_checked_after_the_deposit_itself() -> None:
    body = {"userId": "nobody", "asset": "USDC", "amount": 5, "depositId": 7}
    assert refusal(shapes.DEPOSIT, body)[0] == "INVALID_USER"
    body["userId"] = "fees"
    assert refusal(shapes.DEPOSIT, body) == ("INVALID_REQUEST", "depositId must be a string")
    assert shapes.DEPOSIT.parse({**body, "depositId": "d-1"}, MARKETS)["depositId"] == "d-1"
    assert "depositId" not in shapes.DEPOSIT.parse(
        {"userId": "fees", "asset": "USDC", "amount": 5}, MARKETS
    )


def test_every_error_code_is_its_wire_string_and_carries_its_status() -> None:
    statuses = {
        413: {"BODY_TOO_LARGE"},
        429: {"RATE_LIMITED"},
        400: {"INVALID_REQUEST", "INVALID_USER", "UNKNOWN_MARKET", "UNKNOWN_ASSET",
              "INVALID_PRICE", "INVALID_QTY", "INVALID_ORDER", "STALE_TS"},
        401: {"INVALID_SIGNATURE"},
        403: {"FORBIDDEN"},
        404: {"NOT_FOUND"},
        409: {"DUPLICATE", "ORDER_CLOSED", "FILLED_CHANGED", "QTY_NOT_ABOVE_FILLED",
              "POST_ONLY_WOULD_CROSS"},
        422: {"INSUFFICIENT_BALANCE", "INSUFFICIENT_MARGIN", "MARKET_HALTED", "MARKET_CLOSED",
              "TOO_MANY_ORDERS", "LIMIT_EXCEEDED", "MARKET_CANCEL_ONLY", "MARKET_POST_ONLY",
              "MARKET_REDUCE_ONLY"},
        500: {"INTERNAL"},
        503: {"UNAVAILABLE", "OVERLOADED"},
    }  # fmt: skip
    for code in ErrorCode:
        assert code == code.name == code.value
        assert code.name in statuses[code.status]
    assert sum(len(names) for names in statuses.values()) == len(ErrorCode)


def test_an_api_error_takes_its_status_from_its_code() -> None:
    assert ApiError(ErrorCode.STALE_TS, "late").status == 400
    assert ApiError(ErrorCode.UNKNOWN_MARKET, "path", status=404).status == 404
