"""Matcher replicas split the markets by StatefulSet ordinal (or an explicit shard index)."""

from __future__ import annotations

import pytest

from services.matcher.__main__ import shard_markets

MARKETS = ["BTC-USDC", "BTC-PERP", "BTC-FUT-20270326", "BTC-C-40000-20270326", "ETH-USDC"]


def test_replicas_share_every_market_once_and_evenly() -> None:
    shares = [shard_markets(MARKETS, 2, None, f"matcher-{k}") for k in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(MARKETS)
    assert not set(shares[0]) & set(shares[1])
    assert sorted(len(share) for share in shares) == [2, 3]


def test_an_explicit_shard_wins_over_the_hostname_and_one_shard_owns_all() -> None:
    assert shard_markets(MARKETS, 2, 1, "matcher-0") == shard_markets(MARKETS, 2, None, "m-1")
    assert shard_markets(MARKETS, 0, None, "laptop") == MARKETS


def test_a_hostname_without_an_ordinal_or_a_shard_out_of_range_stops_start_up() -> None:
    with pytest.raises(SystemExit, match="hostname"):
        shard_markets(MARKETS, 2, None, "laptop")
    with pytest.raises(SystemExit, match="outside"):
        shard_markets(MARKETS, 2, 2, "matcher-2")
