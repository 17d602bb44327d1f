"""The gateway's brief caches (context.TtlCache) and the HGETALL reply's dict (transport)."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.direct import pairs_to_dict
from services.gateway.context import TtlCache


def test_peek_answers_a_value_only_while_it_is_fresh() -> None:
    cache: TtlCache[str] = TtlCache(0.05)
    loads: list[str] = []

    async def load() -> str:
        loads.append("x")
        return f"value {len(loads)}"

    assert cache.peek("BTC-USDC") is None  # nothing loaded yet
    assert asyncio.run(cache.get("BTC-USDC", load)) == "value 1"
    assert cache.peek("BTC-USDC") == "value 1"
    assert cache.peek("ETH-USDC") is None
    time.sleep(0.06)
    assert cache.peek("BTC-USDC") is None  # stale: the next get loads again
    assert asyncio.run(cache.get("BTC-USDC", load)) == "value 2"
    cache.forget("BTC-USDC")
    assert cache.peek("BTC-USDC") is None
    assert loads == ["x", "x"]


def test_peek_answers_a_false_value_as_it_is() -> None:
    cache: TtlCache[bool] = TtlCache(10)

    async def load() -> bool:
        return False

    assert asyncio.run(cache.get("memory", load)) is False
    assert cache.peek("memory") is False


def test_pairs_to_dict_pairs_fields_and_values_in_order() -> None:
    assert pairs_to_dict([]) == {}
    assert pairs_to_dict(["BTC-PERP:size", "3", "BTC-PERP:entry", "9000000"]) == {
        "BTC-PERP:size": "3",
        "BTC-PERP:entry": "9000000",
    }
    with pytest.raises(ValueError):
        pairs_to_dict(["a field without its value"])
    with pytest.raises(ValueError):
        pairs_to_dict(["a", "1", "b"])
