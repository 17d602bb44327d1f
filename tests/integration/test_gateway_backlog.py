"""``DEX_MAX_BACKLOG`` holds exactly, however fast orders arrive (API.md §1, §5).

The real gateway and matcher processes on a real Redis: with the matcher stopped and a bound
of 20, thirty concurrent orders give exactly twenty 202 and ten 503 OVERLOADED, and the ten
refused change nothing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from support.exchange import Exchange
from support.gateway import ADMIN, balance, error_of, gateway_client
from support.redis_server import wait_for
from support.signing import Trader

from common import keys

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
LOCK = 30_015_000  # 0.001 BTC at 30,000.00 USDC: notional 30,000,000 + 5 bps taker fee
BOUND = 20


def account(r: redis.Redis, user: str) -> tuple[Any, ...]:
    user = user.lower()
    return (
        r.hgetall(keys.balances(user)),
        r.hgetall(keys.account_cids(user)),
        r.hgetall(keys.reservations(user)),
        r.zcard(keys.account_market_orders(user, SPOT)),
    )


@pytest.mark.parametrize("matcher", ["stopped", "never started"])
def test_thirty_concurrent_orders_against_a_bound_of_twenty(
    redis_url: str, r: redis.Redis, matcher: str
) -> None:
    with Exchange(redis_url, DEX_MAX_BACKLOG=str(BOUND), DEX_RATE_LIMIT_USER="0") as exchange:
        exchange.start("gateway")
        trader = Trader()
        exchange.deposit(trader.address, "USDC", 100 * LOCK)
        resting = 0
        if matcher == "stopped":
            exchange.start("matcher")
            with exchange.client() as http:
                first = trader.order(SPOT, "BUY", 3_000_000, 10)
                assert http.post("/v1/orders", json=first).status_code == 202
                url = f"/v1/orders/{trader.address}/{first['clientOrderId']}"
                assert wait_for(lambda: http.get(url).json()["status"] == "NEW", 15)
            exchange.kill("matcher")
            resting = 1
        before = account(r, trader.address)
        bodies = [trader.order(SPOT, "BUY", 3_000_000, 10) for _ in range(30)]

        def post(body: dict[str, Any]) -> tuple[int, str]:
            with exchange.client() as http:
                response = http.post("/v1/orders", json=body)
            code = response.json()["error"]["code"] if response.status_code >= 400 else ""
            return response.status_code, code

        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(post, bodies))
        assert sorted(answers) == [(202, "")] * BOUND + [(503, "OVERLOADED")] * 10
        refused = [b["clientOrderId"] for b, a in zip(bodies, answers, strict=True) if a[0] == 503]
        accepted = [b["clientOrderId"] for b, a in zip(bodies, answers, strict=True) if a[0] == 202]
        locked = (resting + BOUND) * LOCK
        assert r.hgetall(keys.balances(trader.address.lower())) == {
            "USDC:t": str(100 * LOCK),
            "USDC:l": str(locked),
            "USDC:dep": str(100 * LOCK),
        }
        with exchange.client() as http:
            balances = http.get(f"/v1/accounts/{trader.address}/balances").json()
            assert balances == {"USDC": balance(100 * LOCK, locked)}
            for cid in refused:
                response = http.get(f"/v1/orders/{trader.address}/{cid}")
                assert error_of(response) == (404, "NOT_FOUND")
            for cid in accepted:
                response = http.get(f"/v1/orders/{trader.address}/{cid}")
                assert response.json()["status"] == "ACCEPTED"
        cids, reservations = before[1], before[2]
        after = account(r, trader.address)
        assert set(after[1]) == set(cids) | set(accepted)
        assert set(after[2]) == set(reservations) | set(accepted)
        assert after[3] == before[3] + BOUND
        commands = [fields["c"] for _, fields in r.xrange(keys.market_in(SPOT))]
        assert len(commands) == resting + BOUND
        assert not any(cid in command for cid in refused for command in commands)


def test_the_outbox_path_reads_the_backlog_fresh_for_every_order(
    redis_url: str, r: redis.Redis
) -> None:
    with gateway_client(redis_url, order_outbox=True, max_backlog=5) as client:
        trader = Trader()
        response = client.post(
            "/v1/admin/deposits",
            json={"userId": trader.address, "asset": "USDC", "amount": 100 * LOCK},
            headers=ADMIN,
        )
        assert response.status_code == 200
        codes = []
        for _ in range(8):
            answer = client.post("/v1/orders", json=trader.order(SPOT, "BUY", 3_000_000, 10))
            codes.append(answer.status_code)
            time.sleep(0.01)
        assert codes == [202] * 5 + [503] * 3
        assert r.xlen(keys.market_in(SPOT)) == 5
        assert client.get(f"/v1/accounts/{trader.address}/balances").json() == {
            "USDC": balance(100 * LOCK, 5 * LOCK)
        }
