"""The settler behind the real gateway and matcher: signed orders over HTTP, matched in Lua,
settled by a Celery worker that beat drives; every balance checked to the atomic unit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import wait_for
from support.signing import Trader

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PERP, FUT, OPT = "BTC-PERP", "BTC-FUT-SOON", "BTC-C-SOON"
EXPIRY_DELAY_MS = 25_000


@pytest.fixture
def markets_file(tmp_path: Path) -> Path:
    """The shipped markets plus a future and a call option that expire in a few seconds."""
    document = yaml.safe_load((REPO / "deploy" / "markets.yaml").read_text())
    soon = int(time.time() * 1000) + EXPIRY_DELAY_MS
    base = document["markets"]
    base[FUT] = {**base["BTC-FUT-20270326"], "expiryTs": soon}
    base[OPT] = {**base["BTC-C-40000-20270326"], "expiryTs": soon}
    path = tmp_path / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def exchange(redis_url: str, markets_file: Path) -> Iterator[Exchange]:
    with Exchange(redis_url, DEX_MARKETS_FILE=str(markets_file)) as running:
        running.start("gateway", "matcher", "settler", "beat")
        yield running


def place(exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    with exchange.client() as client:
        response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()


def admin(exchange: Exchange, path: str, body: dict[str, Any]) -> Any:
    with exchange.client() as client:
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def settled_to(exchange: Exchange, user: str, expected: tuple[int, int]) -> bool:
    return wait_for(lambda: exchange.balance(user, "USDC") == expected, 30)


def audit(exchange: Exchange) -> dict[str, Any]:
    with exchange.client() as client:
        response = client.get("/v1/admin/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_perp_round_trip_through_the_matcher(exchange: Exchange) -> None:
    a, b = Trader(), Trader()
    for trader in (a, b):
        exchange.deposit(trader.address, "USDC", 10_000_000_000)
    place(exchange, b.order(PERP, "SELL", 3_000_000, 1_000, product="PERP"))
    assert (
        place(exchange, a.order(PERP, "BUY", 3_000_000, 1_000, product="PERP"))["status"]
        == "FILLED"
    )
    place(exchange, b.order(PERP, "BUY", 3_150_000, 1_000, product="PERP"))
    place(exchange, a.order(PERP, "SELL", 3_150_000, 1_000, product="PERP"))
    pnl = 150_000_000
    assert settled_to(exchange, a.address, (10_000_000_000 + pnl - 1_500_000 - 1_575_000, 0)), (
        exchange.log("settler")[-3000:]
    )
    assert settled_to(exchange, b.address, (10_000_000_000 - pnl - 300_000 - 315_000, 0))
    assert exchange.get(f"/v1/accounts/{a.address}/positions") == []
    fills = exchange.get(f"/v1/accounts/{a.address}/fills")
    assert [(f["side"], f["fee"], f["liquidity"]) for f in fills] == [
        ("SELL", "1575000", "TAKER"),
        ("BUY", "1500000", "TAKER"),
    ]
    report = audit(exchange)
    assert report["ok"], report["invariants"]


def test_liquidation_through_the_matcher_uses_the_insurance_fund(exchange: Exchange) -> None:
    a, b, c = Trader(), Trader(), Trader()
    exchange.deposit(a.address, "USDC", 400_000_000)
    exchange.deposit(b.address, "USDC", 10_000_000_000)
    exchange.deposit(c.address, "USDC", 10_000_000_000)
    exchange.deposit("insurance", "USDC", 1_000_000_000)
    place(exchange, b.order(PERP, "SELL", 3_000_000, 1_000, product="PERP"))
    place(exchange, a.order(PERP, "BUY", 3_000_000, 1_000, product="PERP"))
    assert settled_to(exchange, a.address, (398_500_000, 0)), exchange.log("settler")[-3000:]
    place(exchange, c.order(PERP, "BUY", 2_610_000, 500, product="PERP"))  # absorbs half
    # The index falls to 25,000: A's equity is far below maintenance, its collateral too small.
    admin(exchange, "/v1/admin/oracle", {"market": PERP, "indexPrice": 2_500_000})
    emptied = wait_for(lambda: exchange.balance(a.address, "USDC") == (0, 0), 60)
    assert emptied, exchange.log("settler")[-3000:]
    # The liquidation sold 0.05 at 26,100 to C (above the 26,015 bankruptcy price): −195
    # USDC realized and a 0.6525 USDC taker fee; the fund took the other 0.05 at the 25,000
    # mark (−250 USDC) and paid the 47.1525 USDC the collateral fell short by.
    fills = exchange.get(f"/v1/accounts/{a.address}/fills")
    assert (fills[0]["side"], fills[0]["price"], fills[0]["qty"]) == ("SELL", 2_610_000, 500)
    assert fills[0]["fee"] == "652500"
    assert exchange.get(f"/v1/accounts/{a.address}/positions") == []
    system = exchange.get("/v1/system/accounts")
    assert system["insurance"]["USDC"] == str(1_000_000_000 - 47_152_500)
    (taken,) = system["insurancePositions"]
    assert (taken["market"], taken["size"], taken["entryNotional"]) == (PERP, 500, "1250000000")
    positions = exchange.get(f"/v1/accounts/{c.address}/positions")
    assert [(p["size"], p["entryNotional"]) for p in positions] == [(500, "1305000000")]
    report = audit(exchange)
    assert report["ok"], report["invariants"]


def test_future_and_option_expire_through_the_matcher(
    exchange: Exchange, redis_url: str, markets_file: Path
) -> None:
    a, b = Trader(), Trader()
    for trader in (a, b):
        exchange.deposit(trader.address, "USDC", 10_000_000_000)
    place(exchange, b.order(FUT, "SELL", 3_000_000, 1_000, product="FUTURE"))
    place(exchange, a.order(FUT, "BUY", 3_000_000, 1_000, product="FUTURE"))
    place(exchange, b.order(OPT, "SELL", 100_000, 1_000, product="OPTION"))
    place(exchange, a.order(OPT, "BUY", 100_000, 1_000, product="OPTION"))
    resting = place(exchange, b.order(OPT, "SELL", 120_000, 500, product="OPTION"))
    assert resting["status"] == "NEW"
    for symbol in (FUT, OPT):
        admin(exchange, "/v1/admin/oracle", {"market": symbol, "indexPrice": 4_200_000})
    expiry = yaml.safe_load(markets_file.read_text())["markets"][FUT]["expiryTs"]
    time.sleep(max(0.0, expiry / 1000 - time.time()) + 0.5)
    app = Celery("test-client", broker=redis_url)

    def expired() -> bool:
        app.send_task("dex.expiry", queue="periodic")
        return wait_for(
            lambda: (
                exchange.get(f"/v1/markets/{FUT}")["status"] == "EXPIRED"
                and exchange.get(f"/v1/markets/{OPT}")["status"] == "EXPIRED"
                and exchange.get(f"/v1/accounts/{a.address}/positions") == []
            ),
            12,
        )

    assert wait_for(expired, 90), exchange.log("settler")[-3000:]
    app.close()
    order = exchange.get(f"/v1/orders/{b.address}/{resting['clientOrderId']}")
    assert (order["status"], order["reason"]) == ("CXL", "MARKET_EXPIRED")
    future_pnl, option_value, premium = 1_200_000_000, 200_000_000, 100_000_000
    assert settled_to(
        exchange,
        a.address,
        (10_000_000_000 - 1_500_000 - premium - 50_000 + future_pnl + option_value, 0),
    )
    assert settled_to(
        exchange,
        b.address,
        (10_000_000_000 - 300_000 + premium - 10_000 - future_pnl - option_value, 0),
    )
    assert exchange.get(f"/v1/accounts/{b.address}/positions") == []
    report = audit(exchange)
    assert report["ok"], report["invariants"]


def test_reduce_only_order_cut_to_the_position_keeps_the_fee_of_its_rest(
    exchange: Exchange,
) -> None:
    a, b = Trader(), Trader()
    for trader in (a, b):
        exchange.deposit(trader.address, "USDC", 10_000_000_000)
    place(exchange, b.order(PERP, "SELL", 3_000_000, 1_000, product="PERP"))
    place(exchange, a.order(PERP, "BUY", 3_000_000, 1_000, product="PERP"))
    # A reduce-only sell of 0.2 against a 0.1 long: it reserves the fee for 0.2, the matcher
    # cuts it to 0.1; after 0.04 fills, its rest of 0.06 keeps ceil(5 bp of 1,860 USDC).
    body = a.order(PERP, "SELL", 3_100_000, 2_000, product="PERP", reduceOnly=True)
    assert place(exchange, body)["qty"] == 1_000
    place(exchange, b.order(PERP, "BUY", 3_100_000, 400, product="PERP"))
    rest_fee = 930_000  # 3,100,000 × 600 × 5 / 10^4
    pnl, taker, maker = 40_000_000, 1_500_000, 124_000
    assert settled_to(exchange, a.address, (10_000_000_000 - taker + pnl - maker, rest_fee)), (
        exchange.log("settler")[-3000:]
    )
    report = audit(exchange)
    assert report["ok"], report["invariants"]
