"""Inputs that used to break the gateway: each is an exact 4xx that changes nothing, or is
carried through intact (API.md §4, §5; docs/api.md "Inputs").

A ``clientOrderId`` of ``__RESERVED__`` once corrupted the order command (text substitution
on JSON holding user data); a lone surrogate, ``limit=²`` and values ending in a newline
reached a 500 or were silently accepted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from support.gateway import ADMIN, balance, error_of, gateway_client
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
LOCK = 30_015_000  # 0.001 BTC at 30,000.00 USDC: notional 30,000,000 + 5 bps taker fee
TRADER = Trader(
    "0x" + "5e" * 32
)  # a fixed key: test ids name its address, the same in every worker


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        for asset, amount in (("USDC", 100 * LOCK), ("BTC", 10**8)):
            response = running.post(
                "/v1/admin/deposits",
                json={"userId": TRADER.address, "asset": asset, "amount": amount},
                headers=ADMIN,
            )
            assert response.status_code == 200
        yield running


def state(r: redis.Redis) -> dict[str, Any]:
    """Every key but the rate-limit buckets: what a refused request must leave as it was."""
    return {
        key: (r.type(key), r.dump(key))
        for key in sorted(r.scan_iter("dex:*"))
        if not key.startswith("dex:rl:") and not key.endswith(":rl")
    }


def signed(primary: str, message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "sig": sign(TRADER.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the order command is built by an encoder --------------------------------------------
@pytest.mark.parametrize("cid", ["__RESERVED__", "__RESERVED__.__RESERVED__", "reserved:0"])
def test_a_client_order_id_that_looks_like_the_template_is_carried_intact(
    client: TestClient, r: redis.Redis, cid: str
) -> None:
    body = TRADER.order(SPOT, "BUY", 3_000_000, 10, cid=cid)
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"clientOrderId": cid, "status": "ACCEPTED"}
    ((_, fields),) = r.xrange(keys.market_in(SPOT))
    command = orjson.loads(fields["c"])
    assert command["cid"] == cid and command["user"] == TRADER.address.lower()
    assert command["reserved"] == LOCK and command["price"] == 3_000_000
    stored = r.hget(keys.account_order(TRADER.address.lower(), cid), "cmd")
    assert stored == fields["c"]
    assert fields["o"] == "1"  # admitted and XADDed in one call: the order's only entry
    assert client.get(f"/v1/accounts/{TRADER.address}/balances").json()["USDC"] == balance(
        100 * LOCK, LOCK
    )
    order = client.get(f"/v1/orders/{TRADER.address}/{cid}").json()
    assert (order["clientOrderId"], order["status"]) == (cid, "ACCEPTED")


# -- bodies ----------------------------------------------------------------------------
def order_text(**changes: str) -> bytes:
    """A signed order body as JSON text, with some values replaced by raw JSON text."""
    body = TRADER.order(SPOT, "BUY", 3_000_000, 10)
    text = orjson.dumps(body).decode()
    for name, raw in changes.items():
        text = text.replace(orjson.dumps({name: body[name]}).decode()[1:-1], f'"{name}":{raw}')
    return text.encode()


CANCEL = signed(
    "Cancel", {"userId": TRADER.address, "market": SPOT, "clientOrderId": "c", "ts": now_ms()}
)
CANCEL_TEXT = orjson.dumps(CANCEL).decode()

BAD_BODIES: list[tuple[str, str, bytes, tuple[int, str]]] = [
    # a lone surrogate, in every string field of a cancel, as a key, and in other bodies
    ("cancel cid", "/v1/orders/cancel",
     CANCEL_TEXT.replace('"clientOrderId":"c"', '"clientOrderId":"\\ud800"').encode(),
     (400, "INVALID_REQUEST")),
    ("cancel market", "/v1/orders/cancel",
     CANCEL_TEXT.replace(f'"market":"{SPOT}"', '"market":"BTC\\udfff"').encode(),
     (400, "INVALID_REQUEST")),
    ("cancel user", "/v1/orders/cancel",
     CANCEL_TEXT.replace('"userId":"', '"userId":"\\ud800').encode(), (400, "INVALID_REQUEST")),
    ("cancel key", "/v1/orders/cancel",
     CANCEL_TEXT.replace('{"userId"', '{"\\udc00":1,"userId"').encode(),
     (400, "INVALID_REQUEST")),
    ("cancel-all market", "/v1/orders/cancel-all",
     b'{"userId":"%s","market":"\\ud800","ts":1,"sig":"0x"}' % TRADER.address.encode(),
     (400, "INVALID_REQUEST")),
    ("order cid", "/v1/orders", order_text(clientOrderId='"\\ud800x"'), (400, "INVALID_REQUEST")),
    ("order nested", "/v1/orders", order_text(side='["\\ud800"]'), (400, "INVALID_REQUEST")),
    ("withdraw asset", "/v1/withdrawals",
     b'{"userId":"%s","asset":"\\ud800","amount":1,"ts":1,"sig":"0x"}' % TRADER.address.encode(),
     (400, "INVALID_REQUEST")),
    # a value ending in a newline
    ("cid newline", "/v1/orders", order_text(clientOrderId='"abc\\n"'), (400, "INVALID_ORDER")),
    ("user newline", "/v1/orders",
     order_text(userId=f'"{TRADER.address}\\n"'), (400, "INVALID_USER")),
    ("price newline", "/v1/orders", order_text(price='"3000000\\n"'), (400, "INVALID_REQUEST")),
    ("sig newline", "/v1/orders", order_text(sig=f'"0x{"ab" * 65}\\n"'), (400, "INVALID_REQUEST")),
    # non-ASCII digits, huge and non-finite numbers
    ("arabic digits", "/v1/orders", order_text(price='"\\u0663000000"'), (400, "INVALID_REQUEST")),
    ("superscript", "/v1/orders", order_text(qty='"\\u00b2"'), (400, "INVALID_REQUEST")),
    ("fullwidth", "/v1/orders", order_text(qty='"\\uff11\\uff10"'), (400, "INVALID_REQUEST")),
    ("2^256", "/v1/orders", order_text(qty=str(2**256)), (400, "INVALID_REQUEST")),
    ("5000 digits", "/v1/orders", order_text(qty="9" * 5000), (400, "INVALID_REQUEST")),
    ("NaN", "/v1/orders", order_text(qty="NaN"), (400, "INVALID_REQUEST")),
    ("Infinity", "/v1/orders", order_text(qty="-Infinity"), (400, "INVALID_REQUEST")),
    ("1e400", "/v1/orders", order_text(qty="1e400"), (400, "INVALID_REQUEST")),
    ("float", "/v1/orders", order_text(qty="10.0"), (400, "INVALID_REQUEST")),
    # duplicate keys: the signature would cover one value and a proxy might read the other
    ("duplicate", "/v1/orders",
     order_text().replace(b'"side":"BUY"', b'"side":"SELL","side":"BUY"'),
     (400, "INVALID_REQUEST")),
    ("duplicate cancel", "/v1/orders/cancel",
     CANCEL_TEXT.replace('"clientOrderId":"c"', '"clientOrderId":"d","clientOrderId":"c"').encode(),
     (400, "INVALID_REQUEST")),
    # nesting
    ("deep", "/v1/orders", b'{"a":' * 5000 + b"1" + b"}" * 5000, (400, "INVALID_REQUEST")),
    ("deep list", "/v1/withdrawals", b"[" * 20000 + b"]" * 20000, (400, "INVALID_REQUEST")),
    # not UTF-8, not an object
    ("latin-1", "/v1/orders", b'{"clientOrderId":"\xe9"}', (400, "INVALID_REQUEST")),
    ("string", "/v1/orders/cancel", b'"\\ud800"', (400, "INVALID_REQUEST")),
    ("empty", "/v1/withdrawals", b"", (400, "INVALID_REQUEST")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_a_bad_body_is_an_exact_400_and_changes_nothing(
    client: TestClient, r: redis.Redis, path: str, raw: bytes, expected: tuple[int, str]
) -> None:
    before = state(r)
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert error_of(response) == expected, response.text
    assert state(r) == before


DEPOSITS: list[tuple[bytes, tuple[int, str]]] = [
    (b'{"userId":"%s","asset":"USDC","amount":5,"depositId":"\\ud800"}', (400, "INVALID_REQUEST")),
    (b'{"userId":"%s","asset":"\\udcff","amount":5}', (400, "INVALID_REQUEST")),
    (b'{"userId":"%s","asset":"USDC","amount":"5\\n"}', (400, "INVALID_REQUEST")),
    (b'{"userId":"%s","asset":"USDC","amount":"\\u0665"}', (400, "INVALID_REQUEST")),
    (b'{"userId":"%s","asset":"USDC","amount":5,"amount":6}', (400, "INVALID_REQUEST")),
    (b'{"userId":"%s\\n","asset":"USDC","amount":5}', (400, "INVALID_USER")),
]


@pytest.mark.parametrize(("template", "expected"), DEPOSITS)
def test_admin_deposit_inputs(
    client: TestClient, r: redis.Redis, template: bytes, expected: tuple[int, str]
) -> None:
    before = state(r)
    raw = template % TRADER.address.encode()
    response = client.post("/v1/admin/deposits", content=raw, headers=ADMIN)
    assert error_of(response) == expected, response.text
    assert state(r) == before


# -- query strings and paths ---------------------------------------------------------------
LIMIT_PATHS = [
    f"/v1/markets/{SPOT}/depth",
    f"/v1/markets/{SPOT}/trades",
    f"/v1/markets/{SPOT}/candles",
    f"/v1/accounts/{TRADER.address}/orders",
    f"/v1/accounts/{TRADER.address}/fills",
    f"/v1/accounts/{TRADER.address}/withdrawals",
]


@pytest.mark.parametrize("path", LIMIT_PATHS)
@pytest.mark.parametrize(
    "limit", ["\u00b2", "\u0663", "\uff15", "5\n", " 5", "+5", "5.0", "0x10", "", "-0", "0", "-5"]
)
def test_a_limit_that_is_not_a_positive_ascii_integer_is_400(
    client: TestClient, path: str, limit: str
) -> None:
    response = client.get(path, params={"limit": limit})
    assert error_of(response) == (400, "INVALID_REQUEST"), (path, limit, response.text)


@pytest.mark.parametrize("path", LIMIT_PATHS)
def test_a_huge_limit_caps_at_1000_and_leading_zeros_are_read(
    client: TestClient, path: str
) -> None:
    assert client.get(path, params={"limit": "9" * 5000}).status_code == 200
    assert client.get(path, params={"limit": "0007"}).status_code == 200


def test_odd_query_values_elsewhere_are_400_not_500(client: TestClient) -> None:
    user = TRADER.address
    cases = [
        (f"/v1/accounts/{user}/orders", {"open": "\u00b2"}),
        (f"/v1/accounts/{user}/orders", {"open": "1\n"}),
        (f"/v1/accounts/{user}/orders", {"market": "BTC-USDC\n"}),
        (f"/v1/accounts/{user}/fills", {"market": "\u00e9"}),
        (f"/v1/markets/{SPOT}/candles", {"interval": "1m\n"}),
        ("/v1/orders", {"wait": "\u00b2"}),
    ]
    for path, query in cases:
        method = "POST" if path == "/v1/orders" else "GET"
        body = TRADER.order(SPOT, "BUY", 3_000_000, 10) if method == "POST" else None
        response = client.request(method, path, params=query, json=body)
        expected = "UNKNOWN_MARKET" if "market" in query else "INVALID_REQUEST"
        assert error_of(response) == (400, expected), (path, query, response.text)


def test_odd_path_parameters_are_4xx_not_500(client: TestClient) -> None:
    user = TRADER.address
    cases = [
        (f"/v1/orders/{user}/%ED%A0%80", (404, "NOT_FOUND")),
        (f"/v1/orders/{user}/%FF%FE", (404, "NOT_FOUND")),
        (f"/v1/orders/{user}%0A/c", (400, "INVALID_USER")),
        (f"/v1/accounts/{user}%0A/balances", (400, "INVALID_USER")),
        ("/v1/accounts/%ED%A0%80/balances", (400, "INVALID_USER")),
        (f"/v1/accounts/{user[:-1]}\uff10/margin", (400, "INVALID_USER")),
        ("/v1/markets/BTC-USDC%0A", (404, "UNKNOWN_MARKET")),
        ("/v1/markets/%ED%A0%80/depth", (404, "UNKNOWN_MARKET")),
        ("/v1/admin/markets/%FF/halt", (404, "UNKNOWN_MARKET")),
    ]
    for path, expected in cases:
        method = "POST" if path.startswith("/v1/admin/") else "GET"
        response = client.request(method, path, headers=ADMIN)
        assert error_of(response) == expected, (path, response.text)


def test_odd_headers_are_not_500(client: TestClient) -> None:
    headers = {
        "X-Request-ID": "\u00e9\u00e9".encode(),
        "Content-Type": "application/json; charset=\u00e9".encode(),
        "Authorization": b"Bearer \xff",
    }
    response = client.get("/v1/markets", headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.headers["x-request-id"].isascii()
    own = client.get("/v1/markets", headers={"X-Request-ID": "req-7"})
    assert own.headers["x-request-id"] == "req-7"
    response = client.post(
        "/v1/admin/deposits",
        json={"userId": TRADER.address, "asset": "USDC", "amount": 1},
        headers=headers,  # type: ignore[arg-type]
    )
    assert error_of(response) == (403, "FORBIDDEN")
