"""Positions, PnL, margin and liquidation price, to the atomic unit."""

from __future__ import annotations

from common import keys
from common.account_reads import account_view
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

MARKETS = load_markets(DEFAULT_MARKETS_FILE)
PERP = "BTC-PERP"
OPTION = "BTC-C-40000-20270326"


def test_long_perp_unrealized_pnl_and_margins_at_mark() -> None:
    # Long 0.5 BTC (qty 5000) entered at 30,000.00: entry notional 3e6 × 5000 = 15e9.
    view = account_view(
        MARKETS,
        {keys.total_field("USDC"): "5000000000", keys.locked_field("USDC"): "100"},
        {f"{PERP}:size": "5000", f"{PERP}:entry": "15000000000"},
        {PERP: {"index": "3100000", "mark": "3100000"}},
    )
    (position,) = view["positions"]
    assert position["size"] == 5000
    assert position["avgEntry"] == "3000000"
    assert position["unrealizedPnl"] == str(3_100_000 * 5000 - 15_000_000_000)
    margin = view["margin"]["USDC"]
    equity = 5_000_000_000 + 500_000_000
    initial = 3_100_000 * 5000 * 1000 // 10_000
    maintenance = 3_100_000 * 5000 * 500 // 10_000
    assert margin == {
        "equity": str(equity),
        "initialMargin": str(initial),
        "maintenanceMargin": str(maintenance),
        "freeCollateral": str(equity - initial - 100),
        "unrealizedPnl": "500000000",
    }
    # At the liquidation price, equity equals maintenance margin (within one tick).
    price = position["liquidationPrice"]
    assert 5_000_000_000 + price * 5000 - 15_000_000_000 >= price * 5000 * 500 // 10_000
    below = price - 1
    assert 5_000_000_000 + below * 5000 - 15_000_000_000 < below * 5000 * 500 // 10_000


def test_short_option_writer_margin_is_on_the_underlying_index() -> None:
    view = account_view(
        MARKETS,
        {keys.total_field("USDC"): "1000000000"},
        {f"{OPTION}:size": "-10000", f"{OPTION}:entry": "-50000000"},
        {OPTION: {"index": "3000000", "mark": "4000"}},
    )
    margin = view["margin"]["USDC"]
    assert margin["initialMargin"] == str(3_000_000 * 10_000 * 2000 // 10_000)
    assert margin["equity"] == str(1_000_000_000 - 4000 * 10_000)
    (position,) = view["positions"]
    assert position["avgEntry"] == "5000"
    assert position["liquidationPrice"] is None


def test_average_entry_is_an_exact_decimal_string() -> None:
    view = account_view(
        MARKETS,
        {},
        {f"{PERP}:size": "-2", f"{PERP}:entry": "-600003"},
        {},
    )
    assert view["positions"][0]["avgEntry"] == "300001.5"
    assert view["positions"][0]["markPrice"] == 3_000_000


def test_mark_price_is_the_median_and_the_index_when_a_side_is_empty() -> None:
    from common.risk import mark_price

    markets = load_markets(DEFAULT_MARKETS_FILE)
    perp = markets.markets["BTC-PERP"]
    assert mark_price(perp, 3_000_000, 2_990_000, 3_010_000) == 3_000_000
    assert mark_price(perp, 3_000_000, 3_020_000, 3_030_000) == 3_020_000
    assert mark_price(perp, 3_000_000, None, 3_010_000) == 3_000_000
    call = markets.markets["BTC-C-40000-20270326"]  # strike 40,000.00
    assert mark_price(call, 4_100_000, 90_000, 110_000) == 100_000  # intrinsic 1,000.00
    assert mark_price(call, 3_000_000, 50, 70) == 50  # out of the money: intrinsic 0


def test_an_accounts_leverage_moves_initial_margin_not_maintenance_or_liquidation() -> None:
    """docs/api.md "Leverage": the same long at the market's 10 %, a chosen 20 % and a choice
    below a market that has since raised its own (the market's wins)."""
    balances = {keys.total_field("USDC"): "6250000000"}
    position = {f"{PERP}:size": "10000", f"{PERP}:entry": "30000000000"}
    prices = {PERP: {"index": "3000000", "mark": "3000000"}}
    views = [
        account_view(MARKETS, balances, position, prices, raw)
        for raw in (None, {PERP: "2000"}, {PERP: "500"}, {"ETH-PERP": "5000"})
    ]
    initial = [v["margin"]["USDC"]["initialMargin"] for v in views]
    free = [v["margin"]["USDC"]["freeCollateral"] for v in views]
    assert initial == ["3000000000", "6000000000", "3000000000", "3000000000"]
    assert free == ["3250000000", "250000000", "3250000000", "3250000000"]
    assert {v["margin"]["USDC"]["maintenanceMargin"] for v in views} == {"1500000000"}
    assert {v["positions"][0]["liquidationPrice"] for v in views} == {2_500_000}
