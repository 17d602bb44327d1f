"""Amend on a real three-master Redis Cluster (``DEX_REDIS_CLUSTER=1``): the account script
runs in the account's slot, the amend reaches the market's slot by the gateway's XADD, and the
settler settles the reservation to the unit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster as ClusterClient
from support.exchange import Exchange
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import money
from common.audit import audit
from common.eip712 import sign
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
PRICE = 3_000_000
BTC = 10**8


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    try:
        with RedisCluster() as running:
            yield running
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))


def test_amend_up_then_down_on_a_cluster(cluster: RedisCluster, redis_url: str) -> None:
    markets = load_markets(DEFAULT_MARKETS_FILE)
    spot = markets.markets[SPOT]
    client = ClusterClient.from_url(cluster.url, decode_responses=True)
    seller = Trader()
    with Exchange(cluster.url, DEX_REDIS_CLUSTER="1", DEX_BROKER_URL=redis_url) as exchange:
        exchange.start("gateway", "matcher", "settler")
        exchange.deposit(seller.address, "BTC", BTC)
        with exchange.client() as http:
            body = seller.order(SPOT, "SELL", PRICE, 10, cid="k1")
            assert http.post("/v1/orders", json=body, params={"wait": 1}).status_code == 200
            for qty in (30, 4):
                message = {
                    "userId": seller.address, "market": SPOT, "clientOrderId": "k1",
                    "price": PRICE, "qty": qty, "expectedFilled": 0,
                    "ts": int(time.time() * 1000),
                }  # fmt: skip
                message["sig"] = sign(seller.key, "Amend", message, CHAIN_ID, VERIFYING_CONTRACT)
                response = http.post("/v1/orders/amend", json=message)
                assert response.status_code == 200, response.text
                assert response.json()["qty"] == qty
        assert wait_for(
            lambda: exchange.balance(seller.address, "BTC") == (BTC, money.base_units(spot, 4)),
            20,
        )
        assert wait_for(lambda: bool(audit(client, markets)["ok"]), 20), audit(client, markets)
    client.close()
