"""The gateway on a real three-master Redis Cluster: the same code, per-slot scripts."""

from __future__ import annotations

import time

import pytest
from support.gateway import ADMIN, balance, gateway_client
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign
from common.redis_client import connect
from common.settings import DexSettings

pytestmark = pytest.mark.integration


def test_orders_withdrawals_and_rate_limits_on_a_redis_cluster() -> None:
    cluster = RedisCluster()
    try:
        cluster.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with gateway_client(
            cluster.url, redis_cluster=True, rate_limit_ip=1000, rate_limit_user=100
        ) as client:
            trader = Trader()
            user = trader.address.lower()
            for asset, amount in (("USDC", 10_000_000_000), ("BTC", 100_000)):
                response = client.post(
                    "/v1/admin/deposits",
                    json={"userId": user, "asset": asset, "amount": amount},
                    headers=ADMIN,
                )
                assert response.status_code == 200, response.text
            buy = trader.order("BTC-USDC", "BUY", 3_000_000, 1_000)
            assert client.post("/v1/orders", json=buy).status_code == 202
            perp = trader.order("BTC-PERP", "SELL", 3_000_000, 1_000, product="PERP")
            assert client.post("/v1/orders", json=perp).status_code == 202
            dup = client.post("/v1/orders", json=buy)
            assert dup.json()["error"]["code"] == "DUPLICATE"
            message = {"userId": trader.address, "asset": "BTC", "amount": 40_000,
                       "ts": int(time.time() * 1000)}  # fmt: skip
            body = {**message, "sig": sign(trader.key, "Withdraw", message, CHAIN_ID,
                                           VERIFYING_CONTRACT)}  # fmt: skip
            assert client.post("/v1/withdrawals", json=body).status_code == 200
            # spot 3,001,500,000 + perp 301,500,000 locked
            assert client.get(f"/v1/accounts/{user}/balances").json() == {
                "USDC": balance(10_000_000_000, 3_303_000_000),
                "BTC": balance(60_000),
            }
            order = client.get(f"/v1/orders/{user}/{buy['clientOrderId']}").json()
            assert order["status"] == "ACCEPTED"
            direct = connect(DexSettings(redis_url=cluster.url, redis_cluster=True))
            try:
                assert direct.xlen(keys.market_in("BTC-USDC")) == 1
                assert direct.xlen(keys.market_in("BTC-PERP")) == 1
                assert wait_for(lambda: direct.zcard(keys.outbox(user)) == 0, 20)
                assert direct.xlen(keys.withdrawal_requests()) == 1
            finally:
                direct.close()
    finally:
        cluster.stop()
