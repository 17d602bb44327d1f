"""POST /v1/orders against a real Redis: every error code in the contract's order, replay
rules, and SPOT and PERP reservations to the atomic unit. A refused order changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from support.gateway import ADMIN, ReplyingMatcher, balance, error_of, gateway_client
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPOT, PERP, OPTION = "BTC-USDC", "BTC-PERP", "BTC-C-40000-20270326"


@pytest.fixture
def markets_file(tmp_path: Path) -> Path:
    """The shipped markets plus a coarse-tick market and an already expired future."""
    document = yaml.safe_load((REPO / "deploy" / "markets.yaml").read_text())
    document["markets"]["ETH-USDC"] = {
        "product": "SPOT", "base": "BTC", "quote": "USDC", "priceScale": 2, "qtyScale": 4,
        "tickSize": 10, "lotSize": 10, "minQty": 20, "makerFeeBps": 1, "takerFeeBps": 5,
        "indexPrice": 3000000,
    }  # fmt: skip
    document["markets"]["BTC-FUT-OLD"] = {
        **document["markets"]["BTC-FUT-20270326"],
        "expiryTs": 1_600_000_000_000,
    }
    path = tmp_path / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def client(redis_url: str, markets_file: Path) -> Iterator[TestClient]:
    with gateway_client(redis_url, markets_file=markets_file) as running:
        yield running


def deposit(client: TestClient, user: str, asset: str, amount: int) -> None:
    response = client.post(
        "/v1/admin/deposits", json={"userId": user, "asset": asset, "amount": amount}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


def signed(trader: Trader, primary: str, message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def order_message(trader: Trader, **fields: Any) -> dict[str, Any]:
    message = {
        "clientOrderId": f"o-{time.time_ns()}",
        "userId": trader.address,
        "market": SPOT,
        "side": "BUY",
        "type": "LIMIT",
        "price": 3_000_000,
        "qty": 1_000,
        "product": "SPOT",
        "ts": int(time.time() * 1000),
    }
    message.update(fields)
    return message


def snapshot(r: redis.Redis, user: str) -> tuple[Any, ...]:
    """Everything a refused order must leave untouched."""
    streams = tuple(r.xlen(keys.market_in(m)) for m in (SPOT, PERP, "ETH-USDC", "BTC-FUT-OLD"))
    return (
        r.hgetall(keys.balances(user.lower())),
        r.hgetall(keys.account_cids(user.lower())),
        r.hgetall(keys.reservations(user.lower())),
        r.zcard(keys.outbox(user.lower())),
        streams,
    )


# -- reservations to the unit -----------------------------------------------------------
def test_spot_buy_reserves_notional_plus_taker_fee_and_enqueues_the_command(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 5_000_000_000)
    body = trader.order(SPOT, "BUY", 3_000_000, 1_000)
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 202
    assert response.json() == {"clientOrderId": body["clientOrderId"], "status": "ACCEPTED"}
    # notional 3,000,000,000 + ceil(3e9 × 5 / 10^4) = 1,500,000
    locked = 3_001_500_000
    balances = client.get(f"/v1/accounts/{trader.address}/balances").json()
    assert balances == {"USDC": balance(5_000_000_000, locked)}
    ((_, fields),) = r.xrange(keys.market_in(SPOT))
    command = orjson.loads(fields["c"])
    assert command["reserved"] == locked and command["user"] == trader.address.lower()
    assert command["tif"] == "GTC" and command["type"] == "LIMIT"
    assert wait_for(lambda: r.zcard(keys.outbox(trader.address.lower())) == 0, 20)
    order = client.get(f"/v1/orders/{trader.address}/{body['clientOrderId']}").json()
    assert order["status"] == "ACCEPTED" and order["filled"] == 0 and order["reason"] is None


def test_spot_sell_reserves_its_base_quantity(client: TestClient) -> None:
    trader = Trader()
    deposit(client, trader.address, "BTC", 10_000_000)
    assert (
        client.post("/v1/orders", json=trader.order(SPOT, "SELL", 3_000_000, 999)).status_code
        == 202
    )
    # 999 qty units × 10^(8 − 4)
    assert client.get(f"/v1/accounts/{trader.address}/balances").json() == {
        "BTC": balance(10_000_000, 9_990_000)
    }
    response = client.post("/v1/orders", json=trader.order(SPOT, "SELL", 3_000_000, 2))
    assert error_of(response) == (422, "INSUFFICIENT_BALANCE")


def test_perp_order_is_judged_against_free_collateral_to_the_unit(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    # An open long of 0.1 BTC entered at 30,000 with the mark at 31,000: unrealized +100 USDC,
    # initial margin 10% of 3,100 USDC = 310 USDC, so free collateral = cash − locked − 210 USDC.
    r.hset(keys.positions(user), mapping={f"{PERP}:size": 1_000, f"{PERP}:entry": 3_000_000_000})
    r.hset(keys.market_prices(PERP), mapping={"index": 3_100_000, "mark": 3_100_000})
    needed = 300_000_000 + 1_500_000  # 10% initial margin + 5 bps taker fee on 3,000 USDC
    deposit(client, user, "USDC", needed + 210_000_000 - 1)
    before = snapshot(r, user)
    response = client.post(
        "/v1/orders", json=trader.order(PERP, "BUY", 3_000_000, 1_000, product="PERP")
    )
    assert error_of(response) == (422, "INSUFFICIENT_MARGIN")
    assert snapshot(r, user) == before
    deposit(client, user, "USDC", 1)
    body = trader.order(PERP, "BUY", 3_000_000, 1_000, product="PERP")
    assert client.post("/v1/orders", json=body).status_code == 202
    total = needed + 210_000_000
    assert client.get(f"/v1/accounts/{user}/balances").json() == {"USDC": balance(total, needed)}
    margin = client.get(f"/v1/accounts/{user}/margin").json()["USDC"]
    assert margin["freeCollateral"] == "0"
    assert margin["equity"] == str(total + 100_000_000)


def test_perp_order_that_only_reduces_reserves_the_fee_alone(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    r.hset(keys.positions(user), mapping={f"{PERP}:size": 1_000, f"{PERP}:entry": 3_000_000_000})
    deposit(client, user, "USDC", 10_000_000)
    body = trader.order(PERP, "SELL", 3_000_000, 1_000, product="PERP")
    assert client.post("/v1/orders", json=body).status_code == 202
    assert client.get(f"/v1/accounts/{user}/balances").json() == {
        "USDC": balance(10_000_000, 1_500_000)
    }
    # One lot more than the position is no longer a pure reduction: full margin, refused.
    body = trader.order(PERP, "SELL", 3_000_000, 1_001, product="PERP")
    assert error_of(client.post("/v1/orders", json=body)) == (422, "INSUFFICIENT_MARGIN")


def test_option_buy_reserves_its_premium_plus_fee_in_cash(client: TestClient) -> None:
    trader = Trader()
    user = trader.address.lower()
    # 0.1 BTC of calls at a premium of 1,000.00 USDC/BTC: premium 100 USDC + 5 bps fee.
    needed = 100_000_000 + 50_000
    deposit(client, user, "USDC", needed - 1)
    body = trader.order(OPTION, "BUY", 100_000, 1_000, product="OPTION")
    assert error_of(client.post("/v1/orders", json=body)) == (422, "INSUFFICIENT_MARGIN")
    deposit(client, user, "USDC", 1)
    body = trader.order(OPTION, "BUY", 100_000, 1_000, product="OPTION")
    assert client.post("/v1/orders", json=body).status_code == 202
    assert client.get(f"/v1/accounts/{user}/balances").json() == {"USDC": balance(needed, needed)}


def test_option_writer_reserves_margin_on_the_underlying_index_plus_fee(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    r.hset(keys.market_prices(OPTION), mapping={"index": 3_100_000})
    # 20% of the underlying's index notional (3,100 USDC) + 5 bps of the 100 USDC premium.
    needed = 620_000_000 + 50_000
    deposit(client, user, "USDC", needed)
    body = trader.order(OPTION, "SELL", 100_000, 1_000, product="OPTION")
    assert client.post("/v1/orders", json=body).status_code == 202
    assert client.get(f"/v1/accounts/{user}/balances").json() == {"USDC": balance(needed, needed)}


def test_market_buy_at_price_zero_reserves_the_whole_available_quote_as_budget(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    response = client.post(
        "/v1/orders", json=trader.order(SPOT, "BUY", 0, 1_000, type="MARKET", timeInForce="IOC")
    )
    assert error_of(response) == (422, "INSUFFICIENT_BALANCE")
    deposit(client, user, "USDC", 7_000_000_000)
    assert (
        client.post("/v1/orders", json=trader.order(SPOT, "BUY", 3_000_000, 1_000)).status_code
        == 202
    )
    body = trader.order(SPOT, "BUY", 0, 1_000, type="MARKET")
    assert client.post("/v1/orders", json=body).status_code == 202
    assert client.get(f"/v1/accounts/{user}/balances").json() == {
        "USDC": balance(7_000_000_000, 7_000_000_000)
    }
    commands = [orjson.loads(f["c"]) for _, f in r.xrange(keys.market_in(SPOT))]
    assert commands[-1]["reserved"] == 7_000_000_000 - 3_001_500_000
    assert commands[-1]["price"] == 0 and commands[-1]["type"] == "MARKET"


def test_market_order_with_protection_price_reserves_like_a_limit(client: TestClient) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 5_000_000_000)
    body = trader.order(SPOT, "BUY", 3_000_000, 1_000, type="MARKET", timeInForce="FOK")
    assert client.post("/v1/orders", json=body).status_code == 202
    assert client.get(f"/v1/accounts/{trader.address}/balances").json() == {
        "USDC": balance(5_000_000_000, 3_001_500_000)
    }
    order = client.get(f"/v1/orders/{trader.address}/{body['clientOrderId']}").json()
    assert (order["type"], order["timeInForce"]) == ("MARKET", "FOK")


# -- errors in the contract's order -----------------------------------------------------
def test_each_refusal_answers_the_first_failing_check_and_changes_nothing(
    client: TestClient, r: redis.Redis
) -> None:
    trader, other = Trader(), Trader()
    deposit(client, trader.address, "USDC", 10_000_000)
    used = trader.order(SPOT, "BUY", 1_000, 10)
    assert client.post("/v1/orders", json=used).status_code == 202
    now = int(time.time() * 1000)
    base = order_message(trader, price=1_000, qty=10)
    good = signed(trader, "Order", base)
    cases: list[tuple[str, Any, int, str]] = [
        ("not json", b"{not json", 400, "INVALID_REQUEST"),
        ("array", b"[1, 2]", 400, "INVALID_REQUEST"),
        ("missing field", {k: v for k, v in good.items() if k != "qty"}, 400, "INVALID_REQUEST"),
        ("extra field", {**good, "leverage": 10}, 400, "INVALID_REQUEST"),
        ("float price", {**good, "price": 1.5, "userId": "nope"}, 400, "INVALID_REQUEST"),
        ("boolean qty", {**good, "qty": True}, 400, "INVALID_REQUEST"),
        ("negative qty", {**good, "qty": -5}, 400, "INVALID_REQUEST"),
        ("digits with sign", {**good, "qty": "+5"}, 400, "INVALID_REQUEST"),
        ("short sig", {**good, "sig": "0x1234"}, 400, "INVALID_REQUEST"),
        ("bad user and market", {**good, "userId": "0x12", "market": "X"}, 400, "INVALID_USER"),
        ("unknown market", {**good, "market": "DOGE-USDC", "price": 0}, 400, "UNKNOWN_MARKET"),
        ("limit at zero", {**good, "price": 0, "qty": 0}, 400, "INVALID_PRICE"),
        ("price off tick", {**good, "market": "ETH-USDC", "price": 1_005}, 400, "INVALID_PRICE"),
        ("price 2^53", {**good, "price": 2**53}, 400, "INVALID_PRICE"),
        ("price 2^70", {**good, "price": 2**70}, 400, "INVALID_PRICE"),
        ("qty 2^256", {**good, "qty": 2**256}, 400, "INVALID_REQUEST"),
        ("NaN qty", b'{"qty": NaN}', 400, "INVALID_REQUEST"),
        ("qty zero", {**good, "qty": 0, "side": "buy"}, 400, "INVALID_QTY"),
        (
            "qty off lot",
            {**good, "market": "ETH-USDC", "price": 1_000, "qty": 25},
            400,
            "INVALID_QTY",
        ),
        (
            "below minQty",
            {**good, "market": "ETH-USDC", "price": 1_000, "qty": 10},
            400,
            "INVALID_QTY",
        ),
        ("lower-case side", {**good, "side": "buy", "ts": 1}, 400, "INVALID_ORDER"),
        ("unknown type", {**good, "type": "STOP"}, 400, "INVALID_ORDER"),
        ("product mismatch", {**good, "product": "PERP"}, 400, "INVALID_ORDER"),
        ("bad client id", {**good, "clientOrderId": "a b"}, 400, "INVALID_ORDER"),
        ("long client id", {**good, "clientOrderId": "x" * 65}, 400, "INVALID_ORDER"),
        (
            "post-only market",
            {
                **good,
                "type": "MARKET",
                "timeInForce": "POST_ONLY",
                "reduceOnly": False,
                "expiresAt": 0,
            },
            400,
            "INVALID_ORDER",
        ),
        (
            "unknown tif",
            {**good, "timeInForce": "GTD", "reduceOnly": False, "expiresAt": 0},
            400,
            "INVALID_ORDER",
        ),
        (
            "expired expiresAt",
            {**good, "timeInForce": "GTC", "reduceOnly": False, "expiresAt": now - 1},
            400,
            "INVALID_ORDER",
        ),
        ("stale ts", {**good, "ts": now - 120_000}, 400, "STALE_TS"),
        ("future ts", {**good, "ts": now + 120_000}, 400, "STALE_TS"),
        ("wrong signer", signed(other, "Order", base), 401, "INVALID_SIGNATURE"),
        ("tampered", {**good, "qty": 20}, 401, "INVALID_SIGNATURE"),
        ("replayed id", {**used, "qty": 10_000}, 401, "INVALID_SIGNATURE"),
        ("replayed order", used, 409, "DUPLICATE"),
    ]
    for name, body, status, code in cases:
        before = snapshot(r, trader.address)
        if isinstance(body, bytes):
            response = client.post("/v1/orders", content=body)
        else:
            response = client.post("/v1/orders", json=body)
        assert error_of(response) == (status, code), (name, response.text)
        assert snapshot(r, trader.address) == before, name


def test_duplicate_client_order_id_is_refused_forever_even_after_the_order_ends(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000_000)
    first = trader.order(SPOT, "BUY", 1_000, 10, cid="same-id")
    assert client.post("/v1/orders", json=first).status_code == 202
    user = trader.address.lower()
    r.hset(keys.market_order(SPOT, user, "same-id"), mapping={"status": "FILLED"})
    again = trader.order(SPOT, "BUY", 2_000, 10, cid="same-id")
    assert error_of(client.post("/v1/orders", json=again)) == (409, "DUPLICATE")
    # The same id in another market is the same (userId, clientOrderId) pair.
    other_market = trader.order(PERP, "BUY", 3_000_000, 10, cid="same-id", product="PERP")
    assert error_of(client.post("/v1/orders", json=other_market)) == (409, "DUPLICATE")


def test_user_id_is_compared_case_insensitively(client: TestClient) -> None:
    trader = Trader()
    deposit(client, trader.address.lower(), "USDC", 10_000_000_000)
    for user in (trader.address, trader.address.lower(), "0x" + trader.address[2:].upper()):
        body = signed(trader, "Order", order_message(trader, userId=user, price=1_000, qty=10))
        assert client.post("/v1/orders", json=body).status_code == 202, user
    listed = client.get(f"/v1/accounts/{trader.address.upper().replace('0X', '0x')}/orders")
    assert len(listed.json()) == 3


def test_within_422_the_balance_answers_before_the_market_status(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    r.hset(keys.market_state(SPOT), "status", "HALTED")
    body = trader.order(SPOT, "BUY", 1_000, 10)
    assert error_of(client.post("/v1/orders", json=body)) == (422, "INSUFFICIENT_BALANCE")
    deposit(client, trader.address, "USDC", 10_000_000)
    before = snapshot(r, trader.address)
    body = trader.order(SPOT, "BUY", 1_000, 10)
    assert error_of(client.post("/v1/orders", json=body)) == (422, "MARKET_HALTED")
    assert snapshot(r, trader.address) == before
    r.hset(keys.market_state(SPOT), "status", "EXPIRED")
    time.sleep(0.3)  # the gateway trusts a market's status for a quarter second
    body = trader.order(SPOT, "BUY", 1_000, 10)
    assert error_of(client.post("/v1/orders", json=body)) == (422, "MARKET_CLOSED")


def test_a_future_past_its_expiry_is_closed_even_before_the_matcher_says_so(
    client: TestClient,
) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000_000)
    body = trader.order("BTC-FUT-OLD", "BUY", 3_000_000, 10, product="FUTURE")
    assert error_of(client.post("/v1/orders", json=body)) == (422, "MARKET_CLOSED")
    assert client.get("/v1/markets/BTC-FUT-OLD").json()["status"] == "EXPIRED"


def test_overloaded_market_refuses_writes_with_503_after_every_other_check(
    redis_url: str, markets_file: Path, r: redis.Redis
) -> None:
    for _ in range(3):
        r.xadd(keys.market_in(SPOT), {"c": "{}"})
    with gateway_client(redis_url, markets_file=markets_file, max_backlog=2) as client:
        trader = Trader()
        body = trader.order(SPOT, "BUY", 1_000, 10)
        assert error_of(client.post("/v1/orders", json=body)) == (422, "INSUFFICIENT_BALANCE")
        deposit(client, trader.address, "USDC", 10_000_000)
        before = snapshot(r, trader.address)
        body = trader.order(SPOT, "BUY", 1_000, 10)
        assert error_of(client.post("/v1/orders", json=body)) == (503, "OVERLOADED")
        assert snapshot(r, trader.address) == before
        # Another market's stream is not behind.
        body = trader.order(PERP, "BUY", 3_000_000, 10, product="PERP")
        assert client.post("/v1/orders", json=body).status_code == 202
        # Cancels write to the stream too: refused after every other check, nothing claimed.
        cancel = signed(
            trader,
            "Cancel",
            {"userId": trader.address, "market": PERP, "clientOrderId": body["clientOrderId"],
             "ts": int(time.time() * 1000)},
        )  # fmt: skip
        cancel_all = signed(
            trader, "CancelAll", {"userId": trader.address, "market": SPOT, "ts": cancel["ts"]}
        )
        for _ in range(3):
            r.xadd(keys.market_in(PERP), {"c": "{}"})
        time.sleep(0.6)  # past the backlog figure's cache
        assert error_of(client.post("/v1/orders/cancel", json=cancel)) == (503, "OVERLOADED")
        assert error_of(client.post("/v1/orders/cancel-all", json=cancel_all)) == (
            503,
            "OVERLOADED",
        )
        assert not list(r.scan_iter("dex:*:sig:*"))


def test_order_v2_fields_reach_the_matcher_command(client: TestClient, r: redis.Redis) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000_000)
    expires = int(time.time() * 1000) + 3_600_000
    body = trader.order(
        SPOT, "BUY", 1_000, 10, timeInForce="POST_ONLY", reduceOnly=False, expiresAt=expires
    )
    assert client.post("/v1/orders", json=body).status_code == 202
    ((_, fields),) = r.xrange(keys.market_in(SPOT))
    command = orjson.loads(fields["c"])
    assert (command["tif"], command["reduceOnly"], command["expiresAt"]) == (
        "POST_ONLY",
        False,
        expires,
    )
    order = client.get(f"/v1/orders/{trader.address}/{body['clientOrderId']}").json()
    assert order["timeInForce"] == "POST_ONLY" and order["expiresAt"] == expires


def test_wait_returns_the_order_as_the_matcher_left_it(client: TestClient, redis_url: str) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000_000)
    with ReplyingMatcher(redis_url, [SPOT]):
        body = trader.order(SPOT, "BUY", 1_000, 10)
        response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code == 200
    order = response.json()
    assert order["status"] == "NEW" and order["clientOrderId"] == body["clientOrderId"]
    assert order["userId"] == trader.address.lower() and order["price"] == 1_000


def test_wait_without_an_answer_gives_202_with_the_order_as_it_stands(client: TestClient) -> None:
    trader = Trader()
    deposit(client, trader.address, "USDC", 10_000_000_000)
    body = trader.order(SPOT, "BUY", 1_000, 10)
    started = time.monotonic()
    response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code == 202
    assert response.json()["status"] == "ACCEPTED"
    assert time.monotonic() - started >= 4.5
