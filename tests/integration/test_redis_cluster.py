"""The whole exchange on a real three-master Redis Cluster (``DEX_REDIS_CLUSTER=1``).

Durable state lives in the cluster, spread over its slots by the ``{market}`` / ``{userId}``
hash tags; Celery's broker is a separate plain Redis (``DEX_BROKER_URL``), as in production.
Deposits, crossing orders in a spot and a perpetual market, a cancel, funding and the auditor
run through the real processes, and every balance is checked to the atomic unit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster as ClusterClient
from support.exchange import Exchange
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.audit import audit
from common.eip712 import sign
from common.events import loads
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
PRICE, QTY = 3_000_000, 1_000  # 30,000.00 × 0.1 BTC
NOTIONAL = PRICE * QTY  # 3,000 USDC in atomic units (multiplier 1)
TAKER_FEE, MAKER_FEE = 1_500_000, 300_000
BTC_DELIVERED = QTY * 10_000
USDC_DEPOSIT = 10_000_000_000
FUNDING_INTERVAL_S = 3


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    try:
        with RedisCluster() as running:
            yield running
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))


def test_deposits_orders_cancel_funding_and_audit_on_a_cluster(
    cluster: RedisCluster, redis_url: str
) -> None:
    markets = load_markets(DEFAULT_MARKETS_FILE)
    client = ClusterClient.from_url(cluster.url, decode_responses=True)
    alice, bob = Trader(), Trader()
    a, b = alice.address.lower(), bob.address.lower()
    with Exchange(
        cluster.url,
        DEX_REDIS_CLUSTER="1",
        DEX_BROKER_URL=redis_url,
        DEX_FUNDING_INTERVAL_S=str(FUNDING_INTERVAL_S),
    ) as exchange:
        exchange.start()
        exchange.deposit(alice.address, "BTC", BTC_DELIVERED)
        for trader in (alice, bob):
            exchange.deposit(trader.address, "USDC", USDC_DEPOSIT)
        with exchange.client() as http:

            def place(trader: Trader, market: str, side: str, price: int, **extra: Any) -> str:
                product = "SPOT" if market == SPOT else "PERP"
                body = trader.order(market, side, price, QTY, product=product, **extra)
                response = http.post("/v1/orders", json=body, params={"wait": 1})
                assert response.status_code == 200, response.text
                return str(body["clientOrderId"])

            spot_sell = place(alice, SPOT, "SELL", PRICE)
            spot_buy = place(bob, SPOT, "BUY", PRICE)
            perp_sell = place(alice, PERP, "SELL", PRICE)
            perp_buy = place(bob, PERP, "BUY", PRICE)
            resting = place(bob, SPOT, "BUY", PRICE - 100_000)
            for user, cid in ((a, spot_sell), (b, spot_buy), (a, perp_sell), (b, perp_buy)):
                assert http.get(f"/v1/orders/{user}/{cid}").json()["status"] == "FILLED"
            assert http.get(f"/v1/orders/{b}/{resting}").json()["status"] == "NEW"

            cancel = _signed_cancel(bob, SPOT, resting)
            response = http.post("/v1/orders/cancel", json=cancel)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "CXL" and response.json()["reason"] == "USER"

            # Funding: wait until a finished period has been paid to both positions.
            def funding_paid() -> bool:
                return all(client.xlen(keys.account_funding(u)) > 0 for u in (a, b))

            assert wait_for(funding_paid, 60), exchange.log("settler")[-4000:]

            def quiet() -> bool:
                return bool(audit(client, markets)["ok"]) and all(
                    _settled(client, m) for m in (SPOT, PERP)
                )

            assert wait_for(quiet, 60), audit(client, markets)
            report = audit(client, markets)
            assert report["ok"], report
            for line in report["assets"].values():
                assert int(line["difference"]) == 0, report

            funding = {u: _funding_received(client, u) for u in (a, b)}
            balances = {
                t.address: http.get(f"/v1/accounts/{t.address}/balances").json()
                for t in (alice, bob)
            }
            fees = http.get("/v1/system/accounts").json()["fees"]
        # Spot: alice sold 0.1 BTC as maker, bob bought as taker. Perp: the same roles; fees
        # come from collateral, and funding moved what the funding streams record.
        assert balances[alice.address]["BTC"]["total"] == "0"
        assert balances[bob.address]["BTC"]["total"] == str(BTC_DELIVERED)
        alice_usdc = USDC_DEPOSIT + NOTIONAL - MAKER_FEE - MAKER_FEE + funding[a]
        bob_usdc = USDC_DEPOSIT - NOTIONAL - TAKER_FEE - TAKER_FEE + funding[b]
        assert balances[alice.address]["USDC"]["total"] == str(alice_usdc)
        assert balances[bob.address]["USDC"]["total"] == str(bob_usdc)
        assert balances[bob.address]["USDC"]["locked"] == "0"
        assert fees["USDC"] == str(2 * (TAKER_FEE + MAKER_FEE))
        # Funding is zero-sum up to the residue, which went to the insurance fund.
        insurance = int(client.hget(keys.balances(keys.INSURANCE_ACCOUNT), "USDC:t") or 0)
        assert funding[a] + funding[b] + insurance == 0
    client.close()


def _signed_cancel(trader: Trader, market: str, cid: str) -> dict[str, Any]:
    message = {
        "userId": trader.address,
        "market": market,
        "clientOrderId": cid,
        "ts": int(time.time() * 1000),
    }
    return message | {"sig": sign(trader.key, "Cancel", message, CHAIN_ID, VERIFYING_CONTRACT)}


def _settled(client: Any, market: str) -> bool:
    last = client.xrevrange(keys.market_events(market), count=1)
    return not last or client.get(keys.market_settled(market)) == last[0][0]


def _funding_received(client: Any, user: str) -> int:
    """Net funding the account received (+) or paid (−), from its funding stream."""
    total = 0
    for _, fields in client.xrange(keys.account_funding(user)):
        entry = loads(next(iter(fields.values())))
        total += int(entry["amount"])
    return total
