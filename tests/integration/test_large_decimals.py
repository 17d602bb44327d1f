"""An 18-decimal asset (ETH, quantum 10^9 wei) on a real Redis: amounts in wei on the wire,
gwei inside, nothing rounded, and nothing at or past 2^53 quanta (API.md §2 "Large decimals").

Admission runs in the real gateway app (its Lua scripts on the real redis-server, a stand-in
matcher answering its commands); the trade runs through the real gateway, matcher and Celery
settler processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from support.exchange import ADMIN_TOKEN, Exchange
from support.gateway import ADMIN, ReplyingMatcher, balance, error_of, gateway_client
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

ETH_SPOT, ETH_PERP = "ETH-USDC", "ETH-PERP"
WEI = 1
GWEI = 10**9  # ETH's quantum: the default 10^(18 - 9)
ETHER = 10**18
LIMIT = 2**53  # in quanta
# The smallest ETH-USDC price (priceScale 2) at which one ether (qty 10_000) is 2^53 USDC units.
PRICE_AT_LIMIT = -(-LIMIT // 10_000)


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


@pytest.fixture
def matcher(redis_url: str) -> Iterator[ReplyingMatcher]:
    with ReplyingMatcher(redis_url, [ETH_SPOT, ETH_PERP]) as m:
        yield m


def deposit(client: TestClient, user: str, asset: str, amount: int | str) -> Any:
    return client.post(
        "/v1/admin/deposits",
        json={"userId": user, "asset": asset, "amount": str(amount)},
        headers=ADMIN,
    )


def push_index(client: TestClient, market: str, price: int) -> None:
    """Move the market's index (and so its mark) to ``price``, so orders there are in band."""
    response = client.post(
        "/v1/admin/oracle", json={"market": market, "indexPrice": price}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


def balances(client: TestClient, user: str) -> dict[str, Any]:
    response = client.get(f"/v1/accounts/{user}/balances")
    assert response.status_code == 200, response.text
    return dict(response.json())


def withdrawal(trader: Trader, asset: str, amount: int) -> dict[str, Any]:
    message = {
        "userId": trader.address,
        "asset": asset,
        "amount": str(amount),
        "ts": int(time.time() * 1000),
    }
    return {**message, "sig": sign(trader.key, "Withdraw", message, CHAIN_ID, VERIFYING_CONTRACT)}


def account_state(r: redis.Redis, user: str) -> dict[str, Any]:
    """Everything an admission or a withdrawal may write on an account."""
    return {
        "bal": r.hgetall(keys.balances(user)),
        "res": r.hgetall(keys.reservations(user)),
        "cids": r.hgetall(keys.account_cids(user)),
        "orders": r.zrange(keys.account_orders(user), 0, -1),
        "withdrawals": r.xlen(keys.account_withdrawals(user)),
        "relayer": r.xlen(keys.withdrawal_requests()),
        "streams": {m: r.xlen(keys.market_in(m)) for m in (ETH_SPOT, ETH_PERP)},
    }


# -- deposits ---------------------------------------------------------------------------
def test_one_ether_deposit_credits_and_reads_back_in_wei(
    client: TestClient, r: redis.Redis
) -> None:
    user = Trader().address
    response = deposit(client, user, "ETH", ETHER)
    assert response.status_code == 200, response.text
    assert response.json() == balance(1_000_000_000_000_000_000)
    assert balances(client, user) == {"ETH": balance(1_000_000_000_000_000_000)}
    # inside, the exchange counts gwei
    assert r.hget(keys.balances(user.lower()), "ETH:t") == "1000000000"
    assert client.get("/v1/info").json()["assets"]["ETH"] == {"decimals": 18, "quantum": GWEI}


def test_off_quantum_deposit_is_refused_and_changes_nothing(
    client: TestClient, r: redis.Redis
) -> None:
    user = Trader().address
    assert error_of(deposit(client, user, "ETH", ETHER + WEI)) == (400, "INVALID_REQUEST")
    assert balances(client, user) == {}
    assert r.exists(keys.balances(user.lower())) == 0
    assert deposit(client, user, "ETH", ETHER).status_code == 200
    before = account_state(r, user.lower())
    response = deposit(client, user, "ETH", GWEI - 1)
    assert error_of(response) == (400, "INVALID_REQUEST")
    assert "quantum 1000000000" in response.json()["error"]["message"]
    assert account_state(r, user.lower()) == before
    assert balances(client, user) == {"ETH": balance(ETHER)}


def test_an_account_holds_a_million_ether_exactly(client: TestClient) -> None:
    user = Trader().address
    assert deposit(client, user, "ETH", 10**6 * ETHER).status_code == 200
    assert deposit(client, user, "ETH", GWEI).status_code == 200
    assert balances(client, user) == {"ETH": balance(1_000_000_000_000_001_000_000_000)}


def test_deposit_that_would_take_a_balance_to_2_53_quanta_is_refused_and_changes_nothing(
    client: TestClient, r: redis.Redis
) -> None:
    user = Trader().address
    most = (LIMIT - 1) * GWEI  # 9,007,199.254740991 ETH: the largest balance there can be
    assert deposit(client, user, "ETH", most).status_code == 200
    before = account_state(r, user.lower())
    assert error_of(deposit(client, user, "ETH", GWEI)) == (422, "LIMIT_EXCEEDED")
    assert account_state(r, user.lower()) == before
    assert balances(client, user) == {"ETH": balance(9_007_199_254_740_991_000_000_000)}
    # an amount past the limit by itself, on an empty account: refused, nothing written
    other = Trader().address
    assert error_of(deposit(client, other, "ETH", LIMIT * GWEI)) == (422, "LIMIT_EXCEEDED")
    assert error_of(deposit(client, other, "ETH", 10**70)) == (422, "LIMIT_EXCEEDED")
    assert r.exists(keys.balances(other.lower())) == 0
    # the same holds for an asset counted in atomic units (quantum 1)
    assert deposit(client, other, "USDC", LIMIT - 1).status_code == 200
    assert error_of(deposit(client, other, "USDC", 1)) == (422, "LIMIT_EXCEEDED")
    assert balances(client, other) == {"USDC": balance(LIMIT - 1)}


# -- withdrawals ------------------------------------------------------------------------
def test_ether_withdrawal_must_be_whole_quanta_and_debits_exactly(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    assert deposit(client, user, "ETH", ETHER).status_code == 200
    before = account_state(r, user)
    off = withdrawal(trader, "ETH", ETHER // 10 + WEI)
    assert error_of(client.post("/v1/withdrawals", json=off)) == (400, "INVALID_REQUEST")
    assert account_state(r, user) == before

    amount = ETHER // 10 + GWEI  # 0.100000001 ETH
    response = client.post("/v1/withdrawals", json=withdrawal(trader, "ETH", amount))
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == "100000001000000000"
    assert balances(client, user) == {"ETH": balance(899_999_999_000_000_000)}
    assert r.hget(keys.balances(user), "ETH:wd") == "100000001"  # quanta inside
    listed = client.get(f"/v1/accounts/{user}/withdrawals").json()
    assert [(w["asset"], w["amount"]) for w in listed] == [("ETH", "100000001000000000")]
    ((_, fields),) = r.xrange(keys.withdrawal_requests())
    assert orjson.loads(fields["w"])["amount"] == "100000001000000000"  # the relayer's wei

    # a withdrawal of 2^53 quanta or more can never be covered: the first 422 that applies
    before = account_state(r, user)
    huge = withdrawal(trader, "ETH", LIMIT * GWEI)
    assert error_of(client.post("/v1/withdrawals", json=huge)) == (422, "INSUFFICIENT_BALANCE")
    assert account_state(r, user) == before


# -- orders -----------------------------------------------------------------------------
def test_order_whose_notional_reaches_2_53_quanta_is_limit_exceeded(
    client: TestClient, matcher: ReplyingMatcher, r: redis.Redis
) -> None:
    seller = Trader()
    user = seller.address.lower()
    assert deposit(client, user, "ETH", 2 * ETHER).status_code == 200
    before = account_state(r, user)
    at_limit = seller.order(ETH_SPOT, "SELL", PRICE_AT_LIMIT, 10_000)
    response = client.post("/v1/orders", json=at_limit)
    assert error_of(response) == (422, "LIMIT_EXCEEDED"), response.text
    assert account_state(r, user) == before
    cid = at_limit["clientOrderId"]
    assert client.get(f"/v1/orders/{user}/{cid}").status_code == 404

    # one tick lower the notional is 2^53 - 7,000 USDC units: accepted, one ether locked
    below = seller.order(ETH_SPOT, "SELL", PRICE_AT_LIMIT - 1, 10_000)
    response = client.post("/v1/orders?wait=1", json=below)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "NEW"
    assert balances(client, user) == {"ETH": balance(2 * ETHER, ETHER)}


def test_limit_exceeded_answers_after_the_422_codes_listed_before_it(
    client: TestClient, matcher: ReplyingMatcher, r: redis.Redis
) -> None:
    buyer = Trader()
    user = buyer.address.lower()
    assert deposit(client, user, "USDC", 10**15).status_code == 200
    push_index(client, ETH_PERP, PRICE_AT_LIMIT)
    before = account_state(r, user)
    # a SPOT buy that large cannot be paid for: INSUFFICIENT_BALANCE comes first
    spot = buyer.order(ETH_SPOT, "BUY", PRICE_AT_LIMIT, 10_000)
    assert error_of(client.post("/v1/orders", json=spot)) == (422, "INSUFFICIENT_BALANCE")
    # a PERP buy whose margin (10 % + fee) the account covers: LIMIT_EXCEEDED
    perp = buyer.order(ETH_PERP, "BUY", PRICE_AT_LIMIT, 10_000, product="PERP")
    assert error_of(client.post("/v1/orders", json=perp)) == (422, "LIMIT_EXCEEDED")
    assert account_state(r, user) == before
    # and one whose margin it does not cover: INSUFFICIENT_MARGIN first
    poorer = Trader()
    assert deposit(client, poorer.address, "USDC", 10**14).status_code == 200
    perp = poorer.order(ETH_PERP, "BUY", PRICE_AT_LIMIT, 10_000, product="PERP")
    assert error_of(client.post("/v1/orders", json=perp)) == (422, "INSUFFICIENT_MARGIN")


def test_order_that_would_take_a_position_value_to_2_53_quanta_is_limit_exceeded(
    client: TestClient, matcher: ReplyingMatcher, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    assert deposit(client, user, "USDC", 10**15).status_code == 200
    price = PRICE_AT_LIMIT - 1  # qty 10_000 alone is worth 2^53 - 7,000 USDC units
    push_index(client, ETH_PERP, price)
    # the account is long 0.0001 ETH (one lot) bought at 3,000.00
    r.hset(keys.positions(user), mapping={f"{ETH_PERP}:size": 1, f"{ETH_PERP}:entry": 300_000})
    before = account_state(r, user)
    grows = trader.order(ETH_PERP, "BUY", price, 10_000, product="PERP")
    assert error_of(client.post("/v1/orders", json=grows)) == (422, "LIMIT_EXCEEDED")
    assert account_state(r, user) == before
    # the same order on the other side shrinks the position's value below the limit
    sells = trader.order(ETH_PERP, "SELL", price, 10_000, product="PERP")
    response = client.post("/v1/orders?wait=1", json=sells)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "NEW"


def test_lock_that_would_take_the_locked_total_to_2_53_quanta_is_limit_exceeded(
    client: TestClient, matcher: ReplyingMatcher, r: redis.Redis
) -> None:
    """The account script judges the locked total itself: unrealized gains (free collateral
    beyond the cash total) can cover a lock that takes it to 2^53 quanta."""
    trader = Trader()
    user = trader.address.lower()
    assert deposit(client, user, "USDC", LIMIT - 1).status_code == 200
    # long one lot entered at 0: 300,000 units of unrealized gain at the mark
    r.hset(keys.positions(user), mapping={f"{ETH_PERP}:size": 1, f"{ETH_PERP}:entry": 0})
    r.hset(keys.balances(user), "USDC:l", LIMIT - 100)
    before = account_state(r, user)
    order = trader.order(ETH_PERP, "BUY", 300_000, 1, product="PERP")  # locks 30,150
    assert error_of(client.post("/v1/orders", json=order)) == (422, "LIMIT_EXCEEDED")
    assert account_state(r, user) == before


# -- a trade through the real processes -------------------------------------------------
@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url, DEX_MATCHER_MARKETS=ETH_SPOT) as running:
        running.start("gateway", "matcher", "settler")
        running.wait_ready("gateway")
        yield running


def get(exchange: Exchange, path: str, **headers: str) -> Any:
    with exchange.client() as http:
        response = http.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_eth_usdc_trade_settles_both_sides_to_the_wei_and_the_usdc_unit(
    exchange: Exchange,
) -> None:
    seller, buyer = Trader(), Trader()
    exchange.deposit(seller.address, "ETH", 2 * ETHER)
    exchange.deposit(buyer.address, "USDC", 10_000_000_000)  # 10,000 USDC
    price, qty = 300_012, 12_345  # 1.2345 ETH at 3,000.12 USDC
    notional = price * qty  # 3,703,648,140 USDC units
    taker_fee = -(-notional * 5 // 10_000)  # 1,851,825 (rounded up)
    maker_fee = -(-notional * 1 // 10_000)  # 370,365
    delivered = qty * 10**14  # 1,234,500,000,000,000,000 wei
    assert (notional, taker_fee, maker_fee) == (3_703_648_140, 1_851_825, 370_365)

    with exchange.client() as http:
        rest = http.post("/v1/orders?wait=1", json=seller.order(ETH_SPOT, "SELL", price, qty))
        assert rest.status_code == 200 and rest.json()["status"] == "NEW", rest.text
        take = http.post("/v1/orders?wait=1", json=buyer.order(ETH_SPOT, "BUY", price, qty))
        assert take.status_code == 200 and take.json()["status"] == "FILLED", take.text

    expected = {
        seller.address: {
            "ETH": balance(2 * ETHER - delivered),
            "USDC": balance(notional - maker_fee),
        },
        buyer.address: {
            "ETH": balance(delivered),
            "USDC": balance(10_000_000_000 - notional - taker_fee),
        },
    }

    def settled() -> bool:
        return all(
            get(exchange, f"/v1/accounts/{user}/balances") == want
            for user, want in expected.items()
        )

    assert wait_for(settled, 30), exchange.log("settler")[-3000:]
    assert expected[seller.address]["ETH"]["total"] == "765500000000000000"
    assert expected[buyer.address]["USDC"]["total"] == "6294500035"
    system = get(exchange, "/v1/system/accounts")
    assert system["fees"] == {"USDC": str(taker_fee + maker_fee)}
    fills = get(exchange, f"/v1/accounts/{buyer.address}/fills")
    assert [(f["qty"], f["fee"], f["liquidity"]) for f in fills] == [(qty, str(taker_fee), "TAKER")]
    ticker = get(exchange, f"/v1/markets/{ETH_SPOT}/ticker")
    assert (ticker["volume24h"], ticker["quoteVolume24h"]) == (qty, notional)
    report = get(exchange, "/v1/admin/audit", Authorization=f"Bearer {ADMIN_TOKEN}")
    assert report["ok"], report["invariants"]
    assert report["assets"]["ETH"] == {
        "deposits": "2000000000000000000",
        "withdrawals": "0",
        "userTotals": "2000000000000000000",
        "fees": "0",
        "insurance": "0",
        "entryNotional": "0",
        "difference": "0",
    }
