"""Cancel-replace while a process is SIGKILLed (real gateway, matcher and settler on a real
Redis): the command waits on the market stream and is applied whole when the matcher comes
back; a refused replacement's reservation is released to the unit once the settler does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import money
from common.eip712 import sign
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
MARKET = load_markets(DEFAULT_MARKETS_FILE).markets[SPOT]
PRICE, QTY = 3_000_000, 1_000
DEPOSIT = 20_000_000_000


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def lock(price: int = PRICE, qty: int = QTY) -> int:
    return money.spot_buy_reservation(MARKET, price, qty)


def replace_body(trader: Trader, old: str, cid: str, price: int = PRICE) -> dict[str, Any]:
    message: dict[str, Any] = {
        "clientOrderId": cid, "userId": trader.address, "market": SPOT, "side": "BUY",
        "type": "LIMIT", "price": price, "qty": QTY, "product": "SPOT",
        "ts": int(time.time() * 1000), "timeInForce": "GTC", "reduceOnly": False,
        "expiresAt": 0, "cancelClientOrderId": old,
    }  # fmt: skip
    return {
        **message,
        "sig": sign(trader.key, "CancelReplace", message, CHAIN_ID, VERIFYING_CONTRACT),
    }


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def rest(exchange: Exchange, trader: Trader, cid: str) -> None:
    with exchange.client() as http:
        response = http.post(
            "/v1/orders?wait=1", json=trader.order(SPOT, "BUY", PRICE, QTY, cid=cid)
        )
    assert response.status_code == 200 and response.json()["status"] == "NEW", response.text


def test_a_replace_sent_while_the_matcher_is_killed_is_applied_whole_when_it_returns(
    exchange: Exchange,
) -> None:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", DEPOSIT)
    rest(exchange, trader, "old")
    exchange.kill("matcher")
    with exchange.client() as http:
        response = http.post(
            "/v1/orders/cancel-replace", json=replace_body(trader, "old", "new", PRICE - 2)
        )
    # no matcher to answer within the wait: both as they stand, the new one reserved
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["cancelled"]["status"], answer["order"]["status"]) == ("NEW", "ACCEPTED")
    assert exchange.balance(trader.address, "USDC") == (DEPOSIT, lock() + lock(PRICE - 2))
    exchange.start("matcher")
    assert wait_for(lambda: order(exchange, trader, "new")["status"] == "NEW", 15)
    old = order(exchange, trader, "old")
    assert (old["status"], old["reason"]) == ("CXL", "REPLACED")
    assert wait_for(
        lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, lock(PRICE - 2)), 30
    )


def test_a_failed_replace_is_released_to_the_unit_after_the_settler_is_killed(
    exchange: Exchange,
) -> None:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", DEPOSIT)
    exchange.kill("settler")
    with exchange.client() as http:
        response = http.post("/v1/orders/cancel-replace", json=replace_body(trader, "none", "lost"))
    assert response.json()["error"]["code"] == "NOT_FOUND", response.text
    rejected = order(exchange, trader, "lost")
    assert (rejected["status"], rejected["reason"]) == ("REJECTED", "REPLACE_FAILED")
    # the reservation stays locked until a settler applies the done event
    time.sleep(0.5)
    assert exchange.balance(trader.address, "USDC") == (DEPOSIT, lock())
    exchange.start("settler")
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)


def test_a_replace_on_the_outbox_path_is_applied_as_on_the_direct_one(redis_url: str) -> None:
    """DEX_ORDER_OUTBOX=1 (the Redis Cluster path on a single Redis): the command goes through
    the account's outbox, then the stream; the matcher's verdict is the same."""
    with Exchange(redis_url, DEX_ORDER_OUTBOX="1") as exchange:
        exchange.start("gateway", "matcher", "settler")
        trader = Trader()
        exchange.deposit(trader.address, "USDC", DEPOSIT)
        rest(exchange, trader, "ob-old")
        with exchange.client() as http:
            ok = http.post(
                "/v1/orders/cancel-replace", json=replace_body(trader, "ob-old", "ob-new")
            )
            failed = http.post(
                "/v1/orders/cancel-replace", json=replace_body(trader, "ob-old", "ob-x")
            )
        assert ok.status_code == 200, ok.text
        assert ok.json()["cancelled"]["reason"] == "REPLACED"
        assert failed.json()["error"]["code"] == "ORDER_CLOSED", failed.text
        assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, lock()), 30)
