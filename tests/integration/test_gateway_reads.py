"""Read endpoints, admin endpoints, OpenAPI and metrics against a real Redis."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from support.gateway import ADMIN, ReplyingMatcher, balance, error_of, gateway_client
from support.signing import Trader

from common import keys

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


def test_health_info_and_markets(client: TestClient, r: redis.Redis) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["domain"] == {
        "name": "OrderBookDEX",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0x0000000000000000000000000000000000000000",
    }
    assert [f["name"] for f in info["types"]["OrderV2"]][-3:] == [
        "timeInForce",
        "reduceOnly",
        "expiresAt",
    ]
    assert set(info["types"]) == {
        "EIP712Domain",
        "Order",
        "OrderV2",
        "Cancel",
        "CancelAll",
        "Withdraw",
        "ApproveAgent",
        "RevokeAgent",
        "ScheduleCancel",
        "CancelReplace",
        "Amend",
        "Batch",
        "BatchAction",
        "OrderV3",
        "SetLeverage",
        "Twap",
        "OrderV4",
    }
    assert info["assets"] == {
        "USDC": {"decimals": 6, "quantum": 1},
        "BTC": {"decimals": 8, "quantum": 1},
        "ETH": {"decimals": 18, "quantum": 10**9},
    }
    assert abs(info["serverTime"] - time.time() * 1000) < 60_000
    r.hset(keys.market_state(PERP), "status", "HALTED")
    markets = {m["symbol"]: m for m in client.get("/v1/markets").json()}
    assert markets[SPOT]["status"] == "OPEN" and markets[PERP]["status"] == "HALTED"
    assert markets[PERP]["initialMarginBps"] == 1000 and markets[PERP]["product"] == "PERP"
    option = client.get("/v1/markets/BTC-C-40000-20270326").json()
    assert (option["optionType"], option["strike"], option["status"]) == ("CALL", 4_000_000, "OPEN")
    assert error_of(client.get("/v1/markets/NOPE")) == (404, "UNKNOWN_MARKET")


def test_depth_and_trades_with_limit_rules(client: TestClient, r: redis.Redis) -> None:
    r.hset(keys.levels_bids(SPOT), mapping={"2999900": 5, "2999800": 7, "2999000": 1})
    r.hset(keys.levels_asks(SPOT), mapping={"3000100": 2})
    r.hset(keys.market_state(SPOT), "seq", 9)
    depth = client.get(f"/v1/markets/{SPOT}/depth?limit=2").json()
    assert depth == {
        "market": SPOT,
        "seq": 9,
        "bids": [[2999900, 5], [2999800, 7]],
        "asks": [[3000100, 2]],
    }
    assert len(client.get(f"/v1/markets/{SPOT}/depth").json()["bids"]) == 3
    for bad in ("0", "-1", "x", "1.5"):
        assert error_of(client.get(f"/v1/markets/{SPOT}/depth?limit={bad}")) == (
            400,
            "INVALID_REQUEST",
        ), bad
    assert error_of(client.get("/v1/markets/NOPE/depth")) == (404, "UNKNOWN_MARKET")
    for seq in range(1, 1_204):
        trade = {"tradeId": f"{SPOT}:{seq}", "market": SPOT, "price": 3_000_000, "qty": 1,
                 "takerSide": "BUY", "buyer": "0xa", "seller": "0xb", "buyOid": "b",
                 "sellOid": "s", "ts": seq, "seq": seq}  # fmt: skip
        r.xadd(keys.market_trades(SPOT), {"t": orjson.dumps(trade)})
    trades = client.get(f"/v1/markets/{SPOT}/trades?limit=3").json()
    assert [t["seq"] for t in trades] == [1203, 1202, 1201]
    assert len(client.get(f"/v1/markets/{SPOT}/trades").json()) == 100
    assert len(client.get(f"/v1/markets/{SPOT}/trades?limit=5000").json()) == 1000
    assert error_of(client.get(f"/v1/markets/{SPOT}/trades?limit=0")) == (400, "INVALID_REQUEST")


@pytest.mark.skipif(
    importlib.util.find_spec("common.market_reads") is None,
    reason="common/market_reads.py (ticker and candles) has not landed yet",
)
def test_ticker_and_candles_shapes(client: TestClient) -> None:
    ticker = client.get(f"/v1/markets/{SPOT}/ticker").json()
    assert set(ticker) >= {
        "last", "bestBid", "bestAsk", "open24h", "high24h", "low24h", "volume24h",
        "quoteVolume24h", "indexPrice", "markPrice", "fundingRate", "nextFundingTs",
        "openInterest",
    }  # fmt: skip
    assert ticker["last"] is None
    assert client.get(f"/v1/markets/{SPOT}/candles?interval=1m").json() == []
    assert error_of(client.get(f"/v1/markets/{SPOT}/candles?interval=2m")) == (
        400,
        "INVALID_REQUEST",
    )
    assert error_of(client.get("/v1/markets/NOPE/ticker")) == (404, "UNKNOWN_MARKET")


def test_account_orders_newest_first_filtered_by_market_and_open(
    client: TestClient, redis_url: str
) -> None:
    trader = Trader()
    client.post(
        "/v1/admin/deposits",
        json={"userId": trader.address, "asset": "USDC", "amount": 10**12},
        headers=ADMIN,
    )
    with ReplyingMatcher(redis_url, [SPOT, PERP]):
        for cid, market in (("s1", SPOT), ("p1", PERP), ("s2", SPOT), ("s3", SPOT)):
            product = "SPOT" if market == SPOT else "PERP"
            price = 1_000 if market == SPOT else 3_000_000  # a PERP order within its price band
            body = trader.order(market, "BUY", price, 10, cid=cid, product=product)
            assert client.post("/v1/orders?wait=1", json=body).status_code == 200
            time.sleep(0.002)  # distinct acceptance milliseconds
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.hset(keys.market_order(SPOT, trader.address.lower(), "s2"), "status", "FILLED")
    base = f"/v1/accounts/{trader.address}/orders"
    assert [o["clientOrderId"] for o in client.get(base).json()] == ["s3", "s2", "p1", "s1"]
    assert [o["clientOrderId"] for o in client.get(f"{base}?market={SPOT}").json()] == [
        "s3",
        "s2",
        "s1",
    ]
    assert [o["clientOrderId"] for o in client.get(f"{base}?market={SPOT}&open=1").json()] == [
        "s3",
        "s1",
    ]
    assert [o["clientOrderId"] for o in client.get(f"{base}?limit=1").json()] == ["s3"]
    assert client.get(f"/v1/accounts/{Trader().address}/orders").json() == []
    assert error_of(client.get("/v1/accounts/bob/orders")) == (400, "INVALID_USER")
    assert error_of(client.get(f"{base}?open=maybe")) == (400, "INVALID_REQUEST")
    assert error_of(client.get(f"/v1/orders/{trader.address}/nope")) == (404, "NOT_FOUND")
    assert error_of(client.get("/v1/orders/bob/s1")) == (400, "INVALID_USER")
    r.close()


def test_fills_positions_margin_and_system_accounts(client: TestClient, r: redis.Redis) -> None:
    user = Trader().address.lower()
    for i, market in enumerate((SPOT, PERP, SPOT), start=1):
        fill = {"tradeId": f"{market}:{i}", "market": market, "clientOrderId": f"c{i}",
                "side": "BUY", "price": 3_000_000, "qty": 10, "fee": "15000",
                "liquidity": "TAKER", "ts": i}  # fmt: skip
        r.xadd(keys.account_fills(user), {"f": orjson.dumps(fill)})
    fills = client.get(f"/v1/accounts/{user}/fills").json()
    assert [f["tradeId"] for f in fills] == [f"{SPOT}:3", f"{PERP}:2", f"{SPOT}:1"]
    assert [
        f["tradeId"] for f in client.get(f"/v1/accounts/{user}/fills?market={PERP}").json()
    ] == [f"{PERP}:2"]
    assert len(client.get(f"/v1/accounts/{user}/fills?limit=2").json()) == 2

    client.post(
        "/v1/admin/deposits", json={"userId": user, "asset": "USDC", "amount": 1_000_000_000},
        headers=ADMIN,
    )  # fmt: skip
    r.hset(keys.positions(user), mapping={f"{PERP}:size": -1_000, f"{PERP}:entry": -3_000_000_000})
    pushed = client.post(
        "/v1/admin/oracle", json={"market": PERP, "indexPrice": 2_900_000}, headers=ADMIN
    )
    assert pushed.json() == {"market": PERP, "indexPrice": 2_900_000, "markPrice": 2_900_000}
    assert r.hgetall(keys.market_prices(PERP)) == {
        "static": "2900000",
        "index": "2900000",
        "mark": "2900000",
    }
    (position,) = client.get(f"/v1/accounts/{user}/positions").json()
    assert position["market"] == PERP and position["size"] == -1_000
    assert position["entryNotional"] == "-3000000000" and position["avgEntry"] == "3000000"
    assert position["unrealizedPnl"] == "100000000" and position["markPrice"] == 2_900_000
    margin = client.get(f"/v1/accounts/{user}/margin").json()["USDC"]
    assert margin == {
        "equity": "1100000000",
        "initialMargin": "290000000",
        "maintenanceMargin": "145000000",
        "freeCollateral": "810000000",
        "unrealizedPnl": "100000000",
    }
    r.hset(keys.balances("fees"), mapping={"USDC:t": 77})
    r.hset(keys.balances("insurance"), mapping={"USDC:t": 500})
    assert client.get("/v1/system/accounts").json() == {
        "fees": {"USDC": "77"},
        "insurance": {"USDC": "500"},
        "insurancePositions": [],
    }
    assert client.get("/v1/accounts/insurance/balances").json() == {"USDC": balance(500)}


def test_oracle_mark_is_the_median_of_index_and_the_book(
    client: TestClient, r: redis.Redis
) -> None:
    r.zadd(keys.book_bids(PERP), {"0000000000000001|0xa|b": -3_050_000})
    r.zadd(keys.book_asks(PERP), {"0000000000000002|0xb|a": 3_060_000})
    result = client.post(
        "/v1/admin/oracle", json={"market": PERP, "indexPrice": 3_000_000}, headers=ADMIN
    )
    assert result.json()["markPrice"] == 3_050_000
    refusals = [
        ({"market": PERP, "indexPrice": 0}, ADMIN, (400, "INVALID_REQUEST")),
        ({"market": "NOPE", "indexPrice": 1}, ADMIN, (400, "UNKNOWN_MARKET")),
        ({"market": PERP}, ADMIN, (400, "INVALID_REQUEST")),
        ({"market": PERP, "indexPrice": 1}, {}, (403, "FORBIDDEN")),
        ({"market": PERP, "indexPrice": 1}, {"Authorization": "Bearer wrong"}, (403, "FORBIDDEN")),
    ]
    for body, headers, expected in refusals:
        assert error_of(client.post("/v1/admin/oracle", json=body, headers=headers)) == expected


def test_deposit_checks_and_answer(client: TestClient) -> None:
    user = Trader().address
    answer = client.post(
        "/v1/admin/deposits", json={"userId": user, "asset": "BTC", "amount": "123"}, headers=ADMIN
    )
    assert answer.json() == balance(123)
    cases = [
        ({"userId": user, "asset": "BTC", "amount": 0}, ADMIN, (400, "INVALID_REQUEST")),
        ({"userId": "bob", "asset": "BTC", "amount": 1}, ADMIN, (400, "INVALID_USER")),
        ({"userId": user, "asset": "DOGE", "amount": 1}, ADMIN, (400, "UNKNOWN_ASSET")),
        ({"userId": user, "asset": "BTC", "amount": 2**53}, ADMIN, (422, "LIMIT_EXCEEDED")),
        ({"userId": user, "asset": "ETH", "amount": 10**9 + 1}, ADMIN, (400, "INVALID_REQUEST")),
        ({"userId": user, "asset": "BTC", "amount": 1}, {}, (403, "FORBIDDEN")),
    ]
    for body, headers, expected in cases:
        assert error_of(client.post("/v1/admin/deposits", json=body, headers=headers)) == expected


def test_halt_and_resume_go_through_the_matcher(client: TestClient, redis_url: str) -> None:
    trader = Trader()
    client.post(
        "/v1/admin/deposits", json={"userId": trader.address, "asset": "USDC", "amount": 10**9},
        headers=ADMIN,
    )  # fmt: skip
    with ReplyingMatcher(redis_url, [SPOT]) as matcher:
        halted = client.post(f"/v1/admin/markets/{SPOT}/halt", headers=ADMIN)
        assert halted.status_code == 200 and halted.json()["status"] == "HALTED"
        assert halted.json()["symbol"] == SPOT and halted.json()["takerFeeBps"] == 5
        body = trader.order(SPOT, "BUY", 1_000, 10)
        assert error_of(client.post("/v1/orders", json=body)) == (422, "MARKET_HALTED")
        resumed = client.post(f"/v1/admin/markets/{SPOT}/resume", headers=ADMIN)
        assert resumed.json()["status"] == "OPEN"
        assert (
            client.post("/v1/orders", json=trader.order(SPOT, "BUY", 1_000, 10)).status_code == 202
        )
        assert [c["op"] for c in matcher.seen][:2] == ["halt", "resume"]
    assert error_of(client.post(f"/v1/admin/markets/{SPOT}/halt")) == (403, "FORBIDDEN")
    assert error_of(client.post("/v1/admin/markets/NOPE/halt", headers=ADMIN)) == (
        404,
        "UNKNOWN_MARKET",
    )


def test_audit_requires_the_admin_token(client: TestClient) -> None:
    assert error_of(client.get("/v1/admin/audit")) == (403, "FORBIDDEN")
    if importlib.util.find_spec("common.audit") is None:
        assert error_of(client.get("/v1/admin/audit", headers=ADMIN)) == (503, "UNAVAILABLE")
        return
    report = client.get("/v1/admin/audit", headers=ADMIN)
    assert report.status_code == 200
    assert "invariants" in report.json()


def test_openapi_describes_every_route_with_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        ("get", "/v1/health"), ("get", "/v1/info"), ("get", "/v1/markets"),
        ("get", "/v1/markets/{market}"), ("get", "/v1/markets/{market}/depth"),
        ("get", "/v1/markets/{market}/trades"), ("get", "/v1/markets/{market}/ticker"),
        ("get", "/v1/markets/{market}/candles"), ("post", "/v1/orders"),
        ("get", "/v1/orders/{user_id}/{client_order_id}"), ("post", "/v1/orders/cancel"),
        ("post", "/v1/orders/cancel-all"), ("get", "/v1/accounts/{user_id}/orders"),
        ("get", "/v1/accounts/{user_id}/fills"), ("get", "/v1/accounts/{user_id}/balances"),
        ("get", "/v1/accounts/{user_id}/positions"), ("get", "/v1/accounts/{user_id}/margin"),
        ("get", "/v1/accounts/{user_id}/withdrawals"), ("post", "/v1/withdrawals"),
        ("get", "/v1/system/accounts"), ("post", "/v1/admin/deposits"),
        ("post", "/v1/admin/oracle"), ("post", "/v1/admin/markets/{market}/halt"),
        ("post", "/v1/admin/markets/{market}/resume"), ("get", "/v1/admin/audit"),
        ("get", "/metrics"),
    }  # fmt: skip
    found = {(method, path) for path, ops in paths.items() for method in ops}
    assert expected <= found
    order_post = paths["/v1/orders"]["post"]
    body_schema = order_post["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["examples"][0]["market"] == "BTC-USDC"
    assert {"200", "202", "400", "401", "409", "413", "422", "429", "503"} <= set(
        order_post["responses"]
    )
    for method, path in expected - {("get", "/metrics")}:
        responses = paths[path][method]["responses"]
        assert "503" in responses, path
    assert "422" not in paths["/v1/markets/{market}/depth"]["get"]["responses"]
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_by_route_template_and_orders_by_code(client: TestClient) -> None:
    trader = Trader()
    client.get(f"/v1/accounts/{trader.address}/balances")
    client.post("/v1/orders", json=trader.order(SPOT, "BUY", 1_000, 10))
    text = client.get("/metrics").text
    assert (
        'dex_gateway_requests_total{method="GET",route="/v1/accounts/{user_id}/balances",'
        'status="200"}' in text
    )
    assert 'dex_gateway_orders_total{code="INSUFFICIENT_BALANCE",outcome="rejected"}' in text
    assert "dex_gateway_request_seconds_bucket" in text


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    response = client.get("/v1/health", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    assert len(client.get("/v1/health").headers["x-request-id"]) == 32
    unknown = client.get("/v1/nothing-here")
    assert error_of(unknown) == (404, "NOT_FOUND") and unknown.headers["x-request-id"]
