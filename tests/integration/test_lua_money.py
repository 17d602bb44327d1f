"""The money rules written once in Lua (common/lua/money.lua, used by match.lua and the
settler's scripts) and once in Python (common/money.py, common/reservations.py) give the same
integers on random inputs, up to 2^53: each example runs the Lua rules in one EVAL of
tests/support/lua/money_rules.lua on a real redis-server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import money
from common.lua import read_script
from common.markets import Market, load_markets
from common.reservations import OrderTerms, derivative_need, need
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

LIMIT = 2**53
"""Every amount stays below this (API.md §2): the rules are compared on that whole range."""
PROBE_DIR = Path(__file__).resolve().parents[1] / "support" / "lua"
PERP = load_markets(DEFAULT_MARKETS_FILE).markets["BTC-PERP"]
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def up_to(bound: int) -> st.SearchStrategy[int]:
    """0..bound, often at the top of the range (near 2^53 when the bound is)."""
    return st.one_of(st.integers(0, bound), st.integers(max(bound - 1_000, 0), bound))


bps = st.one_of(st.sampled_from([0, 1, 5, 9_999, 10_000]), st.integers(0, 10_000))
multipliers = st.one_of(st.sampled_from([1, 10, 1_000_000]), st.integers(1, 10**9))


@st.composite
def notional_terms(draw: Any, bound: int) -> tuple[int, int, int]:
    """price, qty, multiplier whose product is at most ``bound``."""
    mult = draw(multipliers)
    price = draw(up_to(bound // mult))
    qty = draw(up_to(bound // (mult * max(price, 1))))
    return price, qty, mult


def market_with(mult: int, margin_bps: int, fee_bps: int) -> Market:
    spec = PERP.spec.model_copy(
        update={"initialMarginBps": max(margin_bps, 1), "takerFeeBps": fee_bps}
    )
    return replace(PERP, spec=spec, notional_multiplier=mult, base_multiplier=mult)


def lua(client: redis.Redis, calls: list[list[Any]]) -> list[str]:
    script = client.register_script(read_script(str(PROBE_DIR), "money_rules"))
    args = [[str(a) if isinstance(a, int) else a for a in call] for call in calls]
    return list(script(keys=[], args=[orjson.dumps(args).decode()]))


def test_the_probe_reports_a_result_that_is_not_an_exact_integer(r: redis.Redis) -> None:
    assert lua(r, [["ceil_bps", "0", "5"], ["muldiv", "7", "1", "2", "0"]]) == ["0", "3"]
    assert lua(r, [["ceil_bps", str(LIMIT), "20000"]])[0].startswith("inexact")


@SETTINGS
@given(n=up_to(LIMIT - 1), fee_bps=bps)
def test_fee_and_margin_round_up_alike(r: redis.Redis, n: int, fee_bps: int) -> None:
    expected = str(money.fee(n, fee_bps))
    assert str(money.margin(n, fee_bps)) == expected
    assert lua(r, [["ceil_bps", n, fee_bps]]) == [expected]


@SETTINGS
@given(
    c=st.integers(1, LIMIT - 1).flatmap(
        lambda c: st.tuples(st.just(c), up_to(LIMIT - 1), up_to(c))
    ),
    up=st.booleans(),
)
def test_muldiv_is_exact_where_the_product_passes_2_53(
    r: redis.Redis, c: tuple[int, int, int], up: bool
) -> None:
    divisor, a, b = c  # b <= c, so a * b / c < 2^53
    expected = money.ceil_div(a * b, divisor) if up else a * b // divisor
    assert lua(r, [["muldiv", a, b, divisor, int(up)]]) == [str(expected)]


@SETTINGS
@given(price=up_to(LIMIT - 1), mark=up_to(LIMIT - 1), band=st.integers(1, 10_000))
def test_open_loss_and_price_band(r: redis.Redis, price: int, mark: int, band: int) -> None:
    band_mark = mark // 2  # the band's top stays below 2^53
    low, high = money.price_band(band_mark, band)
    assert lua(
        r,
        [["open_loss", "BUY", price, mark], ["open_loss", "SELL", price, mark],
         ["price_band", band_mark, band]],
    ) == [
        str(money.open_loss_per_unit(True, price, mark)),
        str(money.open_loss_per_unit(False, price, mark)),
        f"{low}|{high}",
    ]  # fmt: skip


@SETTINGS
@given(terms=notional_terms(LIMIT // 2 - 1), margin_bps=bps, fee_bps=bps)
def test_spot_buy_and_full_margin_reservations(
    r: redis.Redis, terms: tuple[int, int, int], margin_bps: int, fee_bps: int
) -> None:
    price, qty, mult = terms
    market = market_with(mult, margin_bps, fee_bps)
    margin_bps = market.spec.initialMarginBps or 0
    assert lua(
        r,
        [["spot_buy_need", price, qty, mult, fee_bps],
         ["reservation_need", "margin", qty, price, qty, mult, margin_bps, fee_bps, 0, 0, 0, 0]],
    ) == [
        str(money.spot_buy_reservation(market, price, qty)),
        str(money.derivative_reservation(market, price, qty)),
    ]  # fmt: skip


@st.composite
def derivative_orders(draw: Any) -> dict[str, int]:
    """A derivative order's terms, every notional of its reservation below 2^53 / 3."""
    third = LIMIT // 3 - 1
    price, qty, mult = draw(notional_terms(third))
    cap = third // mult
    rest = draw(st.integers(0, qty))
    opening = draw(st.integers(0, qty))
    margin_price = draw(up_to(cap // max(opening, 1)))
    loss = draw(up_to(cap // max(opening, 1)))
    reserved = draw(up_to(LIMIT - 1))
    return {"price": price, "qty": qty, "mult": mult, "rest": rest, "open": opening,
            "margin_price": margin_price, "loss": loss, "reserved": reserved}  # fmt: skip


@SETTINGS
@given(order=derivative_orders(), margin_bps=bps, fee_bps=bps, chosen_bps=bps)
def test_every_reservation_kind_needs_the_same(
    r: redis.Redis, order: dict[str, int], margin_bps: int, fee_bps: int, chosen_bps: int
) -> None:
    """Python's and Lua's rules agree for every kind; a ``deriv`` order reserved at an
    account's own initial margin (``chosen_bps``, 0: the market's; docs/api.md "Leverage")
    is trimmed by the settler at that value, as settlement._terms_args passes it."""
    o = order
    market = market_with(o["mult"], margin_bps, fee_bps)
    margin_bps = market.spec.initialMarginBps or 0
    kinds = ["deriv", "quote", "base", "margin", "fee", "none"]
    if o["qty"] > 0:
        kinds.append("prop")
    calls: list[list[Any]] = [
        ["derivative_need", o["price"], o["rest"], o["open"], o["margin_price"], o["loss"],
         o["mult"], chosen_bps or margin_bps, fee_bps],
    ]  # fmt: skip
    expected = [
        str(derivative_need(
            market, o["price"], o["rest"], o["open"], o["margin_price"], o["loss"], chosen_bps
        ))
    ]  # fmt: skip
    for kind in kinds:
        im = chosen_bps if kind == "deriv" else 0
        terms = OrderTerms(
            kind, o["price"], o["qty"], o["reserved"] if kind == "prop" else 0, o["open"],
            o["margin_price"], o["loss"], im,
        )  # fmt: skip
        calls.append(
            ["reservation_need", kind, o["rest"], o["price"], o["qty"], o["mult"],
             im or margin_bps, fee_bps, terms.reserved, o["open"], o["margin_price"], o["loss"]]
        )  # fmt: skip
        held = need(market, terms, o["rest"])
        expected.append("nil" if held is None else str(held))
    assert lua(r, calls) == expected
