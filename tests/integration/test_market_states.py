"""Market states (docs/api.md "Market states") through the real gateway, matcher, settler and
broadcaster on a real Redis: each state refuses exactly what it must, with its code, on every
entry road (REST order, batch PLACE, amend, cancel-replace, WebSocket order); cancels still
work; a refusal moves no unit; an order already on the stream when the state changed is
REJECTED by the matcher; the status shows in GET /v1/markets and on the ticker (REST and
WebSocket); the auditor's invariants hold after each test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.ws import WsClient

from common import money
from common.eip712 import sign
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
P = 3_000_000  # the PERP's index, so its mark
QTY = 1_000
USDC = 10**12
BTC = 10**10
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MARKETS = load_markets(DEFAULT_MARKETS_FILE)


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler", "broadcaster")
        yield running
        assert audit(running)["ok"] is True, audit(running)["invariants"]


def now_ms() -> int:
    return int(time.time() * 1000)


def audit(exchange: Exchange) -> dict[str, Any]:
    with exchange.client() as client:
        return dict(client.get("/v1/admin/audit", headers=ADMIN).json())


def post(exchange: Exchange, path: str, body: Any, **headers: str) -> httpx.Response:
    with exchange.client() as client:
        return client.post(path, json=body, headers=headers)


def set_status(exchange: Exchange, market: str, status: Any) -> httpx.Response:
    return post(exchange, f"/v1/admin/markets/{market}/status", {"status": status}, **ADMIN)


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message.setdefault("userId", trader.address)
    message.setdefault("ts", now_ms())
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", USDC)
    exchange.deposit(trader.address, "BTC", BTC)
    return trader


def order_body(
    trader: Trader, side: str, price: int, qty: int, cid: str, market: str = SPOT, **v2: Any
) -> dict[str, Any]:
    product = "SPOT" if market == SPOT else "PERP"
    v2.setdefault("timeInForce", "GTC")
    return trader.order(market, side, price, qty, cid=cid, product=product, **v2)


def place(exchange: Exchange, *args: Any, **v2: Any) -> dict[str, Any]:
    response = post(exchange, "/v1/orders?wait=1", order_body(*args, **v2))
    assert response.status_code == 200, response.text
    return dict(response.json())


def amend_body(trader: Trader, cid: str, price: int, qty: int, market: str = SPOT) -> Any:
    return signed(
        trader, "Amend", market=market, clientOrderId=cid, price=price, qty=qty, expectedFilled=-1
    )


def replace_body(trader: Trader, old: str, cid: str, price: int, qty: int, **over: Any) -> Any:
    fields = {"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "reduceOnly": False} | over
    return signed(
        trader, "CancelReplace", clientOrderId=cid, market=SPOT, price=price, qty=qty,
        product="SPOT", expiresAt=0, cancelClientOrderId=old, **fields,
    )  # fmt: skip


def batch_body(trader: Trader, *actions: dict[str, Any], atomic: bool = False) -> Any:
    return signed(trader, "Batch", atomic=atomic, actions=list(actions))


def batch_place(cid: str, side: str, price: int, qty: int, **over: Any) -> dict[str, Any]:
    return {
        "kind": "PLACE", "market": SPOT, "clientOrderId": cid, "side": side, "type": "LIMIT",
        "price": price, "qty": qty, "timeInForce": "GTC", "reduceOnly": False, "expiresAt": 0,
        "expectedFilled": 0,
    } | over  # fmt: skip


def batch_amend(cid: str, price: int, qty: int) -> dict[str, Any]:
    blank = {"side": "", "type": "", "timeInForce": "", "reduceOnly": False, "expiresAt": 0}
    return {
        "kind": "AMEND", "market": SPOT, "clientOrderId": cid, **blank, "price": price,
        "qty": qty, "expectedFilled": -1,
    }  # fmt: skip


def batch_errors(response: httpx.Response) -> list[tuple[int, str | None]]:
    assert response.status_code == 200, response.text
    return [(x["status"], x.get("error", {}).get("code")) for x in response.json()["results"]]


def ws_order(exchange: Exchange, body: dict[str, Any]) -> tuple[int, Any]:
    async def ask() -> tuple[int, Any]:
        async with await WsClient.connect(f"ws://127.0.0.1:{exchange.gateway_port}/v1/ws") as ws:
            await ws.send({"id": 1, "op": "order", "body": body})
            answer = await ws.next(lambda m: m.get("id") == 1, 15)
            return answer["status"], answer["body"]

    return asyncio.run(ask())


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def position(exchange: Exchange, trader: Trader) -> int:
    sizes = {
        p["market"]: int(p["size"])
        for p in exchange.get(f"/v1/accounts/{trader.address}/positions")
    }
    return sizes.get(PERP, 0)


def quote_need(price: int, qty: int) -> int:
    return money.spot_buy_reservation(MARKETS.markets[SPOT], price, qty)


def settles_to(exchange: Exchange, trader: Trader, asset: str, expected: tuple[int, int]) -> bool:
    return wait_for(lambda: exchange.balance(trader.address, asset) == expected, 30)


def test_cancel_only_takes_cancels_alone_on_every_road(exchange: Exchange) -> None:
    maker, taker = funded(exchange), funded(exchange)
    assert place(exchange, maker, "BUY", P, QTY, "m1")["status"] == "NEW"
    assert place(exchange, maker, "BUY", P - 10, QTY, "m2")["status"] == "NEW"
    assert place(exchange, maker, "BUY", P - 20, QTY, "m3")["status"] == "NEW"
    locked = quote_need(P, QTY) + quote_need(P - 10, QTY) + quote_need(P - 20, QTY)
    assert settles_to(exchange, maker, "USDC", (USDC, locked))

    changed = set_status(exchange, SPOT, "CANCEL_ONLY")
    assert (changed.status_code, changed.json()["status"]) == (200, "CANCEL_ONLY")
    assert exchange.get(f"/v1/markets/{SPOT}")["status"] == "CANCEL_ONLY"
    listed = {m["symbol"]: m["status"] for m in exchange.get("/v1/markets")}
    assert (listed[SPOT], listed[PERP]) == ("CANCEL_ONLY", "OPEN")
    assert exchange.get(f"/v1/markets/{SPOT}/ticker")["status"] == "CANCEL_ONLY"

    # every road that would place or change an order: 422 MARKET_CANCEL_ONLY
    sell = order_body(taker, "SELL", P, QTY, "t1")
    assert code(post(exchange, "/v1/orders", sell)) == (422, "MARKET_CANCEL_ONLY")
    post_only = order_body(taker, "SELL", P + 100, QTY, "t2", timeInForce="POST_ONLY")
    assert code(post(exchange, "/v1/orders", post_only)) == (422, "MARKET_CANCEL_ONLY")
    status, body = ws_order(exchange, order_body(taker, "SELL", P, QTY, "t4"))
    assert (status, body["error"]["code"]) == (422, "MARKET_CANCEL_ONLY")
    amended = post(exchange, "/v1/orders/amend", amend_body(maker, "m1", P, QTY // 2))
    assert code(amended) == (422, "MARKET_CANCEL_ONLY")
    replaced = post(exchange, "/v1/orders/cancel-replace", replace_body(maker, "m2", "m2b", P, 5))
    assert code(replaced) == (422, "MARKET_CANCEL_ONLY")
    batched = post(
        exchange,
        "/v1/orders/batch",
        batch_body(taker, batch_place("t5", "SELL", P, QTY), batch_amend("m1", P, 1)),
    )
    assert batch_errors(batched) == [(422, "MARKET_CANCEL_ONLY"), (404, "NOT_FOUND")]
    mine = post(exchange, "/v1/orders/batch", batch_body(maker, batch_amend("m1", P, 1)))
    assert batch_errors(mine) == [(422, "MARKET_CANCEL_ONLY")]
    # nothing moved: the resting orders as they were, no trade, no unit locked or spent
    assert [order(exchange, maker, c)["qty"] for c in ("m1", "m2", "m3")] == [QTY] * 3
    assert exchange.get(f"/v1/markets/{SPOT}/trades") == []
    assert exchange.balance(taker.address, "USDC") == (USDC, 0)
    assert exchange.balance(taker.address, "BTC") == (BTC, 0)
    assert exchange.balance(maker.address, "USDC") == (USDC, locked)

    # cancels and cancel-all work; each releases its reservation to the unit
    cancel = post(exchange, "/v1/orders/cancel", signed(maker, "Cancel", market=SPOT,
                                                        clientOrderId="m1"))  # fmt: skip
    assert (cancel.status_code, cancel.json()["status"]) == (200, "CXL")
    every = post(exchange, "/v1/orders/cancel-all", signed(maker, "CancelAll", market=SPOT))
    assert (every.status_code, every.json()) == (200, {"cancelled": 2})
    assert settles_to(exchange, maker, "USDC", (USDC, 0))

    # back to OPEN: orders are taken again
    assert set_status(exchange, SPOT, "OPEN").json()["status"] == "OPEN"
    assert place(exchange, taker, "SELL", P, QTY, "t6")["status"] == "NEW"


def test_the_matcher_rejects_an_order_on_the_stream_when_the_state_changed(
    exchange: Exchange,
) -> None:
    """The gateway judged the order while OPEN; the status command was ahead of it on the
    stream: the matcher rejects it, and its reservation comes back to the unit."""
    trader = funded(exchange)
    exchange.kill("matcher")
    changed = set_status(exchange, SPOT, "CANCEL_ONLY")  # queued: no matcher to answer
    assert (changed.status_code, changed.json()["status"]) == (202, "OPEN")
    body = order_body(trader, "BUY", P, QTY, "late")
    accepted = post(exchange, "/v1/orders", body)
    assert accepted.status_code == 202, accepted.text
    assert exchange.balance(trader.address, "USDC") == (USDC, quote_need(P, QTY))
    exchange.start("matcher")
    assert wait_for(lambda: order(exchange, trader, "late")["status"] == "REJECTED", 30)
    assert order(exchange, trader, "late")["reason"] == "MARKET_CANCEL_ONLY"
    assert exchange.get(f"/v1/markets/{SPOT}")["status"] == "CANCEL_ONLY"
    assert settles_to(exchange, trader, "USDC", (USDC, 0))


def test_post_only_takes_only_orders_that_rest(exchange: Exchange) -> None:
    maker, taker = funded(exchange), funded(exchange)
    assert place(exchange, maker, "SELL", P, QTY, "ask")["status"] == "NEW"
    assert place(exchange, maker, "BUY", P - 100, QTY, "bid")["status"] == "NEW"
    assert set_status(exchange, SPOT, "POST_ONLY").json()["status"] == "POST_ONLY"

    for cid, tif in (("g", "GTC"), ("i", "IOC"), ("f", "FOK")):
        refused = post(exchange, "/v1/orders", order_body(taker, "BUY", P, QTY, cid,
                                                          timeInForce=tif))  # fmt: skip
        assert code(refused) == (422, "MARKET_POST_ONLY"), tif
    market = taker.order(SPOT, "BUY", 0, QTY, type="MARKET", cid="mk", timeInForce="IOC",
                         reduceOnly=False, expiresAt=0)  # fmt: skip
    assert code(post(exchange, "/v1/orders", market)) == (422, "MARKET_POST_ONLY")
    seed = post(exchange, "/v1/orders", taker.order(SPOT, "BUY", P, QTY, cid="v1"))
    assert code(seed) == (422, "MARKET_POST_ONLY")  # an Order (v1) is GTC
    status, body = ws_order(exchange, order_body(taker, "BUY", P, QTY, "w"))
    assert (status, body["error"]["code"]) == (422, "MARKET_POST_ONLY")
    batched = post(
        exchange,
        "/v1/orders/batch",
        batch_body(
            taker,
            batch_place("b1", "BUY", P - 50, QTY),
            batch_place("b2", "BUY", P - 60, QTY, timeInForce="POST_ONLY"),
        ),
    )
    assert batch_errors(batched) == [(422, "MARKET_POST_ONLY"), (202, None)]
    atomic = post(
        exchange,
        "/v1/orders/batch",
        batch_body(
            taker,
            batch_place("b4", "BUY", P - 70, QTY, timeInForce="POST_ONLY"),
            batch_place("b5", "BUY", P - 80, QTY),
            atomic=True,
        ),
    )
    assert code(atomic) == (422, "MARKET_POST_ONLY")
    assert atomic.json()["error"]["index"] == 1
    with exchange.client() as client:
        assert client.get(f"/v1/orders/{taker.address}/b4").status_code == 404
    replaced = post(exchange, "/v1/orders/cancel-replace", replace_body(taker, "b2", "b3", P, 5))
    assert code(replaced) == (422, "MARKET_POST_ONLY")

    # a POST_ONLY order rests; one that would cross is rejected by the book as ever
    assert place(exchange, taker, "BUY", P - 1, QTY, "po", timeInForce="POST_ONLY")["status"] == (
        "NEW"
    )
    crossing = place(exchange, taker, "BUY", P, QTY, "pox", timeInForce="POST_ONLY")
    assert (crossing["status"], crossing["reason"]) == ("REJECTED", "POST_ONLY_WOULD_CROSS")
    # a cancel-replace whose new order is POST_ONLY is taken
    moved = post(
        exchange,
        "/v1/orders/cancel-replace?wait=1",
        replace_body(taker, "po", "po2", P - 2, QTY, timeInForce="POST_ONLY"),
    )
    assert moved.status_code == 200, moved.text
    # an amend of a GTC order that would cross: POST_ONLY_WOULD_CROSS, the order unchanged;
    # one that lowers its qty in place is taken
    crossed = post(exchange, "/v1/orders/amend", amend_body(maker, "bid", P, QTY))
    assert code(crossed) == (409, "POST_ONLY_WOULD_CROSS")
    assert (order(exchange, maker, "bid")["price"], order(exchange, maker, "bid")["qty"]) == (
        P - 100, QTY,
    )  # fmt: skip
    lower = post(exchange, "/v1/orders/amend", amend_body(maker, "bid", P - 100, QTY // 2))
    assert lower.status_code == 200, lower.text
    assert exchange.get(f"/v1/markets/{SPOT}/trades") == []
    # what rests is locked to the unit; the taker's refusals locked nothing
    taker_lock = quote_need(P - 60, QTY) + quote_need(P - 2, QTY)
    assert settles_to(exchange, taker, "USDC", (USDC, taker_lock))
    assert settles_to(exchange, maker, "USDC", (USDC, quote_need(P - 100, QTY // 2)))


def test_reduce_only_takes_only_what_reduces_a_position(exchange: Exchange) -> None:
    long, short = funded(exchange), funded(exchange)
    assert place(exchange, short, "SELL", P, 10, "s0", PERP)["status"] == "NEW"
    assert place(exchange, long, "BUY", P, 10, "l0", PERP)["status"] == "FILLED"
    assert place(exchange, short, "SELL", P + 500, 5, "s1", PERP)["status"] == "NEW"

    # not on a spot market; nothing settable but the five; each refusal changes nothing
    assert code(set_status(exchange, SPOT, "REDUCE_ONLY")) == (400, "INVALID_REQUEST")
    for bad in ("EXPIRED", "open", "", None, 1):
        assert code(set_status(exchange, PERP, bad)) == (400, "INVALID_REQUEST"), bad
    assert code(post(exchange, f"/v1/admin/markets/{PERP}/status", {}, **ADMIN)) == (
        400, "INVALID_REQUEST",
    )  # fmt: skip
    unauthorized = post(exchange, f"/v1/admin/markets/{PERP}/status", {"status": "HALTED"})
    assert code(unauthorized) == (403, "FORBIDDEN")
    assert code(set_status(exchange, "NOPE-PERP", "HALTED"))[0] == 404
    assert exchange.get(f"/v1/markets/{SPOT}")["status"] == "OPEN"
    assert exchange.get(f"/v1/markets/{PERP}")["status"] == "OPEN"

    assert set_status(exchange, PERP, "REDUCE_ONLY").json()["status"] == "REDUCE_ONLY"
    opening = post(exchange, "/v1/orders", order_body(long, "BUY", P, 1, "l1", PERP))
    assert code(opening) == (422, "MARKET_REDUCE_ONLY")
    status, body = ws_order(exchange, order_body(long, "BUY", P, 1, "l2", PERP))
    assert (status, body["error"]["code"]) == (422, "MARKET_REDUCE_ONLY")
    # amends: only a lower qty at the same price
    up = post(exchange, "/v1/orders/amend", amend_body(short, "s1", P + 500, 6, PERP))
    assert code(up) == (422, "MARKET_REDUCE_ONLY")
    moved = post(exchange, "/v1/orders/amend", amend_body(short, "s1", P + 400, 5, PERP))
    assert code(moved) == (422, "MARKET_REDUCE_ONLY")
    down = post(exchange, "/v1/orders/amend", amend_body(short, "s1", P + 500, 4, PERP))
    assert down.status_code == 200, down.text
    assert order(exchange, short, "s1")["qty"] == 4
    # reduce-only orders are taken: the long's SELL rests, the short's BUY takes it
    closing = place(exchange, long, "SELL", P + 100, 3, "l3", PERP, reduceOnly=True)
    assert closing["status"] == "NEW"
    covering = place(exchange, short, "BUY", P + 100, 3, "s2", PERP, reduceOnly=True)
    assert (covering["status"], covering["filled"]) == ("FILLED", 3)
    assert wait_for(lambda: position(exchange, long) == 7, 30)
    assert wait_for(lambda: position(exchange, short) == -7, 30)
    assert set_status(exchange, PERP, "OPEN").json()["status"] == "OPEN"


def test_the_ticker_pushes_each_status_change_on_the_websocket(exchange: Exchange) -> None:
    async def scenario() -> list[str]:
        async with await WsClient.connect(exchange.ws) as ws:
            snapshot = await ws.subscribe(f"ticker:{SPOT}")
            seen = [snapshot["data"]["status"]]
            async with httpx.AsyncClient(base_url=exchange.http, timeout=20) as http:
                for path, body in (
                    ("status", {"status": "POST_ONLY"}),
                    ("halt", None),
                    ("status", {"status": "CANCEL_ONLY"}),
                    ("resume", None),
                ):
                    changed = await http.post(
                        f"/v1/admin/markets/{SPOT}/{path}", json=body, headers=ADMIN
                    )
                    assert changed.status_code == 200, changed.text
                    want = changed.json()["status"]
                    update = await ws.next(
                        lambda m, w=want: (
                            m.get("topic") == f"ticker:{SPOT}"
                            and m.get("type") == "update"
                            and m["data"]["status"] == w
                        ),
                        15,
                    )
                    seen.append(update["data"]["status"])
            return seen

    assert asyncio.run(scenario()) == ["OPEN", "POST_ONLY", "HALTED", "CANCEL_ONLY", "OPEN"]
    assert exchange.get(f"/v1/markets/{SPOT}/ticker")["status"] == "OPEN"
