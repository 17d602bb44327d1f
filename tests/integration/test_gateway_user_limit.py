"""The per-user rate limit counts a write only once its signature verifies (API.md §1).

Forged requests in a market maker's name must not spend his budget; the per-address limit
still counts every request, forged or not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from support.gateway import ADMIN, balance, error_of, gateway_client
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
LOCK = 30_015_000  # 0.001 BTC at 30,000.00 USDC: notional 30,000,000 + 5 bps taker fee
MAX_BURST = 60  # requests a burst may send before it must have been refused
DEPOSIT = MAX_BURST * LOCK  # enough that no order of a burst is refused for funds


def forged(alice: Trader, mallory: Trader, primary: str = "Order", **fields: Any) -> Any:
    """A body in Alice's name signed by Mallory's key."""
    if primary == "Order":
        body = mallory.order(SPOT, "BUY", 3_000_000, 10)
        message = {k: v for k, v in body.items() if k != "sig"} | {"userId": alice.address}
    else:
        message = {"userId": alice.address, "ts": int(time.time() * 1000), **fields}
    return {**message, "sig": sign(mallory.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def burst_until_limited(
    send: Callable[[int], Any], passed: Callable[[Any], bool] = lambda a: a.status_code == 202
) -> tuple[int, Any, float]:
    """Send (the n-th request) until an answer has not ``passed`` the limit: the count that
    passed, that answer and the seconds it all took."""
    started = time.monotonic()
    for n in range(MAX_BURST):
        answer = send(n)
        if not passed(answer):
            return n, answer, time.monotonic() - started
    raise AssertionError(f"{MAX_BURST} requests in a row were accepted: no rate limit")


def test_forged_flood_in_alices_name_leaves_alice_her_full_rate(
    redis_url: str, r: redis.Redis
) -> None:
    alice, mallory = Trader(), Trader()
    with gateway_client(redis_url, rate_limit_user=5) as client:
        response = client.post(
            "/v1/admin/deposits",
            json={"userId": alice.address, "asset": "USDC", "amount": DEPOSIT},
            headers=ADMIN,
        )
        assert response.status_code == 200
        writes = [
            ("/v1/orders", forged(alice, mallory)),
            ("/v1/orders/cancel", forged(alice, mallory, "Cancel", market=SPOT, clientOrderId="x")),
            ("/v1/orders/cancel-all", forged(alice, mallory, "CancelAll", market="")),
            ("/v1/withdrawals", forged(alice, mallory, "Withdraw", asset="USDC", amount=1)),
        ]
        for _ in range(15):
            for path, body in writes:
                answer = client.post(path, json=body)
                assert error_of(answer) == (401, "INVALID_SIGNATURE"), path
        assert not r.exists(keys.rate_limit_user(alice.address.lower()))
        # Alice's bucket is whole: her burst (twice the rate) goes through, then she is limited.
        # Her bucket refills while the burst is sent (5 tokens a second): on a loaded machine a
        # request past the burst may find a fresh token, so she posts until refused and the
        # count accepted is held to the burst plus what can have refilled meanwhile.
        accepted, limited, elapsed_s = burst_until_limited(
            lambda _: client.post("/v1/orders", json=alice.order(SPOT, "BUY", 3_000_000, 10))
        )
        assert error_of(limited) == (429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1
        assert 10 <= accepted <= 10 + math.ceil(5 * elapsed_s)
        assert client.get(f"/v1/accounts/{alice.address}/balances").json() == {
            "USDC": balance(DEPOSIT, accepted * LOCK)
        }


def test_a_verified_cancel_or_withdrawal_counts_against_its_user(redis_url: str) -> None:
    alice = Trader()
    with gateway_client(redis_url, rate_limit_user=1) as client:
        # The bucket holds 2 and refills 1 a second: the third withdrawal is refused unless a
        # second has passed, so the count that went through is held to 2 plus the refill.
        accepted, limited, elapsed_s = burst_until_limited(
            lambda n: client.post(
                "/v1/withdrawals", json=forged(alice, alice, "Withdraw", asset="USDC", amount=1 + n)
            ),
            passed=lambda answer: error_of(answer) == (422, "INSUFFICIENT_BALANCE"),
        )
        assert error_of(limited) == (429, "RATE_LIMITED")
        assert 2 <= accepted <= 2 + math.ceil(elapsed_s)


def test_the_address_limit_still_counts_forged_requests(redis_url: str) -> None:
    alice, mallory = Trader(), Trader()
    with gateway_client(redis_url, rate_limit_ip=2, rate_limit_user=100) as client:
        codes = [error_of(client.post("/v1/orders", json=forged(alice, mallory))) for _ in range(8)]
        assert codes[:4] == [(401, "INVALID_SIGNATURE")] * 4
        assert (429, "RATE_LIMITED") in codes[4:]


def test_an_orders_token_is_taken_first_by_its_account_script(
    redis_url: str, r: redis.Redis
) -> None:
    """An order's token is taken in its account script (one call with the admission): a
    refused order spends it, a user past the limit is 429 before any other verdict, and a 429
    records nothing; a trigger order refused for a missing protection price is 429 first too."""
    from support.trigger_orders import v4_body

    alice = Trader()
    user = alice.address.lower()
    bucket = keys.rate_limit_user(user)

    def empty_bucket() -> None:
        """No token, and a clock ahead of Redis's: it refills none while a request runs."""
        r.hset(bucket, mapping={"tokens": 0, "ts": int(time.time() * 1000) + 600_000})

    with gateway_client(redis_url, rate_limit_user=1) as client:  # a burst of 2, 1 a second
        started = time.monotonic()
        unfunded = client.post("/v1/orders", json=alice.order(SPOT, "BUY", 3_000_000, 10))
        assert error_of(unfunded) == (422, "INSUFFICIENT_BALANCE")
        unprotected = v4_body(alice, SPOT, "BUY", "STOP_MARKET", 0, 10, trigger=3_100_000)
        assert error_of(client.post("/v1/orders", json=unprotected)) == (400, "INVALID_PRICE")
        # Two tokens taken of the two: what is left is what refilled meanwhile (1 per ms).
        elapsed_ms = (time.monotonic() - started) * 1000
        assert int(r.hget(bucket, "tokens") or 0) <= elapsed_ms + 1
        empty_bucket()
        limited = client.post("/v1/orders", json=alice.order(SPOT, "BUY", 3_000_000, 10))
        assert error_of(limited) == (429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1
        empty_bucket()
        again = v4_body(alice, SPOT, "BUY", "STOP_MARKET", 0, 10, trigger=3_100_000)
        assert error_of(client.post("/v1/orders", json=again)) == (429, "RATE_LIMITED")
        assert r.hget(bucket, "tokens") == "0"
        assert not r.exists(keys.account_cids(user)) and not r.exists(keys.reservations(user))
