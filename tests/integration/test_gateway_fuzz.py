"""Fuzz: thousands of hostile requests (hypothesis) against the app on a real Redis.

Every route gets mangled bodies (valid signed bodies with fields dropped, added, retyped or
re-valued), odd path parameters, query strings and headers. No answer may be a 5xx, every
error must be in the contract's shape, and no balance may change. ``DEX_FULL_TESTS=1`` runs
5,000 examples; the default suite runs 800.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gateway import ADMIN, gateway_client
from support.signing import Trader

pytestmark = pytest.mark.integration

EXAMPLES = 5_000 if os.environ.get("DEX_FULL_TESTS") == "1" else 800
TRADER = Trader()
MARKETS = ["BTC-USDC", "BTC-PERP", "BTC-FUT-20270326", "BTC-C-40000-20270326"]

WRITE_ROUTES = ["/v1/orders", "/v1/orders/cancel", "/v1/orders/cancel-all", "/v1/withdrawals"]
ADMIN_WRITES = ["/v1/admin/deposits", "/v1/admin/oracle"]
READ_TEMPLATES = [
    "/v1/health", "/v1/info", "/v1/markets", "/v1/markets/{m}", "/v1/markets/{m}/depth",
    "/v1/markets/{m}/trades", "/v1/markets/{m}/ticker", "/v1/markets/{m}/candles",
    "/v1/orders/{u}/{c}", "/v1/accounts/{u}/orders", "/v1/accounts/{u}/fills",
    "/v1/accounts/{u}/balances", "/v1/accounts/{u}/positions", "/v1/accounts/{u}/margin",
    "/v1/accounts/{u}/withdrawals", "/v1/system/accounts", "/v1/admin/audit",
    "/v1/admin/markets/{m}/halt", "/v1/admin/markets/{m}/resume",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.sampled_from(["", "0", "-1", "1e9", "0x", "BUY", "MARKET", "PERP", "GTC", "USDC"]),
    st.sampled_from(["abc\n", "5\n", "\u00b2", "\u0663", "\uff15", "__RESERVED__", "NaN"]),
    st.sampled_from(MARKETS),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
path_parts = st.one_of(
    st.sampled_from([*MARKETS, TRADER.address, "fees", "insurance", "x", "%20", "..", "0x"]),
    st.text(alphabet="abcdefABCDEF0123456789x-_.:", min_size=1, max_size=50),
)
queries = st.dictionaries(
    st.sampled_from(["limit", "market", "open", "interval", "wait", "junk"]),
    st.one_of(st.text(max_size=12), st.sampled_from(["0", "1", "-5", "1001", "5m", "99999999999"])),
    max_size=3,
)


def valid_body(route: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    if route == "/v1/orders":
        return TRADER.order("BTC-USDC", "BUY", 1_000, 10, timeInForce="GTC")
    from support.signing import CHAIN_ID, VERIFYING_CONTRACT

    from common.eip712 import sign

    messages = {
        "/v1/orders/cancel": ("Cancel", {"userId": TRADER.address, "market": "BTC-USDC",
                                         "clientOrderId": "c", "ts": now}),
        "/v1/orders/cancel-all": ("CancelAll", {"userId": TRADER.address, "market": "", "ts": now}),
        "/v1/withdrawals": ("Withdraw", {"userId": TRADER.address, "asset": "USDC",
                                         "amount": 5, "ts": now}),
        "/v1/admin/deposits": ("", {"userId": TRADER.address, "asset": "USDC", "amount": 5}),
        "/v1/admin/oracle": ("", {"market": "BTC-PERP", "indexPrice": 3_000_000}),
    }  # fmt: skip
    primary, message = messages[route]
    if not primary:
        return message
    return {**message, "sig": sign(TRADER.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


BODIES = {route: valid_body(route) for route in WRITE_ROUTES + ADMIN_WRITES}


RAW_TEXTS = [
    b'{"userId":"\\ud800"}',
    b'{"\\udfff":1}',
    b'{"a":1,"a":2}',
    b'{"amount":NaN}',
    b'{"amount":Infinity}',
    b'{"amount":1e400}',
    b'{"amount":' + b"9" * 5000 + b"}",
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
]


@st.composite
def mangled(draw: st.DrawFn, route: str) -> Any:
    body = dict(BODIES[route])
    kind = draw(st.sampled_from(["drop", "add", "retype", "revalue", "raw", "many"]))
    if kind == "raw":
        return draw(st.one_of(json_values, st.binary(max_size=200), st.sampled_from(RAW_TEXTS)))
    steps = draw(st.integers(1, 4)) if kind == "many" else 1
    for _ in range(steps):
        field = draw(st.sampled_from(sorted(body)))
        action = kind if kind != "many" else draw(st.sampled_from(["drop", "add", "revalue"]))
        if action == "drop":
            body.pop(field, None)
        elif action == "add":
            body[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        else:
            body[field] = draw(json_values)
        if not body:
            break
    if body == BODIES[route]:
        body["sig"] = "0x" + "00" * 65  # never send the valid signed body itself
    return body


requests_strategy = st.one_of(
    st.builds(
        lambda route, body, query: ("POST", route, body, query),
        st.sampled_from(WRITE_ROUTES + ADMIN_WRITES)
        .flatmap(lambda route: st.tuples(st.just(route), mangled(route)))
        .map(lambda pair: pair[0]),
        st.none(),
        queries,
    ),
    st.sampled_from(WRITE_ROUTES + ADMIN_WRITES).flatmap(
        lambda route: st.tuples(st.just("POST"), st.just(route), mangled(route), queries)
    ),
    st.tuples(
        st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
        st.builds(
            lambda template, m, u, c: template.format(m=m, u=u, c=c),
            st.sampled_from(READ_TEMPLATES),
            path_parts,
            path_parts,
            path_parts,
        ),
        st.none(),
        queries,
    ),
)


@pytest.fixture(scope="module")
def fuzz_env(redis_server: Any) -> Iterator[tuple[TestClient, redis.Redis]]:
    redis_server.flushall()
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with gateway_client(redis_server.url, rate_limit_ip=0, rate_limit_user=0) as client:
        for asset, amount in (("USDC", 10**12), ("BTC", 10**10)):
            response = client.post(
                "/v1/admin/deposits",
                json={"userId": TRADER.address, "asset": asset, "amount": amount},
                headers=ADMIN,
            )
            assert response.status_code == 200
        yield client, r
    r.close()


def balances(r: redis.Redis) -> dict[str, dict[str, str]]:
    return {key: r.hgetall(key) for key in r.scan_iter("dex:*:bal")}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(request=requests_strategy)
def test_no_request_gets_a_5xx_or_moves_money(
    fuzz_env: tuple[TestClient, redis.Redis], request: tuple[str, str, Any, dict[str, str]]
) -> None:
    client, r = fuzz_env
    method, path, body, query = request
    before = balances(r)
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, params=query)
    elif body is None:
        response = client.request(method, path, params=query)
    else:
        response = client.request(method, path, json=body, params=query)
    assert response.status_code < 500, (method, path, body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"} and error["code"].isupper()
    assert balances(r) == before
