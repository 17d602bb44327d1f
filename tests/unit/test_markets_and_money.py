"""The markets file loader refuses bad files by name; money math is exact and rounds up."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import keys, money
from common.markets import MarketsFileError, load_markets, parse_markets
from common.settings import DEFAULT_MARKETS_FILE
from common.types import Product
from services.matcher.consumer import market_cfg_fields

GOOD: dict[str, Any] = {
    "assets": {"USDC": {"decimals": 6}, "BTC": {"decimals": 8}},
    "markets": {
        "BTC-USDC": {
            "product": "SPOT", "base": "BTC", "quote": "USDC", "priceScale": 2,
            "qtyScale": 4, "tickSize": 1, "lotSize": 1, "minQty": 1, "makerFeeBps": 1,
            "takerFeeBps": 5, "indexPrice": 3000000,
        }
    },
}  # fmt: skip


def with_market(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(GOOD)
    document["markets"]["BTC-USDC"].update(changes)
    return document


def test_shipped_file_has_one_market_of_each_product() -> None:
    markets = load_markets(DEFAULT_MARKETS_FILE)
    assert {m.product for m in markets.markets.values()} == set(Product)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tickSize": 0}, "market BTC-USDC: field tickSize"),
        ({"quote": "EUR"}, "market BTC-USDC: field quote: unknown asset 'EUR'"),
        ({"priceScale": 5}, "market BTC-USDC: field priceScale"),
        ({"product": "PERP"}, "market BTC-USDC: field initialMarginBps: required for PERP"),
        ({"tickSize": "1"}, "market BTC-USDC: field tickSize"),
        ({"colour": "red"}, "market BTC-USDC: field colour"),
        ({"minQty": 3, "lotSize": 2}, "market BTC-USDC: field minQty"),
        ({"selfTradePrevention": "DECREMENT_BOTH"}, "market BTC-USDC: field selfTradePrevention"),
        ({"selfTradePrevention": "expire_taker"}, "market BTC-USDC: field selfTradePrevention"),
    ],
)
def test_bad_market_is_refused_naming_market_and_field(
    changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(MarketsFileError, match=expected):
        parse_markets(with_market(**changes))


def test_self_trade_prevention_defaults_to_expire_maker_and_reaches_the_matcher() -> None:
    """The market's mode (docs/api.md "Self-trade prevention"): EXPIRE_MAKER unless the file
    says otherwise, shown with the market's fields and written to the matcher's cfg."""
    default = parse_markets(GOOD).markets["BTC-USDC"]
    assert default.public()["selfTradePrevention"] == "EXPIRE_MAKER"
    assert market_cfg_fields(default)["selfTradePrevention"] == "EXPIRE_MAKER"
    for mode in ("EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH", "DECREMENT"):
        market = parse_markets(with_market(selfTradePrevention=mode)).markets["BTC-USDC"]
        assert market.public()["selfTradePrevention"] == mode
        assert market_cfg_fields(market)["selfTradePrevention"] == mode


def test_unreadable_file_is_refused_with_its_path(tmp_path: Any) -> None:
    path = tmp_path / "markets.yaml"
    path.write_text("assets: [unclosed")
    with pytest.raises(MarketsFileError, match="not valid YAML"):
        load_markets(path)


def test_spot_amounts_follow_the_contract_formulas() -> None:
    market = parse_markets(GOOD).markets["BTC-USDC"]
    assert money.notional(market, 3_000_000, 1_000) == 3_000_000_000
    assert money.base_units(market, 1_000) == 10_000_000
    assert money.spot_buy_reservation(market, 3_000_000, 1_000) == 3_000_000_000 + 1_500_000
    assert money.fee(1, 5) == 1  # rounds up, in the exchange's favour
    assert money.fee(0, 5) == 0


@given(st.integers(min_value=0, max_value=2**80), st.integers(min_value=0, max_value=10_000))
def test_fee_is_the_exact_ceiling(amount: int, bps: int) -> None:
    charged = money.fee(amount, bps)
    assert charged * 10_000 >= amount * bps > (charged - 1) * 10_000 or charged == 0


@given(st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=1, max_value=10**9))
def test_format_price_round_trips_terminating_fractions(numerator: int, power: int) -> None:
    denominator = 2 ** (power % 19) * 5 ** (power % 7)
    text = money.format_price(numerator, denominator)
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole) * 10 ** len(fraction) + int(fraction or 0)
    assert value * denominator == abs(numerator) * 10 ** len(fraction)


def test_every_key_of_a_market_or_account_shares_its_hash_tag() -> None:
    market_keys = [keys.market_in("X"), keys.book_bids("X"), keys.market_order("X", "u", "c")]
    assert all("{X}" in key for key in market_keys)
    assert all("{0xab}" in key for key in [keys.balances("0xab"), keys.outbox("0xab")])
