"""The TWAP schedule's arithmetic (services/gateway/twap.py), integers only: slice sizes sum to
the quantity, each a multiple of the lot and at least minQty, randomized ones within 80-120 % of
the even share; a slice's limit never past its slippage bound from the best price."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.types import Side
from services.gateway.twap import draw_pct, slice_count, slice_price, slice_qty


def schedule(qty: int, n: int, lot: int, min_qty: int, randomize: bool) -> list[int]:
    sizes, remaining = [], qty
    for k in range(n):
        percent = draw_pct("0xabc", "tw", k) if randomize else None
        size = slice_qty(remaining, k, n, lot, min_qty, percent)
        assert 0 <= size <= remaining
        sizes.append(size)
        remaining -= size
    return sizes


@settings(max_examples=60, deadline=None)
@given(
    lots=st.integers(1, 10**6),
    lot=st.sampled_from([1, 5, 100]),
    min_lots=st.integers(1, 20),
    minutes=st.integers(5, 60),
    randomize=st.booleans(),
)
def test_slices_sum_to_the_qty_in_lots_of_at_least_min_qty(
    lots: int, lot: int, min_lots: int, minutes: int, randomize: bool
) -> None:
    min_qty = min_lots * lot
    qty = max(lots, min_lots) * lot
    sizes = schedule(qty, slice_count(minutes), lot, min_qty, randomize)
    assert sum(sizes) == qty
    assert all(size % lot == 0 and (size == 0 or size >= min_qty) for size in sizes)


def test_even_slices_and_randomized_ones_within_their_bounds() -> None:
    assert schedule(600, 20, 1, 1, False) == [30] * 20
    assert schedule(1000, 10, 1, 1, False) == [100] * 10
    sizes, remaining = schedule(997, 10, 1, 1, True), 997
    for k, size in enumerate(sizes[:-1]):
        share = remaining // (10 - k)
        assert share * 80 // 100 <= size <= share * 120 // 100
        remaining -= size
    assert sum(sizes) == 997 and len(set(sizes)) > 1
    assert schedule(7, 10, 1, 1, False) == [0] * 3 + [1] * 7  # below the lot carries
    assert sum(schedule(10**6, slice_count(1440), 1, 1, True)) == 10**6
    for user_k in range(20):  # a slice never leaves less than minQty behind it
        sizes = [slice_qty(20, 0, 2, 1, 10, 80 + user_k * 2)]
        sizes.append(slice_qty(20 - sizes[0], 1, 2, 1, 10))
        assert sum(sizes) == 20 and set(sizes) <= {0, 10, 20}


def test_the_draw_is_the_same_for_every_attempt_at_a_slice() -> None:
    draws = [draw_pct("0xabc", "tw", k) for k in range(200)]
    assert draws == [draw_pct("0xabc", "tw", k) for k in range(200)]
    assert min(draws) >= 80 and max(draws) <= 120 and len(set(draws)) > 20


@given(best=st.integers(1, 2**53 // 20_000), bps=st.integers(1, 5000), tick=st.integers(1, 1000))
def test_a_slice_limit_is_on_the_tick_and_never_past_its_bound(
    best: int, bps: int, tick: int
) -> None:
    best = best * tick  # the book's prices are on the tick
    buy, sell = slice_price(Side.BUY, best, bps, tick), slice_price(Side.SELL, best, bps, tick)
    assert buy % tick == 0 and best <= buy and buy * 10_000 <= best * (10_000 + bps)
    assert sell % tick == 0 and tick <= sell <= best
    assert sell == tick or sell * 10_000 >= best * (10_000 - bps)
