"""What the HTTP oracle accepts from a source, and how its health reads in /metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from common import oracle_health
from services.gateway.metrics import _Reading, oracle_families
from services.settler.oracle import (
    BELOW_2_53,
    SourceError,
    move_too_large,
    parse_document,
    parse_price,
    shown,
    split_entries,
)


@pytest.mark.parametrize(
    ("value", "price"),
    [
        (1, 1),
        (3_000_000, 3_000_000),
        (BELOW_2_53 - 1, BELOW_2_53 - 1),
        ("3000000", 3_000_000),
        ("9007199254740991", BELOW_2_53 - 1),
    ],
)
def test_positive_integers_below_2_53_are_prices(value: Any, price: int) -> None:
    assert parse_price(value) == price


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        BELOW_2_53,
        10**30,
        True,
        False,
        3_000_000.0,
        1e6,
        float("nan"),
        float("inf"),
        None,
        [3_000_000],
        {"price": 3_000_000},
        "",
        "0",
        "-3000000",
        "+3000000",
        "03000000",
        " 3000000",
        "3000000 ",
        "3000000\n",
        "3_000_000",
        "3,000,000",
        "3000000.0",
        "3e6",
        "0x2dc6c0",
        "²",
        "３０００",
        "٣٠٠٠",
        "9007199254740992",
        "99999999999999999",
    ],
)
def test_anything_else_is_not_a_price(value: Any) -> None:
    assert parse_price(value) is None


def test_move_bound_is_exact_in_basis_points() -> None:
    assert not move_too_large(3_300_000, 3_000_000, 1000)  # +10.00 %
    assert move_too_large(3_300_001, 3_000_000, 1000)
    assert not move_too_large(2_700_000, 3_000_000, 1000)  # −10.00 %
    assert move_too_large(2_699_999, 3_000_000, 1000)
    assert not move_too_large(1, 3_000_000, 0)  # 0: no bound
    assert move_too_large(BELOW_2_53 - 1, 1, 1_000_000)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", oracle_health.INVALID_JSON),
        (b"{", oracle_health.INVALID_JSON),
        (b"\xff\xfe\x00garbage", oracle_health.INVALID_JSON),
        (b"[" * 100_000 + b"]" * 100_000, oracle_health.INVALID_JSON),
        (b"[]", oracle_health.INVALID_SHAPE),
        (b"3000000", oracle_health.INVALID_SHAPE),
        (b'"markets"', oracle_health.INVALID_SHAPE),
        (b"{}", oracle_health.INVALID_SHAPE),
        (b'{"markets": {"BTC-PERP": 3000000}}', oracle_health.INVALID_SHAPE),
        (b'{"markets": null}', oracle_health.INVALID_SHAPE),
    ],
)
def test_a_body_that_is_not_the_documented_json_is_refused_whole(body: bytes, reason: str) -> None:
    with pytest.raises(SourceError) as raised:
        parse_document(body)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("body", "received"),
    [
        (b"[1, 2]", "JSON an array"),
        (b'"markets"', "JSON a string"),
        (b'{"prices": [], "ts": 1}', "a JSON object without \"markets\" (keys ['prices', 'ts'])"),
        (b'{"markets": {"BTC-PERP": 1}}', 'a JSON object whose "markets" is an object'),
        (b'{"markets": true}', 'a JSON object whose "markets" is a boolean'),
    ],
)
def test_a_refused_shape_says_what_was_received(body: bytes, received: str) -> None:
    with pytest.raises(SourceError) as raised:
        parse_document(body)
    assert raised.value.received == received


def test_a_deep_or_huge_value_is_shown_short() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    assert shown(deep) == "[[[[...]]]]"
    assert len(shown("x" * 1_000_000)) <= 120
    assert len(shown(list(range(1_000_000)))) <= 120


def test_a_huge_json_integer_is_not_converted_and_is_no_price() -> None:
    body = b'{"markets": [{"symbol": "BTC-PERP", "price": ' + b"9" * 5000 + b"}]}"
    sample = split_entries(parse_document(body))
    assert parse_price(sample.prices["BTC-PERP"]) is None


def test_entries_without_a_symbol_and_symbols_given_twice_are_dropped() -> None:
    entries = [
        {"symbol": "BTC-PERP", "price": 1},
        {"symbol": "ETH-PERP", "price": 2},
        {"symbol": "BTC-PERP", "price": 3},
        {"price": 4},
        {"symbol": 5, "price": 5},
        "BTC-USDC",
        None,
        {"symbol": "BTC-USDC", "price": "6"},
    ]
    sample = split_entries(entries)
    assert sample.prices == {"ETH-PERP": 2, "BTC-USDC": "6"}
    assert sample.bad_entries == [
        {"symbol": "BTC-PERP", "price": 3},
        {"price": 4},
        {"symbol": 5, "price": 5},
        "BTC-USDC",
        None,
    ]


def test_a_well_formed_body_gives_raw_prices_by_symbol() -> None:
    body = json.dumps({"markets": [{"symbol": "BTC-PERP", "price": 3_000_000, "expiry": None}]})
    assert split_entries(parse_document(body.encode())).prices == {"BTC-PERP": 3_000_000}


def test_health_hash_renders_as_prometheus_counters_and_gauges() -> None:
    raw = {
        oracle_health.ignored_field(oracle_health.INVALID_PRICE, "BTC-PERP"): "2",
        oracle_health.ignored_field(oracle_health.BODY_TOO_LARGE): "1",
        oracle_health.failure_field(oracle_health.BODY_TOO_LARGE): "1",
        oracle_health.failure_field(oracle_health.HTTP_STATUS): "4",
        oracle_health.CONSECUTIVE_FAILURES: "3",
        oracle_health.LAST_SUCCESS_MS: "1700000000500",
        oracle_health.LAST_FAILURE_MS: "1700000004500",
        oracle_health.LAST_FAILURE: "http_status: HTTP status 503",
    }
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reading(oracle_families(raw)))
    lines = set(generate_latest(registry).decode().splitlines())
    assert {
        'dex_oracle_ignored_total{market="BTC-PERP",reason="invalid_price"} 2.0',
        'dex_oracle_ignored_total{market="",reason="body_too_large"} 1.0',
        'dex_oracle_source_failures_total{reason="body_too_large"} 1.0',
        'dex_oracle_source_failures_total{reason="http_status"} 4.0',
        'dex_oracle_source_failures_total{reason="unreachable"} 0.0',
        'dex_oracle_source_failures_total{reason="invalid_json"} 0.0',
        'dex_oracle_source_failures_total{reason="invalid_shape"} 0.0',
        "dex_oracle_consecutive_failures 3.0",
        "dex_oracle_last_success_timestamp_seconds 1.7000000005e+09",
        "dex_oracle_last_failure_timestamp_seconds 1.7000000045e+09",
    } <= lines


def test_no_health_hash_renders_nothing() -> None:
    assert oracle_families({}) == []
