"""Trigger orders (docs/api.md "Trigger orders") on LAST, through the real gateway, matcher and
settler on a real Redis: each stop and take-profit type on each side fires when a trade gaps
through its trigger, balances to the unit before and after; an untriggered order is visible,
amendable and cancellable, its reservation to the unit; a trigger already crossed at arrival
fires at once; a malformed, forged or replayed OrderV4 is refused with nothing reserved; the
auditor's invariants hold after every test. One market per case (support/trigger_orders.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.trigger_orders import (
    BTC,
    USDC,
    P,
    Q,
    audited_fixture,  # noqa: F401 (the fixture "audited": autouse, the auditor after each test)
    exchange_fixture,  # noqa: F401 (the fixture "exchange": one exchange for the module)
    fresh_market,
    funded,
    limit,
    market_of,
    order,
    placed,
    post,
    settles_to,
    v4_body,
)
from support.ws import WsClient

from common import keys, money
from common.eip712 import sign

pytestmark = pytest.mark.integration


# direction -> (type, side) of the orders that fire that way: U when LAST rises to the
# trigger, D when it falls to it
CASES = {
    "U": [("STOP_LIMIT", "BUY"), ("STOP_MARKET", "BUY"),
          ("TAKE_PROFIT_LIMIT", "SELL"), ("TAKE_PROFIT_MARKET", "SELL")],
    "D": [("STOP_LIMIT", "SELL"), ("STOP_MARKET", "SELL"),
          ("TAKE_PROFIT_LIMIT", "BUY"), ("TAKE_PROFIT_MARKET", "BUY")],
}  # fmt: skip


@pytest.mark.parametrize("direction", ["U", "D"])
def test_each_type_and_side_fires_on_a_last_trade_gapping_through_its_trigger(
    exchange: Exchange, direction: str
) -> None:
    """LAST at P, each order's trigger 50 away, then one trade 60 away (nothing printed at the
    trigger): the four orders of that direction fire, each fills to the unit. The near level
    (P ± 55) keeps LAST past the triggers while they fire one after the other."""
    name = fresh_market("S")
    market = market_of(exchange, name)
    maker, taker = funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    limit(exchange, taker, name, "BUY", P, Q, "IOC")  # LAST = P
    up = direction == "U"
    sign_ = 1 if up else -1
    # what the fired orders take: the far level on their own side, the near level beyond
    # the trigger on the other
    limit(exchange, maker, name, "SELL" if up else "BUY", P + sign_ * 150, 2 * Q)
    limit(exchange, maker, name, "BUY" if up else "SELL", P + sign_ * 55, 2 * Q)
    placed_orders = []
    for order_type, side in CASES[direction]:
        me = funded(exchange)
        is_buy = side == "BUY"
        price = P + 200 if is_buy else (0 if order_type.endswith("MARKET") else P - 200)
        body = v4_body(me, name, side, order_type, price, Q, P + sign_ * 50)
        assert placed(exchange, body)["status"] == "UNTRIGGERED"
        view = order(exchange, me, body["clientOrderId"])
        assert (view["type"], view["triggerPrice"], view["triggerSource"], view["triggered"]) == (
            order_type, P + sign_ * 50, "LAST", False)  # fmt: skip
        # reserved at placement exactly as the ordinary order (a BUY: notional + fee at price)
        if is_buy:
            settles_to(exchange, me, "USDC", (USDC, money.spot_buy_reservation(market, price, Q)))
        else:
            settles_to(exchange, me, "BTC", (BTC, money.base_units(market, Q)))
        placed_orders.append((me, body["clientOrderId"], is_buy))
    # the gap: one trade at P ± 60
    limit(exchange, maker, name, "SELL" if up else "BUY", P + sign_ * 60, Q)
    limit(exchange, taker, name, "BUY" if up else "SELL", P + sign_ * 60, Q, "IOC")
    base = money.base_units(market, Q)
    for me, cid, is_buy in placed_orders:
        assert wait_for(lambda m=me, c=cid: order(exchange, m, c)["status"] == "FILLED", 10)
        view = order(exchange, me, cid)
        assert view["triggered"] is True and view["filled"] == Q
        # a BUY takes the asks (P + 150 rising, P - 55 falling), a SELL the bids
        fill = {(True, True): P + 150, (False, True): P + 55,
                (True, False): P - 55, (False, False): P - 150}[(is_buy, up)]  # fmt: skip
        notional = money.notional(market, fill, Q)
        fee = money.fee(notional, market.spec.takerFeeBps)
        if is_buy:
            settles_to(exchange, me, "USDC", (USDC - notional - fee, 0))
            settles_to(exchange, me, "BTC", (BTC + base, 0))
        else:
            settles_to(exchange, me, "BTC", (BTC - base, 0))
            settles_to(exchange, me, "USDC", (USDC + notional - fee, 0))


def test_untriggered_order_is_listed_amended_and_cancelled_to_the_unit(exchange: Exchange) -> None:
    name = fresh_market("S")
    market = market_of(exchange, name)
    me = funded(exchange)
    body = v4_body(me, name, "BUY", "STOP_LIMIT", P + 20, Q, P + 10)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "UNTRIGGERED"  # no trade yet: no LAST
    settles_to(exchange, me, "USDC", (USDC, money.spot_buy_reservation(market, P + 20, Q)))
    listed = exchange.get(f"/v1/accounts/{me.address}/orders?market={name}&open=1")
    assert [(o["clientOrderId"], o["status"]) for o in listed] == [(cid, "UNTRIGGERED")]
    # amend: new price and qty, the trigger kept; the reservation follows to the unit
    message = {"userId": me.address, "market": name, "clientOrderId": cid, "price": P + 40,
               "qty": 2 * Q, "expectedFilled": -1, "ts": int(time.time() * 1000)}  # fmt: skip
    amend = {**message, "sig": sign(me.key, "Amend", message, CHAIN_ID, VERIFYING_CONTRACT)}
    response = post(exchange, "/v1/orders/amend?wait=1", amend)
    assert response.status_code == 200, response.text
    view = order(exchange, me, cid)
    assert (view["status"], view["price"], view["qty"], view["triggerPrice"]) == (
        "UNTRIGGERED", P + 40, 2 * Q, P + 10)  # fmt: skip
    settles_to(exchange, me, "USDC", (USDC, money.spot_buy_reservation(market, P + 40, 2 * Q)))
    # cancel: CXL, everything released
    message = {"userId": me.address, "market": name, "clientOrderId": cid,
               "ts": int(time.time() * 1000)}  # fmt: skip
    cancel = {**message, "sig": sign(me.key, "Cancel", message, CHAIN_ID, VERIFYING_CONTRACT)}
    response = post(exchange, "/v1/orders/cancel?wait=1", cancel)
    assert response.status_code == 200, response.text
    assert wait_for(lambda: order(exchange, me, cid)["status"] == "CXL", 10)
    settles_to(exchange, me, "USDC", (USDC, 0))
    # a trade through the old trigger fires nothing
    maker, taker = funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P + 30, Q)
    limit(exchange, taker, name, "BUY", P + 30, Q, "IOC")
    assert order(exchange, me, cid)["status"] == "CXL"
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        for src, direction in itertools.product(("MARK", "LAST", "INDEX"), ("U", "D")):
            assert r.zcard(keys.market_triggers(name, src, direction)) == 0


def test_a_trigger_already_crossed_at_arrival_fires_at_once(exchange: Exchange) -> None:
    name = fresh_market("S")
    maker, taker, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, 2 * Q)
    limit(exchange, taker, name, "BUY", P, Q, "IOC")  # LAST = P
    body = v4_body(me, name, "BUY", "STOP_LIMIT", P, Q, P - 10)  # BUY stop: P >= P - 10
    assert placed(exchange, body)["status"] == "FILLED"
    view = order(exchange, me, body["clientOrderId"])
    assert view["triggered"] is True


MALFORMED = [
    ({"triggerSource": "BID"}, "STOP_LIMIT", P + 10, "INVALID_ORDER"),
    ({}, "STOP_LIMIT", 0, "INVALID_PRICE"),  # trigger 0 on a STOP type
    ({}, "STOP_LIMIT", 2**53, "INVALID_PRICE"),  # trigger at 2^53
    ({}, "LIMIT", P + 10, "INVALID_ORDER"),  # a trigger on a type that takes none
    ({"trailingDelta": 0, "trailingUnit": "TICKS"}, "TRAILING_STOP_MARKET", 0, "INVALID_ORDER"),
    (
        {"trailingDelta": 10**30, "trailingUnit": "TICKS"},
        "TRAILING_STOP_MARKET",
        0,
        "INVALID_ORDER",
    ),
    ({"trailingDelta": 5001, "trailingUnit": "BPS"}, "TRAILING_STOP_MARKET", 0, "INVALID_ORDER"),
    ({"trailingDelta": 10, "trailingUnit": "PCT"}, "TRAILING_STOP_MARKET", 0, "INVALID_ORDER"),
    ({"trailingDelta": 10, "trailingUnit": "TICKS"}, "STOP_LIMIT", P + 10, "INVALID_ORDER"),
    ({"closePosition": True}, "STOP_LIMIT", P + 10, "INVALID_ORDER"),
    # attached TP/SL on a SPOT BUY: judged against its price (a SELL: test_attached_tpsl_spot)
    ({"takeProfitPrice": P}, "LIMIT", 0, "INVALID_PRICE"),
    ({"stopLossPrice": P + 30}, "LIMIT", 0, "INVALID_PRICE"),
    ({"takeProfitPrice": P + 100}, "STOP_LIMIT", P + 10, "INVALID_ORDER"),
    ({"type": "STOP"}, "STOP_LIMIT", P + 10, "INVALID_ORDER"),
    ({"price": 0}, "STOP_MARKET", P + 10, "INVALID_PRICE"),  # a spot BUY needs a protection
]


def test_malformed_forged_and_replayed_orders_are_refused_with_nothing_reserved(
    exchange: Exchange,
) -> None:
    name = fresh_market("S")
    me = funded(exchange)
    for fields, order_type, trigger, code in MALFORMED:
        fields = dict(fields)
        price = fields.pop("price", P + 20)
        body = v4_body(me, name, "BUY", order_type, price, Q, trigger, **fields)
        response = post(exchange, "/v1/orders", body)
        assert response.status_code == 400, (fields, order_type, response.text)
        assert (response.status_code, response.json()["error"]["code"]) == (
            400, code), (fields, order_type, response.text)  # fmt: skip
    # forged: signed by someone else; tampered after signing
    other = Trader()
    forged = v4_body(other, name, "BUY", "STOP_LIMIT", P + 20, Q, P + 10) | {"userId": me.address}
    assert post(exchange, "/v1/orders", forged).status_code == 401
    tampered = v4_body(me, name, "BUY", "STOP_LIMIT", P + 20, Q, P + 10) | {"triggerPrice": P + 1}
    assert post(exchange, "/v1/orders", tampered).status_code == 401
    # an OrderV3's signature does not pass for an OrderV4 with the same fields
    good = v4_body(me, name, "BUY", "STOP_LIMIT", P + 20, Q, P + 10)
    assert placed(exchange, good)["status"] == "UNTRIGGERED"
    replay = post(exchange, "/v1/orders", good)
    assert replay.status_code == 409, replay.text
    assert exchange.balance(me.address, "BTC") == (BTC, 0)
    locked = money.spot_buy_reservation(market_of(exchange, name), P + 20, Q)
    settles_to(exchange, me, "USDC", (USDC, locked))


def test_an_order_v4_over_the_websocket_then_cancel_all_ends_it(exchange: Exchange) -> None:
    """A WebSocket order reads an OrderV4 as POST /v1/orders does; CancelAll reaches an
    untriggered order and releases its reservation."""
    name = fresh_market("S")
    me = funded(exchange)
    body = v4_body(me, name, "SELL", "TAKE_PROFIT_LIMIT", P + 100, Q, P + 90)

    async def ask() -> tuple[int, Any]:
        async with await WsClient.connect(f"ws://127.0.0.1:{exchange.gateway_port}/v1/ws") as ws:
            await ws.send({"id": 1, "op": "order", "body": body, "wait": True})
            answer = await ws.next(lambda m: m.get("id") == 1, 15)
            return answer["status"], answer["body"]

    status, answer = asyncio.run(ask())
    assert (status, answer["status"], answer["type"]) == (200, "UNTRIGGERED", "TAKE_PROFIT_LIMIT")
    base = money.base_units(market_of(exchange, name), Q)
    settles_to(exchange, me, "BTC", (BTC, base))
    message = {"userId": me.address, "market": name, "ts": int(time.time() * 1000)}
    cancel_all = {**message, "sig": sign(me.key, "CancelAll", message, CHAIN_ID,
                                         VERIFYING_CONTRACT)}  # fmt: skip
    response = post(exchange, "/v1/orders/cancel-all", cancel_all)
    assert response.status_code == 200 and response.json() == {"cancelled": 1}, response.text
    assert wait_for(lambda: order(exchange, me, body["clientOrderId"])["status"] == "CXL", 10)
    settles_to(exchange, me, "BTC", (BTC, 0))
