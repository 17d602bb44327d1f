"""The operator's door: the admin token, its rate limit, and ``depositId`` (API.md §1, §5).

- An unset, empty or blank ``DEX_ADMIN_TOKEN`` is no token: every admin call is 403.
- Only ``Authorization: Bearer <token>`` opens the door (a bare token does not).
- An admin call without the right token draws from the address's rate limit; one with it
  does not.
- A ``depositId`` credits once only, exchange-wide; a retry after a failure between the two
  per-slot steps completes the credit exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from support.exchange import Exchange
from support.gateway import ADMIN, ADMIN_TOKEN, balance, error_of, gateway_client
from support.signing import Trader

from common import keys

pytestmark = pytest.mark.integration

ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/admin/deposits", {"userId": Trader().address, "asset": "USDC", "amount": 5}),
    ("POST", "/v1/admin/oracle", {"market": "BTC-PERP", "indexPrice": 3_100_000}),
    ("POST", "/v1/admin/markets/BTC-USDC/halt", None),
    ("POST", "/v1/admin/markets/BTC-USDC/resume", None),
    ("GET", "/v1/admin/audit", None),
]


def state(r: redis.Redis) -> dict[str, Any]:
    """Every key but the rate-limit buckets: what a refused admin call must leave as it was."""
    return {
        key: (r.type(key), r.dump(key))
        for key in sorted(r.scan_iter("dex:*"))
        if not key.startswith("dex:rl:") and not key.endswith(":rl")
    }


def post_deposit(
    client: TestClient | httpx.Client,
    user: str,
    amount: int,
    deposit_id: Any = None,
    headers: dict[str, str] | None = None,
    asset: str = "USDC",
) -> httpx.Response:
    body: dict[str, Any] = {"userId": user, "asset": asset, "amount": amount}
    if deposit_id is not None:
        body["depositId"] = deposit_id
    return client.post(
        "/v1/admin/deposits", json=body, headers=ADMIN if headers is None else headers
    )


# -- the token ---------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "", "   ", "\t\n"])
def test_no_token_configured_refuses_every_admin_call_whatever_the_header(
    redis_url: str, r: redis.Redis, token: str | None
) -> None:
    headers = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer    "},
        {"Authorization": ""},
        {"Authorization": f"Bearer {token}"} if token else {"Authorization": "Bearer None"},
        ADMIN,
    ]
    with gateway_client(redis_url, admin_token=token) as client:
        before = state(r)
        for method, path, body in ADMIN_CALLS:
            for header in headers:
                response = client.request(method, path, json=body, headers=header)
                assert error_of(response) == (403, "FORBIDDEN"), (path, header)
        assert state(r) == before


def test_empty_token_in_the_environment_of_a_real_gateway_is_no_token(redis_url: str) -> None:
    with Exchange(redis_url, DEX_ADMIN_TOKEN="") as exchange:
        exchange.start("gateway")
        with exchange.client() as client:
            user = Trader().address
            for header in ({"Authorization": "Bearer"}, {"Authorization": ""}, {}):
                assert error_of(post_deposit(client, user, 5, headers=header)) == (
                    403,
                    "FORBIDDEN",
                )
            assert client.get(f"/v1/accounts/{user}/balances").json() == {}


def test_only_the_bearer_scheme_opens_the_door(redis_url: str, r: redis.Redis) -> None:
    user = Trader().address
    refused = [
        {"Authorization": ADMIN_TOKEN},  # a bare token
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Token {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer{ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"},
        {"X-Admin-Token": ADMIN_TOKEN},
        {},
    ]
    with gateway_client(redis_url) as client:
        before = state(r)
        for header in refused:
            assert error_of(post_deposit(client, user, 5, headers=header)) == (403, "FORBIDDEN")
        non_latin = client.post(
            "/v1/admin/deposits",
            json={"userId": user, "asset": "USDC", "amount": 5},
            headers={"Authorization": "Bearer \u00e9t\u00e9".encode()},
        )
        assert error_of(non_latin) == (403, "FORBIDDEN")
        assert state(r) == before
        assert post_deposit(client, user, 5).json() == balance(5)
        # The scheme is case-insensitive (RFC 7235); the token is not.
        lower = {"Authorization": f"bearer {ADMIN_TOKEN}"}
        assert post_deposit(client, user, 7, headers=lower).json() == balance(12)


def test_a_token_from_a_secret_file_with_a_trailing_newline_still_opens(redis_url: str) -> None:
    with gateway_client(redis_url, admin_token=f"{ADMIN_TOKEN}\n") as client:
        assert post_deposit(client, Trader().address, 5).json() == balance(5)


def test_a_non_ascii_token_is_compared_as_utf_8_bytes(redis_url: str) -> None:
    with gateway_client(redis_url, admin_token="s\u00e9same") as client:
        user = Trader().address
        utf8 = {"Authorization": "Bearer s\u00e9same".encode()}
        assert post_deposit(client, user, 5, headers=utf8).json() == balance(5)  # type: ignore[arg-type]


def test_bad_body_is_400_before_the_403(redis_url: str) -> None:
    with gateway_client(redis_url) as client:
        response = client.post("/v1/admin/deposits", content=b"{", headers={})
        assert error_of(response) == (400, "INVALID_REQUEST")


# -- the token's rate limit ------------------------------------------------------------
def test_refused_admin_calls_spend_the_address_budget_and_the_operator_is_never_limited(
    redis_url: str, r: redis.Redis
) -> None:
    user = Trader().address
    wrong = {"Authorization": "Bearer guess"}
    with gateway_client(redis_url, rate_limit_ip=1) as client:
        before = state(r)
        answers = [post_deposit(client, user, 5, headers=wrong) for _ in range(6)]
        codes = [error_of(response) for response in answers]
        assert codes[:2] == [(403, "FORBIDDEN")] * 2  # the burst is twice the rate
        assert (429, "RATE_LIMITED") in codes
        limited = next(a for a in answers if a.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        # No header at all, and every admin route, count the same way.
        assert error_of(client.get("/v1/admin/audit")) == (429, "RATE_LIMITED")
        assert error_of(client.post("/v1/admin/markets/BTC-USDC/halt")) == (429, "RATE_LIMITED")
        assert state(r) == before
        # The spent bucket is the address's: its reads are limited too ...
        assert error_of(client.get("/v1/markets")) == (429, "RATE_LIMITED")
        # ... but the operator's calls with the right token and /v1/health are not counted.
        for n in range(1, 11):
            assert post_deposit(client, user, 5).json() == balance(5 * n)
        assert client.get("/v1/health").status_code == 200


def test_right_token_calls_leave_the_address_bucket_full(redis_url: str) -> None:
    with gateway_client(redis_url, rate_limit_ip=1) as client:
        user = Trader().address
        for _ in range(10):
            assert post_deposit(client, user, 1).status_code == 200
            assert client.get("/v1/admin/audit", headers=ADMIN).status_code != 429
        assert [client.get("/v1/markets").status_code for _ in range(2)] == [200, 200]


# -- depositId ---------------------------------------------------------------------------
@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


def test_a_deposit_id_credits_once_and_the_same_id_again_is_409_changing_nothing(
    client: TestClient, r: redis.Redis
) -> None:
    alice, bob = Trader().address, Trader().address
    assert post_deposit(client, alice, 5_000_000, "0x5e1f:7").json() == balance(5_000_000)
    before = state(r)
    for user, amount, asset in (
        (alice, 5_000_000, "USDC"),  # the very same deposit again
        (alice, 6_000_000, "USDC"),  # another amount
        (alice, 5_000_000, "BTC"),  # another asset
        (bob, 5_000_000, "USDC"),  # another account: the id is exchange-wide
        ("insurance", 5_000_000, "USDC"),
    ):
        response = post_deposit(client, user, amount, "0x5e1f:7", asset=asset)
        assert error_of(response) == (409, "DUPLICATE"), (user, amount, asset)
    assert state(r) == before
    assert client.get(f"/v1/accounts/{alice}/balances").json() == {"USDC": balance(5_000_000)}
    assert client.get(f"/v1/accounts/{bob}/balances").json() == {}
    assert r.hget(keys.balances(alice.lower()), "USDC:dep") == "5000000"
    # Ids are compared exactly (case matters); deposits without an id are never deduplicated.
    assert post_deposit(client, alice, 1, "0x5E1F:7").json() == balance(5_000_001)
    assert post_deposit(client, alice, 1).json() == balance(5_000_002)
    assert post_deposit(client, alice, 1).json() == balance(5_000_003)


@pytest.mark.parametrize(
    "deposit_id",
    ["", "a" * 129, "a b", "abc\n", "\u00e9", "tx/1", "{tag}", 5, True, ["x"], {"id": "x"}],
)
def test_a_malformed_deposit_id_is_400_and_changes_nothing(
    client: TestClient, r: redis.Redis, deposit_id: Any
) -> None:
    before = state(r)
    response = client.post(
        "/v1/admin/deposits",
        json={"userId": Trader().address, "asset": "USDC", "amount": 5, "depositId": deposit_id},
        headers=ADMIN,
    )
    assert error_of(response) == (400, "INVALID_REQUEST")
    assert state(r) == before


def test_null_deposit_id_is_400_and_the_longest_id_is_accepted(client: TestClient) -> None:
    user = Trader().address
    response = client.post(
        "/v1/admin/deposits",
        json={"userId": user, "asset": "USDC", "amount": 5, "depositId": None},
        headers=ADMIN,
    )
    assert error_of(response) == (400, "INVALID_REQUEST")
    longest = "A-z.0_9:" * 16
    assert post_deposit(client, user, 5, longest).json() == balance(5)
    assert error_of(post_deposit(client, user, 5, longest)) == (409, "DUPLICATE")


def test_a_retry_after_a_failure_between_the_two_steps_credits_exactly_once(
    client: TestClient, r: redis.Redis
) -> None:
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    real = gateway.transport.script
    failures = [redis.ConnectionError("the connection dropped before the credit")]

    async def drops_once(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "deposit" and failures:
            raise failures.pop()
        return await real(name, *args, **kwargs)

    gateway.transport.script = drops_once
    alice, bob = Trader().address, Trader().address
    assert error_of(post_deposit(client, alice, 700, "chain:tx:42")) == (503, "UNAVAILABLE")
    assert client.get(f"/v1/accounts/{alice}/balances").json() == {}
    # The id is bound to that deposit: another deposit cannot take it meanwhile ...
    assert error_of(post_deposit(client, bob, 700, "chain:tx:42")) == (409, "DUPLICATE")
    assert error_of(post_deposit(client, alice, 701, "chain:tx:42")) == (409, "DUPLICATE")
    # ... and the operator's retry of the same deposit completes it, once.
    assert post_deposit(client, alice, 700, "chain:tx:42").json() == balance(700)
    assert error_of(post_deposit(client, alice, 700, "chain:tx:42")) == (409, "DUPLICATE")
    assert client.get(f"/v1/accounts/{alice}/balances").json() == {"USDC": balance(700)}
    assert client.get(f"/v1/accounts/{bob}/balances").json() == {}
    assert r.hget(keys.balances(alice.lower()), "USDC:dep") == "700"


def test_concurrent_deposits_with_one_id_credit_once_on_a_real_gateway(redis_url: str) -> None:
    with Exchange(redis_url) as exchange:
        exchange.start("gateway")
        user = Trader().address

        def attempt(_: int) -> int:
            with exchange.client() as http:
                return post_deposit(http, user, 1_000, "burst-1").status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = sorted(pool.map(attempt, range(24)))
        assert codes == [200] + [409] * 23
        with exchange.client() as http:
            balances = http.get(f"/v1/accounts/{user}/balances").json()
        assert balances == {"USDC": balance(1_000)}


def test_deposit_ids_and_the_admin_rate_limit_on_a_redis_cluster() -> None:
    from support.redis_cluster import RedisCluster
    from support.redis_server import RedisServerUnavailable

    cluster = RedisCluster()
    try:
        cluster.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with gateway_client(cluster.url, redis_cluster=True, rate_limit_ip=1) as client:
            alice, bob = Trader().address, Trader().address
            wrong = {"Authorization": "Bearer guess"}
            codes = [error_of(post_deposit(client, bob, 10, headers=wrong)) for _ in range(5)]
            assert codes[:2] == [(403, "FORBIDDEN")] * 2
            assert (429, "RATE_LIMITED") in codes
            ids = [f"chain:tx:{n}" for n in range(12)]  # spread over the cluster's slots
            for n, deposit_id in enumerate(ids, start=1):
                assert post_deposit(client, alice, 10, deposit_id).json() == balance(10 * n)
            for deposit_id in ids:
                assert error_of(post_deposit(client, alice, 10, deposit_id)) == (409, "DUPLICATE")
                assert error_of(post_deposit(client, bob, 10, deposit_id)) == (409, "DUPLICATE")
            time.sleep(2.1)  # the address bucket refills (the reads below draw from it)
            assert client.get(f"/v1/accounts/{alice}/balances").json() == {"USDC": balance(120)}
            assert client.get(f"/v1/accounts/{bob}/balances").json() == {}
    finally:
        cluster.stop()
