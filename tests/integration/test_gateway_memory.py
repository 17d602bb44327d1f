"""Near or at Redis's memory limit, writes are refused cleanly (503 OVERLOADED), never half
applied: no reservation, no order record, no used clientOrderId."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support.gateway import ADMIN, balance, gateway_client
from support.redis_server import RedisServer
from support.signing import Trader

from common import keys

pytestmark = pytest.mark.integration

LIMIT = 32 * 1024 * 1024
MARKET = "BTC-USDC"


@pytest.fixture
def small_redis() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=("--maxmemory", str(LIMIT), "--maxmemory-policy", "noeviction"))
    with server:
        yield server


def fill_to(client: redis.Redis, percent: int) -> None:
    """Grow a ballast value by 256 KiB appends until used_memory reaches ``percent`` % of
    maxmemory, or until Redis refuses (it is then past its limit)."""
    chunk = b"x" * (256 * 1024)
    while int(client.info("memory")["used_memory"]) * 100 < LIMIT * percent:
        try:
            client.append("ballast", chunk)
        except redis.exceptions.OutOfMemoryError:
            return


def state_of(client: redis.Redis, user: str) -> tuple[object, ...]:
    return (
        client.hgetall(keys.balances(user)),
        client.hgetall(keys.account_cids(user)),
        client.hgetall(keys.reservations(user)),
        client.xlen(keys.market_in(MARKET)),
    )


def test_orders_and_withdrawals_get_503_past_the_high_water_mark(
    small_redis: RedisServer,
) -> None:
    client = redis.Redis.from_url(small_redis.url)
    trader = Trader()
    user = trader.address.lower()
    with gateway_client(small_redis.url) as http:
        response = http.post(
            "/v1/admin/deposits",
            json={"userId": user, "asset": "USDC", "amount": "5000000000"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        fill_to(client, 95)
        before = state_of(client, user)
        response = http.post("/v1/orders", json=trader.order(MARKET, "BUY", 3_000_000, 1_000))
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "OVERLOADED"
        assert "memory" in response.json()["error"]["message"]
        assert state_of(client, user) == before
        client.delete("ballast")
        body = trader.order(MARKET, "BUY", 3_000_000, 1_000)
        http.app.state.gateway._memory.forget("memory")  # type: ignore[attr-defined]
        assert http.post("/v1/orders", json=body).status_code == 202
        assert http.get(f"/v1/accounts/{user}/balances").json() == {
            "USDC": balance(5_000_000_000, 3_001_500_000)
        }
    client.close()


def test_an_order_redis_refuses_for_memory_leaves_nothing_behind(
    small_redis: RedisServer,
) -> None:
    client = redis.Redis.from_url(small_redis.url)
    trader = Trader()
    user = trader.address.lower()
    with gateway_client(small_redis.url, memory_high_water_pct=0) as http:
        response = http.post(
            "/v1/admin/deposits",
            json={"userId": user, "asset": "USDC", "amount": "5000000000"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        fill_to(client, 105)  # past maxmemory: Redis itself refuses every write now
        before = state_of(client, user)
        body = trader.order(MARKET, "BUY", 3_000_000, 1_000)
        response = http.post("/v1/orders", json=body)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "OVERLOADED"
        assert state_of(client, user) == before
        assert http.get(f"/v1/orders/{user}/{body['clientOrderId']}").status_code == 404
        client.delete("ballast")
        assert http.post("/v1/orders", json=body).status_code == 202  # the id was never used
    client.close()
