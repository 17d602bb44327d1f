"""The gateway with the real matcher and settler: wait=1, cancel, cancel-all, halt/resume,
trades, ticker, candles, fills, balances to the unit and the auditor's report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common.eip712 import sign

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
PRICE, QTY = 3_000_000, 1_000
NOTIONAL = PRICE * QTY
TAKER_FEE, MAKER_FEE = 1_500_000, 300_000
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message.setdefault("userId", trader.address)
    message.setdefault("ts", int(time.time() * 1000))
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def bal(total: int, locked: int = 0) -> dict[str, str]:
    return {"total": str(total), "available": str(total - locked), "locked": str(locked)}


def test_orders_cancels_and_reads_through_the_real_matcher_and_settler(
    exchange: Exchange,
) -> None:
    seller, buyer = Trader(), Trader()
    exchange.deposit(seller.address, "BTC", 50_000_000)
    exchange.deposit(buyer.address, "USDC", 10_000_000_000)
    with httpx.Client(base_url=exchange.http, timeout=20) as http:
        sell = seller.order(SPOT, "SELL", PRICE, QTY)
        rested = http.post("/v1/orders?wait=1", json=sell)
        assert rested.status_code == 200, rested.text
        assert rested.json()["status"] == "NEW"
        buy = buyer.order(SPOT, "BUY", PRICE, QTY, timeInForce="IOC")
        taken = http.post("/v1/orders?wait=1", json=buy)
        assert taken.status_code == 200
        assert (taken.json()["status"], taken.json()["filled"]) == ("FILLED", QTY)

        def settled() -> bool:
            return len(http.get(f"/v1/accounts/{buyer.address}/fills").json()) == 1

        assert wait_for(settled, 60), exchange.log("settler")[-3000:]
        (fill,) = http.get(f"/v1/accounts/{buyer.address}/fills").json()
        assert fill == {
            "tradeId": f"{SPOT}:1", "market": SPOT, "clientOrderId": buy["clientOrderId"],
            "side": "BUY", "price": PRICE, "qty": QTY, "fee": str(TAKER_FEE),
            "liquidity": "TAKER", "ts": fill["ts"],
        }  # fmt: skip
        assert wait_for(
            lambda: (
                http.get(f"/v1/accounts/{seller.address}/balances").json()["USDC"]
                == bal(NOTIONAL - MAKER_FEE)
            ),
            30,
        )
        assert http.get(f"/v1/accounts/{buyer.address}/balances").json() == {
            "USDC": bal(10_000_000_000 - NOTIONAL - TAKER_FEE),
            "BTC": bal(QTY * 10_000),
        }
        (trade,) = http.get(f"/v1/markets/{SPOT}/trades").json()
        assert (trade["price"], trade["qty"], trade["takerSide"]) == (PRICE, QTY, "BUY")
        ticker = http.get(f"/v1/markets/{SPOT}/ticker").json()
        assert ticker["last"] == PRICE
        (candle,) = http.get(f"/v1/markets/{SPOT}/candles?interval=1m").json()
        assert (candle["o"], candle["c"], candle["v"]) == (PRICE, PRICE, QTY)

        # A resting order cancelled through the matcher; its reservation comes back.
        rest = seller.order(SPOT, "SELL", PRICE + 100, 500, cid="rest-1")
        assert http.post("/v1/orders?wait=1", json=rest).json()["status"] == "NEW"
        cancel = signed(seller, "Cancel", market=SPOT, clientOrderId="rest-1")
        cancelled = http.post("/v1/orders/cancel", json=cancel)
        assert cancelled.status_code == 200, cancelled.text
        assert (cancelled.json()["status"], cancelled.json()["reason"]) == ("CXL", "USER")
        again = signed(seller, "Cancel", market=SPOT, clientOrderId="rest-1")
        closed = http.post("/v1/orders/cancel", json=again)
        assert (closed.status_code, closed.json()["error"]["code"]) == (409, "ORDER_CLOSED")
        seller_btc = 50_000_000 - QTY * 10_000
        assert wait_for(
            lambda: (
                http.get(f"/v1/accounts/{seller.address}/balances").json()["BTC"] == bal(seller_btc)
            ),
            30,
        )

        for cid in ("all-1", "all-2"):
            body = seller.order(SPOT, "SELL", PRICE + 200, 10, cid=cid)
            assert http.post("/v1/orders?wait=1", json=body).status_code == 200
        every = signed(seller, "CancelAll", market="")
        result = http.post("/v1/orders/cancel-all", json=every)
        assert (result.status_code, result.json()) == (200, {"cancelled": 2})
        depth = http.get(f"/v1/markets/{SPOT}/depth").json()
        assert depth["asks"] == [] and depth["bids"] == []

        halted = http.post(f"/v1/admin/markets/{SPOT}/halt", headers=ADMIN)
        assert (halted.status_code, halted.json()["status"]) == (200, "HALTED")
        refused = http.post("/v1/orders", json=buyer.order(SPOT, "BUY", PRICE, 1))
        assert refused.json()["error"]["code"] == "MARKET_HALTED"
        resumed = http.post(f"/v1/admin/markets/{SPOT}/resume", headers=ADMIN)
        assert (resumed.status_code, resumed.json()["status"]) == (200, "OPEN")

        assert wait_for(
            lambda: (
                http.get(f"/v1/accounts/{seller.address}/balances").json()["BTC"] == bal(seller_btc)
            ),
            30,
        )
        report = http.get("/v1/admin/audit", headers=ADMIN)
        assert report.status_code == 200, report.text
        audit = report.json()
        assert audit["ok"] is True, audit["invariants"]
        assert {asset: int(f["difference"]) for asset, f in audit["assets"].items()} == {
            "USDC": 0,
            "BTC": 0,
            "ETH": 0,
        }
