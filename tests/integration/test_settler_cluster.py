"""Settlement, funding and the auditor on a real three-master Redis Cluster.

The buyer, the seller, the fee account and the market live in different slots; every script
touches one slot, so the same code settles exactly as on a single Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster as ClusterClient
from support.market_driver import MarketDriver
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable

from common import keys
from common.audit import audit
from common.markets import load_markets
from services.settler.accounts import AccountSteps
from services.settler.funding import run_funding
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
A, B = "0x" + "a" * 40, "0x" + "b" * 40


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    try:
        running = RedisCluster().start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    client = ClusterClient.from_url(running.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
        running.stop()


def test_perp_fills_funding_and_audit_on_a_cluster(cluster: Any) -> None:
    perp = MARKETS.markets["BTC-PERP"]
    drive, ledger = MarketDriver(cluster, perp), Ledger(cluster)
    for user in (A, B):
        drive.deposit(user, "USDC", 10_000_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 1_000)
    drive.order(A, "b1", "BUY", 3_000_000, 1_500)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 1_000, taker="BUY")
    assert ledger.settle_market(perp) == 2
    assert cluster.hget(keys.positions(A), "BTC-PERP:size") == "1000"
    assert cluster.hget(keys.balances(A), "USDC:t") == str(10_000_000_000 - 1_500_000)
    # The rest of A's buy (500 at 30,000) keeps its margin and fee, nothing more.
    assert cluster.hget(keys.reservations(A), "b1") == str(150_000_000 + 750_000)
    steps = AccountSteps(cluster)
    interval = 1_000
    run_funding(cluster, MARKETS, steps, 10_500, interval)  # marks period 9 as the start
    paid = run_funding(cluster, MARKETS, steps, 12_100, interval)
    # every PERP of the shipped file is paid its finished periods (ETH-PERP has no positions)
    assert sorted(paid) == [("BTC-PERP", 10), ("BTC-PERP", 11), ("ETH-PERP", 10), ("ETH-PERP", 11)]
    assert run_funding(cluster, MARKETS, steps, 12_200, interval) == []
    # rate 100 ppm of 3,000 USDC = 300,000 per period: A pays, B receives, no residue.
    assert cluster.hget(keys.balances(A), "USDC:t") == str(10_000_000_000 - 1_500_000 - 600_000)
    assert cluster.hget(keys.balances(B), "USDC:t") == str(10_000_000_000 - 300_000 + 600_000)
    report = audit(cluster, MARKETS)
    assert report["ok"], report["invariants"]
