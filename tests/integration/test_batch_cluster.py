"""Signed batches on a real three-master Redis Cluster: every key of the account script is in
the account's slot, the commands go out through the outbox, in the batch's order."""

from __future__ import annotations

import orjson
import pytest
from support.gateway import ADMIN, balance, error_of, gateway_client
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for
from support.signing import Trader
from test_batch import BUY_LOCK, ETH, ETH_LOCK, SPOT, batch, place

from common import keys
from common.redis_client import connect
from common.settings import DexSettings

pytestmark = pytest.mark.integration


def test_batches_on_a_redis_cluster() -> None:
    cluster = RedisCluster()
    try:
        cluster.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with gateway_client(cluster.url, redis_cluster=True) as client:
            trader = Trader()
            user = trader.address.lower()
            response = client.post(
                "/v1/admin/deposits",
                json={"userId": user, "asset": "USDC", "amount": 7_000_000_000},
                headers=ADMIN,
            )
            assert response.status_code == 200, response.text
            actions = [place("a"), place("e", market=ETH), place("b"), place("c")]
            results = client.post("/v1/orders/batch", json=batch(trader, actions)).json()
            assert [x["status"] for x in results["results"]] == [202, 202, 202, 422]
            # Atomic: refused at its last action, nothing of it stays.
            atomic = batch(trader, [place("f", market=ETH), place("g")], atomic=True)
            assert error_of(client.post("/v1/orders/batch", json=atomic)) == (
                422,
                "INSUFFICIENT_BALANCE",
            )
            assert client.get(f"/v1/accounts/{user}/balances").json() == {
                "USDC": balance(7_000_000_000, 2 * BUY_LOCK + ETH_LOCK)
            }
            direct = connect(DexSettings(redis_url=cluster.url, redis_cluster=True))
            try:
                spot = [orjson.loads(f["c"])["cid"] for _, f in direct.xrange(keys.market_in(SPOT))]
                assert spot == ["a", "b"]
                assert direct.xlen(keys.market_in(ETH)) == 1
                assert wait_for(lambda: direct.zcard(keys.outbox(user)) == 0, 20)
                assert direct.hget(keys.account_cids(user), "f") is None
            finally:
                direct.close()
    finally:
        cluster.stop()
