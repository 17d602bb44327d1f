"""JSON nested deeper than any real body is refused before the json module sees it: with the
recursion limit a dependency sets (py_ecc, under eth-account: 100,000) the json module's C
scanner would overflow the process's stack on it instead of raising."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from services.gateway.errors import ApiError
from services.gateway.parsing import loads
from services.settler.oracle import SourceError, parse_document

DEEP = b"[" * 60_000 + b"]" * 60_000


@pytest.fixture
def high_recursion_limit() -> Iterator[None]:
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


@pytest.mark.usefixtures("high_recursion_limit")
def test_a_deeply_nested_request_body_is_400() -> None:
    with pytest.raises(ApiError) as refused:
        loads(b'{"a": ' + DEEP + b"}")
    assert refused.value.code == "INVALID_REQUEST"


@pytest.mark.usefixtures("high_recursion_limit")
def test_a_deeply_nested_oracle_body_is_refused_as_invalid_json() -> None:
    with pytest.raises(SourceError) as refused:
        parse_document(DEEP)
    assert refused.value.reason == "invalid_json"
