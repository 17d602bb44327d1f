"""Funding and reservation maths of the settler, exact to the unit (no server)."""

from __future__ import annotations

from pathlib import Path

import fakeredis

from common import keys, money
from common.markets import load_markets
from common.reservations import need, order_terms
from services.settler.funding import funding_rate, payments, premium_ppm

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
PERP = MARKETS.markets["BTC-PERP"]


def test_premium_is_time_weighted_over_the_period() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    samples = keys.market_premiums("BTC-PERP")
    # Before the period: +1% holds until 1,000 ms in; then 0 for 1,000 ms; then −0.5%.
    client.zadd(
        samples,
        {"-500:1010000:1000000": -500, "1000:1000000:1000000": 1000, "2000:995000:1000000": 2000},
    )
    # [0, 4000): 10,000 ppm × 1000 + 0 × 1000 − 5,000 ppm × 2000 = 0
    assert premium_ppm(client, "BTC-PERP", 0, 4000) == 0
    # [0, 3000): (10,000,000 − 5,000,000) / 3000 = 1666.67 → 1666 (toward zero)
    assert premium_ppm(client, "BTC-PERP", 0, 3000) == 1666
    assert premium_ppm(client, "BTC-PERP", -10_000, -9_000) == 0  # no sample: 0


def test_rate_is_clamped_to_the_cap() -> None:
    assert funding_rate(PERP, 0) == 100  # interest 1 bp
    assert funding_rate(PERP, 10_000) == 5_000  # cap 50 bp
    assert funding_rate(PERP, -10_000) == -5_000


def test_payers_round_up_receivers_down_residue_to_insurance() -> None:
    amounts, residue = payments(PERP, {"a": 1_001, "b": -667, "c": -334}, 3_000_001, 100)
    assert amounts == {"a": -300_301, "b": 200_100, "c": 100_200}
    assert residue == 1
    amounts, residue = payments(PERP, {"a": 1_001, "b": -667, "c": -334}, 3_000_001, -100)
    assert amounts == {"a": 300_300, "b": -200_101, "c": -100_201}
    assert residue == 2
    assert sum(amounts.values()) + residue == 0


def test_partially_filled_orders_keep_what_their_rest_needs() -> None:
    command = {"type": "LIMIT", "price": 3_000_001, "qty": 777}
    reserved = money.derivative_reservation(PERP, 3_000_001, 777)
    terms = order_terms(PERP, "BUY", command, reserved)
    assert terms.kind == "margin"
    assert need(PERP, terms, 444) == money.derivative_reservation(PERP, 3_000_001, 444)
    fee_only = order_terms(PERP, "SELL", command, money.fee(3_000_001 * 777, 5))
    assert fee_only.kind == "fee"
    assert need(PERP, fee_only, 1) == money.fee(3_000_001, 5)
    assert order_terms(PERP, "BUY", {"type": "MARKET", "price": 0, "qty": 5}, 99).kind == "none"
