"""DEX_MAX_OPEN_ORDERS (API.md §1, §5): orders one account may have open in one market.

One more is 422 TOO_MANY_ORDERS and changes nothing; the count falls once an order finishes
and the settler has applied its done event; each market is counted on its own; among the
422 codes the first listed that applies answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from support.exchange import ADMIN_TOKEN, Exchange
from support.gateway import error_of, gateway_client
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
LIMIT = 5
PRICE, QTY = 3_000_000, 100  # 30,000.00 USDC × 0.01 BTC: 300 USDC + 0.15 taker fee reserved
RESERVED = 300_150_000
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url, DEX_MAX_OPEN_ORDERS=str(LIMIT)) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def post(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/orders?wait=1", json=body)


def state(http: httpx.Client, user: str) -> tuple[Any, Any, Any]:
    """What a refusal must leave as it was: balances, every order, the open ones."""
    return (
        http.get(f"/v1/accounts/{user}/balances").json(),
        http.get(f"/v1/accounts/{user}/orders").json(),
        http.get(f"/v1/accounts/{user}/orders?open=1").json(),
    )


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message.setdefault("userId", trader.address)
    message.setdefault("ts", int(time.time() * 1000))
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def reserve(price: int) -> int:
    """A resting SPOT buy of QTY reserves its notional plus the taker fee (5 bps, rounded up)."""
    notional = price * QTY
    return notional - (-notional * 5 // 10_000)


def usdc(http: httpx.Client, user: str) -> tuple[int, int]:
    balance = http.get(f"/v1/accounts/{user}/balances").json().get("USDC", {})
    return int(balance.get("total", 0)), int(balance.get("locked", 0))


def test_one_order_past_the_limit_is_refused_until_one_finishes(
    exchange: Exchange, r: redis.Redis
) -> None:
    maker, taker = Trader(), Trader()
    user = maker.address.lower()
    funded = 100 * RESERVED
    exchange.deposit(maker.address, "USDC", funded)
    exchange.deposit(maker.address, "BTC", 100_000_000)
    exchange.deposit(taker.address, "BTC", 100_000_000)
    with exchange.client() as http:
        cids = []
        for i in range(LIMIT):
            response = post(http, maker.order(SPOT, "BUY", PRICE - i, QTY))
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "NEW"
            cids.append(response.json()["clientOrderId"])
        locked = sum(reserve(PRICE - i) for i in range(LIMIT))
        assert usdc(http, maker.address) == (funded, locked)
        before = state(http, maker.address)
        refused = maker.order(SPOT, "BUY", PRICE - 10, QTY, cid="one-too-many")
        assert error_of(post(http, refused)) == (422, "TOO_MANY_ORDERS")
        assert state(http, maker.address) == before
        assert error_of(http.get(f"/v1/orders/{maker.address}/one-too-many")) == (404, "NOT_FOUND")
        assert r.zcard(keys.account_open_orders(user, SPOT)) == LIMIT
        assert r.hget(keys.account_cids(user), "one-too-many") is None

        # Orders on the same side of another market are counted there, not here.
        other = post(http, maker.order(SPOT, "SELL", 4_000_000, QTY))
        assert error_of(other) == (422, "TOO_MANY_ORDERS")  # sells count in the same market
        perp = post(http, maker.order(PERP, "BUY", PRICE, QTY, product="PERP"))
        assert perp.status_code == 200, perp.text
        assert perp.json()["status"] == "NEW"
        assert r.zcard(keys.account_open_orders(user, PERP)) == 1

        perp_reserve = PRICE * QTY // 10 + reserve(PRICE) - PRICE * QTY  # 10 % margin + fee
        assert usdc(http, maker.address) == (funded, locked + perp_reserve)
        locked += perp_reserve

        # A cancel finishes one: once the settler applies its done event a slot is free.
        cancel = signed(maker, "Cancel", market=SPOT, clientOrderId=cids[0])
        assert http.post("/v1/orders/cancel", json=cancel).json()["status"] == "CXL"
        assert wait_for(lambda: r.zcard(keys.account_open_orders(user, SPOT)) == LIMIT - 1, 30)
        assert usdc(http, maker.address) == (funded, locked - reserve(PRICE))
        # the same signed body again: the refusal burned nothing, so its id is still free
        again = post(http, refused)
        assert again.status_code == 200, again.text
        assert again.json()["clientOrderId"] == "one-too-many"
        assert error_of(post(http, maker.order(SPOT, "BUY", PRICE - 11, QTY))) == (
            422,
            "TOO_MANY_ORDERS",
        )

        # A fill finishes one too: the taker sells into the best bid, wholly.
        filled = post(http, taker.order(SPOT, "SELL", PRICE - 1, QTY))
        assert filled.json()["status"] == "FILLED", filled.text
        assert http.get(f"/v1/orders/{maker.address}/{cids[1]}").json()["status"] == "FILLED"
        assert wait_for(lambda: r.zcard(keys.account_open_orders(user, SPOT)) == LIMIT - 1, 30)
        last = post(http, maker.order(SPOT, "BUY", PRICE - 12, QTY))
        assert last.status_code == 200, last.text
        assert error_of(post(http, maker.order(SPOT, "BUY", PRICE - 13, QTY))) == (
            422,
            "TOO_MANY_ORDERS",
        )
        opened = http.get(f"/v1/accounts/{maker.address}/orders?open=1&market={SPOT}").json()
        assert len(opened) == LIMIT
        assert cids[0] not in {o["clientOrderId"] for o in opened}
        assert cids[1] not in {o["clientOrderId"] for o in opened}


def test_earlier_422_codes_answer_before_too_many_orders(exchange: Exchange) -> None:
    maker = Trader()
    exchange.deposit(maker.address, "USDC", LIMIT * RESERVED)
    with exchange.client() as http:
        for _ in range(LIMIT):
            assert post(http, maker.order(SPOT, "BUY", PRICE, QTY)).status_code == 200
        before = state(http, maker.address)
        # nothing left available: INSUFFICIENT_BALANCE is listed first and answers
        assert error_of(post(http, maker.order(SPOT, "BUY", PRICE, QTY))) == (
            422,
            "INSUFFICIENT_BALANCE",
        )
        exchange.deposit(maker.address, "USDC", RESERVED)
        halted = http.post(f"/v1/admin/markets/{SPOT}/halt", headers=ADMIN)
        assert halted.status_code == 200, halted.text
        assert wait_for(lambda: http.get(f"/v1/markets/{SPOT}").json()["status"] == "HALTED", 10)
        assert error_of(post(http, maker.order(SPOT, "BUY", PRICE, QTY))) == (
            422,
            "MARKET_HALTED",
        )
        assert http.post(f"/v1/admin/markets/{SPOT}/resume", headers=ADMIN).status_code == 200
        assert wait_for(lambda: http.get(f"/v1/markets/{SPOT}").json()["status"] == "OPEN", 10)
        assert error_of(post(http, maker.order(SPOT, "BUY", PRICE, QTY))) == (
            422,
            "TOO_MANY_ORDERS",
        )
        balances, orders, opened = state(http, maker.address)
        assert (orders, opened) == before[1:]
        assert balances["USDC"] == {
            "total": str((LIMIT + 1) * RESERVED),
            "available": str(RESERVED),
            "locked": str(LIMIT * RESERVED),
        }


@pytest.fixture(params=[False, True], ids=["stream", "outbox"])
def client(redis_url: str, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The gateway admitting onto the market stream in the script, or through the outbox (the
    Redis Cluster path, where the script gets no stream key)."""
    with gateway_client(redis_url, order_outbox=request.param) as running:
        yield running


def test_default_limit_is_200_open_orders_per_market(client: TestClient, r: redis.Redis) -> None:
    """No matcher runs: accepted orders wait in the stream, and they count as open."""
    trader = Trader()
    user = trader.address.lower()
    deposit = {"userId": trader.address, "asset": "USDC", "amount": str(300 * RESERVED)}
    assert client.post("/v1/admin/deposits", json=deposit, headers=ADMIN).status_code == 200
    for _ in range(200):
        response = client.post("/v1/orders", json=trader.order(SPOT, "BUY", PRICE, QTY))
        assert response.status_code == 202, response.text
    before = r.hgetall(keys.balances(user)), r.xlen(keys.market_in(SPOT))
    assert error_of(client.post("/v1/orders", json=trader.order(SPOT, "BUY", PRICE, QTY))) == (
        422,
        "TOO_MANY_ORDERS",
    )
    assert (r.hgetall(keys.balances(user)), r.xlen(keys.market_in(SPOT))) == before
    assert before[0][keys.locked_field("USDC")] == str(200 * RESERVED)
    opened = client.get(f"/v1/accounts/{user}/orders?open=1&limit=1000").json()
    assert len(opened) == 200 and {o["status"] for o in opened} == {"ACCEPTED"}
    perp = client.post("/v1/orders", json=trader.order(PERP, "BUY", PRICE, QTY, product="PERP"))
    assert perp.status_code == 202, perp.text
