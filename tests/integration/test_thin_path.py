"""The whole flow once, for real: signed orders over HTTP, matched in Lua, settled by a real
Celery worker, the trade seen on a WebSocket, every balance checked to the atomic unit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import websockets
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import Trader

pytestmark = pytest.mark.integration

MARKET = "BTC-USDC"
PRICE = 3_000_000  # 30,000.00 USDC per BTC (priceScale 2)
QTY = 1_000  # 0.1 BTC (qtyScale 4)
NOTIONAL = PRICE * QTY  # quote decimals 6 − 2 − 4 = 0: 3,000,000,000 = 3,000 USDC
TAKER_FEE = 1_500_000  # ceil(3e9 × 5 / 10000)
MAKER_FEE = 300_000  # ceil(3e9 × 1 / 10000)
BTC_DELIVERED = QTY * 10_000  # base decimals 8 − qtyScale 4


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start()
        yield running


async def _watch(url: str, topics: list[str], until: Any, timeout: float = 20.0) -> list[dict]:
    received: list[dict] = []
    async with websockets.connect(url) as ws:
        for topic in topics:
            await ws.send(orjson.dumps({"op": "subscribe", "topic": topic}).decode())
        deadline = time.monotonic() + timeout
        started = False
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                raw = None
            if raw is not None:
                received.append(orjson.loads(raw))
            snapshots = sum(1 for m in received if m.get("type") == "snapshot")
            if snapshots == len(topics) and not started:
                started = True
                await until()
            if started and any(
                m.get("topic") == f"trade:{MARKET}" and m.get("type") == "update" for m in received
            ):
                await asyncio.sleep(0.3)  # let the depth update of the same order arrive
                break
    return received


def test_crossing_orders_trade_on_websocket_and_settle_to_the_unit(exchange: Exchange) -> None:
    seller, buyer = Trader(), Trader()
    exchange.deposit(seller.address, "BTC", BTC_DELIVERED)
    exchange.deposit(buyer.address, "USDC", 5_000_000_000)
    sell = seller.order(MARKET, "SELL", PRICE, QTY)
    buy = buyer.order(MARKET, "BUY", PRICE, QTY)

    async def send_orders() -> None:
        with exchange.client() as client:
            for body in (sell, buy):
                response = client.post("/v1/orders", json=body)
                assert response.status_code == 202, response.text
                assert response.json() == {
                    "clientOrderId": body["clientOrderId"],
                    "status": "ACCEPTED",
                }

    messages = asyncio.run(_watch(exchange.ws, [f"trade:{MARKET}", f"depth:{MARKET}"], send_orders))
    trade_updates = [
        m for m in messages if m["topic"] == f"trade:{MARKET}" and m["type"] == "update"
    ]
    assert len(trade_updates) == 1
    (trade,) = trade_updates[0]["data"]
    assert trade["price"] == PRICE and trade["qty"] == QTY
    assert trade["takerSide"] == "BUY"
    assert trade["buyer"] == buyer.address.lower() and trade["seller"] == seller.address.lower()
    assert trade["buyOid"] == buy["clientOrderId"] and trade["sellOid"] == sell["clientOrderId"]
    assert trade_updates[0]["seq"] == trade["seq"] == 1
    depth_updates = [
        m for m in messages if m["topic"] == f"depth:{MARKET}" and m["type"] == "update"
    ]
    assert [m["seq"] for m in depth_updates] == [1, 2]
    assert depth_updates[0]["data"] == {"bids": [], "asks": [[PRICE, QTY]]}
    assert depth_updates[1]["data"] == {"bids": [], "asks": [[PRICE, 0]]}

    with exchange.client() as client:
        for trader, body in ((seller, sell), (buyer, buy)):
            order = client.get(f"/v1/orders/{trader.address}/{body['clientOrderId']}").json()
            assert order["status"] == "FILLED" and order["filled"] == QTY

        def settled() -> bool:
            return (
                client.get(f"/v1/accounts/{buyer.address}/balances").json().get("BTC") is not None
            )

        assert wait_for(settled, 20), exchange.log("settler")[-3000:]
        assert client.get(f"/v1/accounts/{buyer.address}/balances").json() == {
            "USDC": _bal(5_000_000_000 - NOTIONAL - TAKER_FEE),
            "BTC": _bal(BTC_DELIVERED),
        }
        assert client.get(f"/v1/accounts/{seller.address}/balances").json() == {
            "USDC": _bal(NOTIONAL - MAKER_FEE),
            "BTC": _bal(0),
        }
        assert client.get("/v1/accounts/fees/balances").json() == {
            "USDC": _bal(TAKER_FEE + MAKER_FEE)
        }
        depth = client.get(f"/v1/markets/{MARKET}/depth").json()
        assert depth == {"market": MARKET, "seq": 2, "bids": [], "asks": []}


def _bal(total: int, locked: int = 0) -> dict[str, str]:
    return {"total": str(total), "available": str(total - locked), "locked": str(locked)}
