"""Quanta (API.md §2 "Large decimals"): the markets file's quantum and the checks made at
load, the conversions at the door, and the reads that answer in atomic units."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import keys, money
from common.account_reads import account_view
from common.market_reads import ticker_view
from common.markets import MarketsFileError, default_quantum, load_markets, parse_markets
from common.settings import DEFAULT_MARKETS_FILE

ETH_FILE: dict[str, Any] = {
    "assets": {"USDC": {"decimals": 6}, "ETH": {"decimals": 18}, "BTC": {"decimals": 8}},
    "markets": {
        "ETH-USDC": {
            "product": "SPOT", "base": "ETH", "quote": "USDC", "priceScale": 2,
            "qtyScale": 4, "tickSize": 1, "lotSize": 1, "minQty": 1, "makerFeeBps": 1,
            "takerFeeBps": 5, "indexPrice": 300000,
        },
        # a perp margined in an 18-decimal asset: every margin and PnL amount is in wei
        "BTC-ETH-PERP": {
            "product": "PERP", "base": "BTC", "quote": "ETH", "priceScale": 2,
            "qtyScale": 4, "tickSize": 1, "lotSize": 1, "minQty": 1, "makerFeeBps": 1,
            "takerFeeBps": 5, "indexPrice": 2000, "initialMarginBps": 1000,
            "maintenanceMarginBps": 500, "fundingCapBps": 50, "fundingInterestBps": 1,
        },
    },
}  # fmt: skip


def document(asset: dict[str, Any] | None = None, **market: Any) -> dict[str, Any]:
    changed = copy.deepcopy(ETH_FILE)
    changed["assets"]["ETH"].update(asset or {})
    changed["markets"]["ETH-USDC"].update(market)
    return changed


# -- the markets file -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("decimals", "quantum"), [(0, 1), (6, 1), (9, 1), (12, 10**3), (18, 10**9)]
)
def test_default_quantum_is_ten_to_the_decimals_past_nine(decimals: int, quantum: int) -> None:
    assert default_quantum(decimals) == quantum


def test_eth_counts_in_gwei_and_its_markets_multipliers_count_quanta() -> None:
    markets = parse_markets(ETH_FILE)
    eth = markets.assets["ETH"]
    assert (eth.quantum, eth.internal_decimals) == (10**9, 9)
    assert markets.assets["USDC"].quantum == 1
    spot = markets.markets["ETH-USDC"]
    # a lot (0.0001 ETH = 10^14 wei) is 10^5 gwei; a notional unit is 1 USDC unit
    assert (spot.base_multiplier, spot.notional_multiplier) == (10**5, 1)
    # quote ETH: price × qty × 10^(18 − 2 − 4) wei = × 10^3 gwei
    assert markets.markets["BTC-ETH-PERP"].notional_multiplier == 10**3


def test_a_quantum_the_file_names_is_used() -> None:
    markets = parse_markets(document({"quantum": 10**12}))
    assert markets.assets["ETH"].quantum == 10**12
    assert markets.markets["ETH-USDC"].base_multiplier == 10**2


@pytest.mark.parametrize(
    ("asset", "message"),
    [
        ({"quantum": 3}, "asset ETH: field quantum: 3 is not a power of ten"),
        ({"quantum": 1_000_001}, "asset ETH: field quantum: 1000001 is not a power of ten"),
        ({"quantum": 10**19}, "asset ETH: field quantum: .* between 1 and 10\\^decimals"),
        ({"quantum": 0}, "asset ETH: field quantum"),
        ({"quantum": "1000"}, "asset ETH: field quantum"),
    ],
)
def test_a_quantum_that_is_not_a_power_of_ten_up_to_the_decimals_is_refused(
    asset: dict[str, Any], message: str
) -> None:
    with pytest.raises(MarketsFileError, match=message):
        parse_markets(document(asset))


def test_a_lot_that_delivers_a_fraction_of_the_base_quantum_is_refused() -> None:
    # quantum 10^15 wei: a lot (qtyScale 4) of 10^14 wei is a tenth of a quantum
    with pytest.raises(
        MarketsFileError,
        match="market ETH-USDC: field lotSize: a lot delivers 100000000000000 atomic units of "
        "ETH, not a multiple of its quantum 1000000000000000",
    ):
        parse_markets(document({"quantum": 10**15}))
    # a lot of 10 units is a whole quantum, but a quantity unit still is not: qtyScale
    with pytest.raises(MarketsFileError, match="market ETH-USDC: field qtyScale"):
        parse_markets(document({"quantum": 10**15}, lotSize=10, minQty=10))


def test_a_smallest_notional_that_is_a_fraction_of_the_quote_quantum_is_refused() -> None:
    changed = copy.deepcopy(ETH_FILE)
    changed["assets"]["ETH"]["quantum"] = 10**13  # 18 − 13 = 5 < priceScale + qtyScale
    with pytest.raises(
        MarketsFileError,
        match="market BTC-ETH-PERP: field tickSize: the smallest notional \\(tickSize × "
        "lotSize\\) is 1000000000000 atomic units of ETH, not a multiple of its quantum "
        "10000000000000",
    ):
        parse_markets(changed)
    changed["markets"]["BTC-ETH-PERP"].update(tickSize=10, indexPrice=2000)
    with pytest.raises(MarketsFileError, match="market BTC-ETH-PERP: field priceScale"):
        parse_markets(changed)
    changed["assets"]["ETH"]["quantum"] = 10**12
    assert parse_markets(changed).markets["BTC-ETH-PERP"].notional_multiplier == 1


def test_the_shipped_file_has_eth_with_a_spot_market_and_its_perp() -> None:
    markets = load_markets(DEFAULT_MARKETS_FILE)
    assert markets.assets["ETH"].decimals == 18
    assert markets.assets["ETH"].quantum == 10**9
    assert {(m.product, m.quote.symbol) for s, m in markets.markets.items() if "ETH" in s} == {
        ("SPOT", "USDC"),
        ("PERP", "USDC"),
    }


# -- conversions ------------------------------------------------------------------------
ETH = parse_markets(ETH_FILE).assets["ETH"]


def test_wire_amounts_convert_to_quanta_only_when_whole() -> None:
    assert money.to_quanta(ETH, 10**18) == 10**9
    assert money.to_quanta(ETH, 10**24) == 10**15
    with pytest.raises(money.OffQuantum, match="not a multiple of ETH's quantum 1000000000"):
        money.to_quanta(ETH, 10**18 + 1)
    assert money.to_atomic(ETH, "1000000001") == 1_000_000_001_000_000_000
    assert money.atomic_text(ETH, -5) == "-5000000000"


@given(st.integers(min_value=0, max_value=2**53 - 1))
def test_quanta_round_trip_through_atomic_units(quanta: int) -> None:
    assert money.to_quanta(ETH, money.to_atomic(ETH, quanta)) == quanta


def test_the_limit_is_2_53_quanta_either_way() -> None:
    assert money.within_limit(2**53 - 1, -(2**53 - 1), 0)
    assert not money.within_limit(1, 2**53)
    assert not money.within_limit(-(2**53))


# -- reads answer in atomic units -------------------------------------------------------
def test_positions_and_margin_in_an_18_decimal_asset_read_in_wei() -> None:
    markets = parse_markets(ETH_FILE)
    perp = "BTC-ETH-PERP"
    # long 1.0 (qty 10_000) at 20.00 ETH: entry 2000 × 10_000 × 10^3 gwei = 2 × 10^10 gwei
    view = account_view(
        markets,
        {keys.total_field("ETH"): "5000000000", keys.locked_field("ETH"): "7"},
        {
            f"{perp}:size": "10000",
            f"{perp}:entry": "20000000000",
            f"{perp}:rpnl": "-3",
            f"{perp}:funding": "11",
        },
        {perp: {"index": "2100", "mark": "2100"}},
    )
    (position,) = view["positions"]
    assert position["entryNotional"] == "20000000000000000000"  # 20 ETH in wei
    assert position["unrealizedPnl"] == "1000000000000000000"  # +1 ETH
    assert (position["realizedPnl"], position["fundingPaid"]) == ("-3000000000", "11000000000")
    assert position["avgEntry"] == "2000"
    margin = view["margin"]["ETH"]
    assert margin == {
        "equity": "6000000000000000000",
        "initialMargin": "2100000000000000000",
        "maintenanceMargin": "1050000000000000000",
        "freeCollateral": str(6 * 10**18 - 21 * 10**17 - 7 * 10**9),
        "unrealizedPnl": "1000000000000000000",
    }


def test_ticker_quote_volume_reads_in_quote_atomic_units() -> None:
    perp = parse_markets(ETH_FILE).markets["BTC-ETH-PERP"]
    stats = {"last": "2000", "vol": "3", "qvol": "6000", "open": "2000"}
    assert ticker_view(perp, stats, {}, None, None)["quoteVolume24h"] == 6_000_000_000_000
