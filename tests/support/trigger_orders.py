"""Trigger orders through the real processes (tests/integration/test_trigger_*.py and
test_attached_tpsl.py): one exchange per test module with spare copies of BTC-USDC (S0-USDC...)
and BTC-PERP (F0-PERP...), signed OrderV4 bodies, and the reads the tests assert on.

A test module imports the fixtures ``exchange`` and ``audited`` from here (as
``exchange_fixture`` and ``audited_fixture``, so a test's ``exchange`` argument shadows no
import): pytest registers a fixture imported into a module as that module's own, so
``exchange`` (module scope) is one exchange per importing module, and ``audited`` (autouse)
checks the auditor's invariants after each of its tests. Under xdist's ``--dist loadfile`` a
module runs on one worker, beside that worker's own redis-server."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from common import keys
from common.eip712 import sign
from common.markets import Market, load_markets
from common.settings import DEFAULT_MARKETS_FILE
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

P = 3_000_000
Q = 1_000
USDC = 10**12
BTC = 10**10
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SPOT_COPIES = 16
PERP_COPIES = 8
_ids = itertools.count()
_markets_taken: set[str] = set()


def module_exchange(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exchange]:
    """One exchange for a module, with spare copies of BTC-USDC (S0..) and BTC-PERP (F0..),
    every copy unused."""
    _markets_taken.clear()
    document = yaml.safe_load(DEFAULT_MARKETS_FILE.read_text())
    for i in range(SPOT_COPIES):
        document["markets"][f"S{i}-USDC"] = dict(document["markets"]["BTC-USDC"])
    for i in range(PERP_COPIES):
        document["markets"][f"F{i}-PERP"] = dict(document["markets"]["BTC-PERP"])
    path = tmp_path_factory.mktemp("trig") / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    redis_server.flushall()
    with Exchange(redis_server.url, DEX_MARKETS_FILE=str(path)) as running:
        running.start("gateway", "matcher", "settler")
        yield running


@pytest.fixture(scope="module", name="exchange")
def exchange_fixture(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exchange]:
    """The importing module's exchange (:func:`module_exchange`)."""
    yield from module_exchange(redis_server, tmp_path_factory)


@pytest.fixture(autouse=True, name="audited")
def audited_fixture(exchange: Exchange) -> Iterator[None]:
    """After each test of the importing module: the auditor's invariants hold."""
    yield
    assert_audit_ok(exchange)


def assert_audit_ok(exchange: Exchange) -> None:
    with exchange.client() as client:
        report = client.get("/v1/admin/audit", headers=ADMIN).json()
    assert report["ok"] is True, report["invariants"]


def fresh_market(prefix: str) -> str:
    """A market copy no other test of the module has used."""
    count = SPOT_COPIES if prefix == "S" else PERP_COPIES
    for i in range(count):
        name = f"{prefix}{i}-USDC" if prefix == "S" else f"{prefix}{i}-PERP"
        if name not in _markets_taken:
            _markets_taken.add(name)
            return name
    raise AssertionError(f"no spare {prefix} market left")


def market_of(exchange: Exchange, name: str) -> Market:
    return load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets[name]


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", USDC)
    exchange.deposit(trader.address, "BTC", BTC)
    return trader


def v4_body(trader: Trader, market: str, side: str, order_type: str, price: int, qty: int,
            trigger: int = 0, **fields: Any) -> dict[str, Any]:  # fmt: skip
    """A signed OrderV4 body (fields: any OrderV4 field to set, e.g. triggerSource)."""
    message: dict[str, Any] = {
        "clientOrderId": fields.pop("cid", f"t{next(_ids)}"),
        "userId": trader.address,
        "market": market,
        "side": side,
        "type": order_type,
        "price": price,
        "qty": qty,
        "product": "SPOT" if market.endswith("USDC") else "PERP",
        "ts": int(time.time() * 1000),
        "timeInForce": "GTC",
        "reduceOnly": False,
        "expiresAt": 0,
        "selfTradePrevention": "",
        "triggerPrice": trigger,
        "triggerSource": "",
        "trailingDelta": 0,
        "trailingUnit": "",
        "closePosition": False,
        "takeProfitPrice": 0,
        "stopLossPrice": 0,
    }
    message |= fields
    message["sig"] = sign(trader.key, "OrderV4", message, CHAIN_ID, VERIFYING_CONTRACT)
    return message


def post(exchange: Exchange, path: str, body: dict[str, Any]) -> httpx.Response:
    with exchange.client() as client:
        return client.post(path, json=body)


def placed(exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    response = post(exchange, "/v1/orders?wait=1", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def limit(exchange: Exchange, trader: Trader, market: str, side: str, price: int, qty: int,
          tif: str = "GTC") -> dict[str, Any]:  # fmt: skip
    product = "SPOT" if market.endswith("USDC") else "PERP"
    body = trader.order(market, side, price, qty, product=product, timeInForce=tif)
    return placed(exchange, body)


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def settles_to(exchange: Exchange, trader: Trader, asset: str, expected: tuple[int, int]) -> None:
    ok = wait_for(lambda: exchange.balance(trader.address, asset) == expected, 20)
    assert ok, (asset, exchange.balance(trader.address, asset), expected)


def push_index(exchange: Exchange, market: str, index: int) -> None:
    """The operator's oracle push: index, and mark = median(index, best bid, best ask)."""
    with exchange.client() as client:
        response = client.post(
            "/v1/admin/oracle", json={"market": market, "indexPrice": index}, headers=ADMIN
        )
    assert response.status_code == 200, response.text


def position(exchange: Exchange, user: str, market: str) -> int:
    """The user's position size in market, as the settler keeps it."""
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        return int(r.hget(keys.positions(user.lower()), f"{market}:size") or 0)
