"""Funding and reservation maths of the settler, exact to the unit (no server)."""

from __future__ import annotations

from pathlib import Path

import fakeredis

from common import keys, money
from common.events import DecrementEvent, DoneEvent
from common.markets import load_markets
from common.reservations import OrderTerms, need, order_terms
from services.settler.funding import funding_rate, payments, premium_ppm
from services.settler.settlement import decremented_terms, plan

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


def test_a_decrement_lowers_the_terms_and_skips_an_order_that_finishes() -> None:
    """A decrement event (self-trade prevention's DECREMENT) makes its order's terms the lower
    qty and trims as a fill's trim does; an order whose done event is in the same run needs
    no trim (its release follows). A pro-rata reservation keeps the qty it was reserved for."""
    spot = MARKETS.markets["BTC-USDC"]
    terms = OrderTerms("base", 3_000_000, 1000, money.base_units(spot, 1000))
    survivor: DecrementEvent = {"k": "decrement", "eseq": 7, "user": "a", "cid": "s1",
                                "side": "SELL", "qty": 600, "cut": 400, "ts": 1}  # fmt: skip
    ended: DecrementEvent = {**survivor, "eseq": 8, "cid": "b1", "side": "BUY", "qty": 2}
    done: DoneEvent = {"k": "done", "eseq": 9, "user": "a", "cid": "b1", "side": "BUY",
                       "status": "CXL", "reason": "SELF_TRADE", "filled": 0, "ts": 1}  # fmt: skip
    ops = plan(spot, [survivor, ended, done], {("a", "s1"): terms})["a"]
    assert [eseq for eseq, _ in ops] == [7, 9]
    (op,) = ops[0][1]
    assert op[:4] == ["decrement", "BTC", "s1", "400"] and op[4:7] == ["base", "3000000", "600"]
    assert op[-1] == keys.account_order("a", "s1")
    assert decremented_terms(terms, survivor).qty == 600
    prop = OrderTerms("prop", 3_000_000, 1000, 12_345)
    assert decremented_terms(prop, survivor) == prop
