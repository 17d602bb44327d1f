"""Protection: rate limits, the body cap, Redis down, and the 413 → 429 → 400 order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support.gateway import ADMIN, error_of, gateway_client
from support.redis_server import RedisServer
from support.signing import Trader

from common import keys

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"


def test_ip_limit_answers_429_with_retry_after_and_spares_health_and_admin(
    redis_url: str,
) -> None:
    with gateway_client(redis_url, rate_limit_ip=1) as client:
        responses = [client.get("/v1/markets") for _ in range(12)]
        statuses = [response.status_code for response in responses]
        assert statuses[:2] == [200, 200]  # the burst is twice the rate
        assert set(statuses) == {200, 429}
        limited = next(response for response in responses if response.status_code == 429)
        assert error_of(limited) == (429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/health").status_code == 200
        deposit = client.post(
            "/v1/admin/deposits",
            json={"userId": Trader().address, "asset": "USDC", "amount": 1},
            headers=ADMIN,
        )
        assert deposit.status_code == 200
        # 429 comes before 400: a malformed order from a limited address is still a 429.
        assert error_of(client.post("/v1/orders", content=b"nonsense")) == (429, "RATE_LIMITED")


def test_user_limit_counts_writes_per_signer_across_addresses(redis_url: str) -> None:
    with gateway_client(redis_url, rate_limit_user=1) as client:
        trader, other = Trader(), Trader()
        bodies = [trader.order(SPOT, "BUY", 1_000, 10) for _ in range(12)]
        codes = [client.post("/v1/orders", json=body).status_code for body in bodies]
        assert codes[:2] == [422, 422]  # no balance, but admitted past the limiter
        assert 429 in codes
        # The other user still has a full bucket, and reads are not writes.
        assert (
            client.post("/v1/orders", json=other.order(SPOT, "BUY", 1_000, 10)).status_code == 422
        )
        assert client.get(f"/v1/accounts/{trader.address}/balances").status_code == 200
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        assert r.exists(keys.rate_limit_user(trader.address.lower()))
        r.close()


def test_zero_turns_the_limits_off(redis_url: str) -> None:
    with gateway_client(redis_url, rate_limit_ip=0, rate_limit_user=0) as client:
        assert all(client.get("/v1/markets").status_code == 200 for _ in range(30))
        r = redis.Redis.from_url(redis_url)
        assert not list(r.scan_iter("dex:rl:*"))
        r.close()


def test_body_over_64_kib_is_413_declared_or_streamed_and_before_the_rate_limit(
    redis_url: str,
) -> None:
    with gateway_client(redis_url, rate_limit_ip=1) as client:
        big = b"{" + b" " * 70_000 + b"}"
        for _ in range(4):
            assert error_of(client.post("/v1/orders", content=big)) == (413, "BODY_TOO_LARGE")

        def chunks() -> Iterator[bytes]:
            for _ in range(80):
                yield b" " * 1024

        response = client.post("/v1/withdrawals", content=chunks())
        assert error_of(response) == (413, "BODY_TOO_LARGE")
        response = client.post("/v1/admin/deposits", content=big, headers=ADMIN)
        assert error_of(response) == (413, "BODY_TOO_LARGE")
        exactly = b'{"a":"' + b"x" * (65_536 - 8) + b'"}'
        assert len(exactly) == 65_536
        assert error_of(client.post("/v1/orders", content=exactly))[1] != "BODY_TOO_LARGE"


def test_redis_down_is_503_unavailable_everywhere_never_500() -> None:
    server = RedisServer().start()
    try:
        with gateway_client(server.url, rate_limit_ip=1000, rate_limit_user=100) as client:
            assert client.get("/v1/health").status_code == 200
            server.stop()
            trader = Trader()
            for method, path, body in (
                ("GET", "/v1/health", None),
                ("GET", "/v1/markets", None),
                ("GET", f"/v1/markets/{SPOT}/depth", None),
                ("GET", f"/v1/accounts/{trader.address}/balances", None),
                ("POST", "/v1/orders", trader.order(SPOT, "BUY", 1_000, 10)),
                (
                    "POST",
                    "/v1/admin/deposits",
                    {"userId": trader.address, "asset": "BTC", "amount": 1},
                ),
            ):
                response = client.request(method, path, json=body, headers=ADMIN)
                assert error_of(response) == (503, "UNAVAILABLE"), path
    finally:
        server.stop()


def test_wrong_methods_and_paths_are_contract_errors(redis_url: str) -> None:
    with gateway_client(redis_url) as client:
        assert error_of(client.get("/v1/orders")) == (405, "INVALID_REQUEST")
        assert error_of(client.get("/nope")) == (404, "NOT_FOUND")
        response = client.post(
            "/v1/orders", content=b'{"a":1}', headers={"content-type": "text/plain"}
        )
        assert error_of(response) == (400, "INVALID_REQUEST")
