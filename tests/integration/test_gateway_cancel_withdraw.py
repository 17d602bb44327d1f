"""Signed cancels, cancel-all and withdrawals against a real Redis.

The matcher's side of a cancel is played by ``ReplyingMatcher`` (it answers the reply key as
docs/architecture.md fixes), so these tests pin the gateway's half: checks, codes, replay.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from support.gateway import ADMIN, ReplyingMatcher, balance, error_of, gateway_client
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


@pytest.fixture
def matcher(redis_url: str) -> Iterator[ReplyingMatcher]:
    # every shipped market answers: a cancel-all without a market asks each of them
    with ReplyingMatcher(redis_url, list(load_markets(DEFAULT_MARKETS_FILE).markets)) as m:
        yield m


def deposit(client: TestClient, user: str, asset: str, amount: int) -> None:
    response = client.post(
        "/v1/admin/deposits", json={"userId": user, "asset": asset, "amount": amount}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message.setdefault("userId", trader.address)
    message.setdefault("ts", int(time.time() * 1000))
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def place(client: TestClient, trader: Trader, cid: str, market: str = SPOT) -> None:
    product = "SPOT" if market == SPOT else "PERP"
    price = 1_000 if market == SPOT else 3_000_000  # a PERP order within its price band
    body = trader.order(market, "BUY", price, 10, cid=cid, product=product)
    response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code == 200, response.text


# -- cancel -----------------------------------------------------------------------------
def test_cancel_answers_200_with_the_cancelled_order(
    client: TestClient, matcher: ReplyingMatcher
) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000)
    place(client, trader, "to-cancel")
    body = signed(trader, "Cancel", market=SPOT, clientOrderId="to-cancel")
    response = client.post("/v1/orders/cancel", json=body)
    assert response.status_code == 200, response.text
    order = response.json()
    assert (order["clientOrderId"], order["status"], order["reason"]) == (
        "to-cancel",
        "CXL",
        "USER",
    )
    cancel = [c for c in matcher.seen if c["op"] == "cancel"]
    assert cancel[0]["user"] == trader.address.lower() and cancel[0]["reply"].startswith(
        "dex:{BTC-USDC}:reply:"
    )
    # The same signature again: already used (409), even though the order is closed too.
    assert error_of(client.post("/v1/orders/cancel", json=body)) == (409, "DUPLICATE")
    # A fresh signature for the finished order: ORDER_CLOSED.
    again = signed(trader, "Cancel", market=SPOT, clientOrderId="to-cancel")
    assert error_of(client.post("/v1/orders/cancel", json=again)) == (409, "ORDER_CLOSED")


def test_cancel_refusals_in_the_contract_order(
    client: TestClient, matcher: ReplyingMatcher
) -> None:
    trader, other = Trader(), Trader()
    deposit(client, trader.address, "USDC", 10_000_000)
    place(client, trader, "mine")
    now = int(time.time() * 1000)
    good = signed(trader, "Cancel", market=SPOT, clientOrderId="mine")
    cases: list[tuple[str, Any, int, str]] = [
        ("missing", {k: v for k, v in good.items() if k != "ts"}, 400, "INVALID_REQUEST"),
        ("extra", {**good, "x": 1}, 400, "INVALID_REQUEST"),
        ("bad sig text", {**good, "sig": "zz"}, 400, "INVALID_REQUEST"),
        ("bad user", {**good, "userId": "alice", "market": "NOPE"}, 400, "INVALID_USER"),
        ("unknown market", {**good, "market": "NOPE", "ts": 5}, 400, "UNKNOWN_MARKET"),
        ("stale", {**good, "ts": now - 3_600_000}, 400, "STALE_TS"),
        ("wrong signer", signed(other, "Cancel", userId=trader.address, market=SPOT,
                                clientOrderId="mine"), 401, "INVALID_SIGNATURE"),
        ("unknown order", signed(trader, "Cancel", market=SPOT, clientOrderId="nope"),
         404, "NOT_FOUND"),
        ("other market", signed(trader, "Cancel", market=PERP, clientOrderId="mine"),
         404, "NOT_FOUND"),
    ]  # fmt: skip
    for name, body, status, code in cases:
        assert error_of(client.post("/v1/orders/cancel", json=body)) == (status, code), name
    order = client.get(f"/v1/orders/{trader.address}/mine").json()
    assert order["status"] == "NEW"


def test_cancel_without_a_matcher_answer_returns_202_with_the_order_as_it_stands(
    client: TestClient,
) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000)
    client.post("/v1/orders", json=trader.order(SPOT, "BUY", 1_000, 10, cid="slow"))
    body = signed(trader, "Cancel", market=SPOT, clientOrderId="slow")
    response = client.post("/v1/orders/cancel", json=body)
    assert response.status_code == 202 and response.json()["status"] == "ACCEPTED"


def test_cancel_all_counts_what_the_matchers_cancelled(
    client: TestClient, matcher: ReplyingMatcher
) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000_000)
    for cid in ("a1", "a2"):
        place(client, trader, cid)
    place(client, trader, "p1", PERP)
    one_market = signed(trader, "CancelAll", market=PERP)
    response = client.post("/v1/orders/cancel-all", json=one_market)
    assert (response.status_code, response.json()) == (200, {"cancelled": 1})
    assert error_of(client.post("/v1/orders/cancel-all", json=one_market)) == (409, "DUPLICATE")
    every_market = signed(trader, "CancelAll", market="")
    response = client.post("/v1/orders/cancel-all", json=every_market)
    assert (response.status_code, response.json()) == (200, {"cancelled": 2})
    bad = signed(trader, "CancelAll", market="NOPE")
    assert error_of(client.post("/v1/orders/cancel-all", json=bad)) == (400, "UNKNOWN_MARKET")
    statuses = {o["status"] for o in client.get(f"/v1/accounts/{trader.address}/orders").json()}
    assert statuses == {"CXL"}


# -- withdrawals ------------------------------------------------------------------------
def test_withdrawal_debits_available_balance_once_and_is_recorded_for_the_relayer(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    deposit(client, user, "BTC", 50_000)
    client.post("/v1/orders", json=trader.order(SPOT, "SELL", 1_000, 3))  # locks 30,000
    body = signed(trader, "Withdraw", asset="BTC", amount="20000")
    response = client.post("/v1/withdrawals", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result == {
        "withdrawalId": result["withdrawalId"],
        "userId": user,
        "asset": "BTC",
        "amount": "20000",
        "status": "PENDING",
    }
    assert client.get(f"/v1/accounts/{user}/balances").json() == {"BTC": balance(30_000, 30_000)}
    assert error_of(client.post("/v1/withdrawals", json=body)) == (409, "DUPLICATE")
    more = signed(trader, "Withdraw", asset="BTC", amount=1)
    assert error_of(client.post("/v1/withdrawals", json=more)) == (422, "INSUFFICIENT_BALANCE")
    ((_, fields),) = r.xrange(keys.withdrawal_requests())
    record = orjson.loads(fields["w"])
    assert (record["withdrawalId"], record["amount"], record["userId"]) == (
        result["withdrawalId"],
        "20000",
        user,
    )
    assert r.hlen(keys.withdrawals_pending(user)) == 0
    assert r.hget(keys.balances(user), "BTC:wd") == "20000"
    listed = client.get(f"/v1/accounts/{user}/withdrawals").json()
    assert [(w["withdrawalId"], w["asset"], w["amount"], w["status"]) for w in listed] == [
        (result["withdrawalId"], "BTC", "20000", "PENDING")
    ]
    assert isinstance(listed[0]["ts"], int)


def test_withdrawal_of_a_margin_asset_is_limited_by_free_collateral(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    deposit(client, user, "USDC", 1_000_000_000)
    # A long losing 100 USDC with 310 USDC initial margin: free collateral = 1000 − 410 = 590.
    r.hset(keys.positions(user), mapping={f"{PERP}:size": 1_000, f"{PERP}:entry": 3_200_000_000})
    r.hset(keys.market_prices(PERP), mapping={"index": 3_100_000, "mark": 3_100_000})
    too_much = signed(trader, "Withdraw", asset="USDC", amount=590_000_001)
    assert error_of(client.post("/v1/withdrawals", json=too_much)) == (422, "INSUFFICIENT_MARGIN")
    exact = signed(trader, "Withdraw", asset="USDC", amount=590_000_000)
    assert client.post("/v1/withdrawals", json=exact).status_code == 200
    margin = client.get(f"/v1/accounts/{user}/margin").json()["USDC"]
    assert margin["freeCollateral"] == "0"


def test_withdrawal_refusals_in_the_contract_order(client: TestClient) -> None:
    trader, other = Trader(), Trader()
    deposit(client, trader.address, "USDC", 1_000)
    now = int(time.time() * 1000)
    good = signed(trader, "Withdraw", asset="USDC", amount=10)
    cases: list[tuple[str, Any, int, str]] = [
        ("string amount", {**good, "amount": "ten"}, 400, "INVALID_REQUEST"),
        ("zero", {**good, "amount": 0, "userId": "x"}, 400, "INVALID_REQUEST"),
        ("bad user", {**good, "userId": "x", "asset": "DOGE"}, 400, "INVALID_USER"),
        ("unknown asset", {**good, "asset": "DOGE", "ts": 1}, 400, "UNKNOWN_ASSET"),
        ("stale", {**good, "ts": now + 3_600_000}, 400, "STALE_TS"),
        ("forged", signed(other, "Withdraw", userId=trader.address, asset="USDC", amount=10),
         401, "INVALID_SIGNATURE"),
        ("too much", signed(trader, "Withdraw", asset="USDC", amount=1_001),
         422, "INSUFFICIENT_BALANCE"),
    ]  # fmt: skip
    for name, body, status, code in cases:
        assert error_of(client.post("/v1/withdrawals", json=body)) == (status, code), name
    assert client.get(f"/v1/accounts/{trader.address}/balances").json() == {"USDC": balance(1_000)}
    assert client.get(f"/v1/accounts/{trader.address}/withdrawals").json() == []
