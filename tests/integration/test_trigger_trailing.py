"""Trailing stops and trigger orders in market states (docs/api.md "Trigger orders"), through the
real gateway, matcher and settler on a real Redis: a trailing SELL follows LAST up by ticks and
fires on the pullback, a trailing BUY follows MARK down by bps and fires on the rebound, each
to the unit; a trigger does not fire while the market is HALTED and, fired into REDUCE_ONLY,
ends REJECTED with its reservation released; the auditor's invariants hold after every test."""

from __future__ import annotations

import time

import pytest
from support.exchange import Exchange
from support.redis_server import wait_for
from support.trigger_orders import (
    ADMIN,
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
    position,
    push_index,
    settles_to,
    v4_body,
)

from common import money

pytestmark = pytest.mark.integration


def test_a_trailing_stop_follows_the_last_price_up_and_fires_on_the_pullback(
    exchange: Exchange,
) -> None:
    name = fresh_market("S")
    market = market_of(exchange, name)
    maker, taker, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "BUY", P - 100, Q)  # what the fired stop sells into
    limit(exchange, maker, name, "SELL", P, Q)
    limit(exchange, taker, name, "BUY", P, Q, "IOC")  # LAST = P
    body = v4_body(
        me, name, "SELL", "TRAILING_STOP_MARKET", 0, Q, trailingDelta=20, trailingUnit="TICKS"
    )
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "UNTRIGGERED"
    view = order(exchange, me, cid)
    assert (view["triggerPrice"], view["trailingDelta"], view["trailingUnit"]) == (
        P - 20, 20, "TICKS")  # fmt: skip

    def trade_at(price: int) -> None:
        limit(exchange, maker, name, "SELL", price, Q)
        limit(exchange, taker, name, "BUY", price, Q, "IOC")

    trade_at(P + 30)  # a new high: the trigger follows to P + 10
    assert order(exchange, me, cid)["triggerPrice"] == P + 10
    trade_at(P + 15)  # lower: the trigger stays, nothing fires
    view = order(exchange, me, cid)
    assert (view["status"], view["triggerPrice"]) == ("UNTRIGGERED", P + 10)
    trade_at(P + 40)  # higher again: P + 20
    assert order(exchange, me, cid)["triggerPrice"] == P + 20
    # the pullback: a trade at P + 20 fires it; it sells into the bid at P - 100
    limit(exchange, taker, name, "SELL", P + 20, Q)
    limit(exchange, maker, name, "BUY", P + 20, Q)
    assert wait_for(lambda: order(exchange, me, cid)["status"] == "FILLED", 10)
    assert order(exchange, me, cid)["triggered"] is True
    notional = money.notional(market, P - 100, Q)
    fee = money.fee(notional, market.spec.takerFeeBps)
    settles_to(exchange, me, "BTC", (BTC - money.base_units(market, Q), 0))
    settles_to(exchange, me, "USDC", (USDC + notional - fee, 0))


def test_a_trailing_buy_follows_the_mark_down_by_bps_and_fires_on_the_rebound(
    exchange: Exchange,
) -> None:
    name = fresh_market("F")
    market = market_of(exchange, name)
    maker, me = funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P + 1_000, Q)
    limit(exchange, maker, name, "BUY", P - 200_000, Q)
    push_index(exchange, name, P)
    body = v4_body(me, name, "BUY", "TRAILING_STOP_MARKET", P + 50_000, Q,
                   trailingDelta=10, trailingUnit="BPS")  # fmt: skip
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "UNTRIGGERED"
    assert order(exchange, me, cid)["triggerPrice"] == P + 3_000  # 10 bps of P
    push_index(exchange, name, P - 10_001)  # the low: 2 999 bps-distance rounded up: 3 000
    low = P - 10_001
    want = low + -(-low * 10 // 10_000)
    assert wait_for(lambda: order(exchange, me, cid)["triggerPrice"] == want, 10)
    assert order(exchange, me, cid)["status"] == "UNTRIGGERED"
    push_index(exchange, name, want)  # the rebound reaches it
    assert wait_for(lambda: order(exchange, me, cid)["status"] == "FILLED", 10)
    fee = money.fee(money.notional(market, P + 1_000, Q), market.spec.takerFeeBps)
    settles_to(exchange, me, "USDC", (USDC - fee, 0))
    assert position(exchange, me.address, name) == Q


def test_a_trigger_does_not_fire_while_halted_and_is_rejected_into_reduce_only(
    exchange: Exchange,
) -> None:
    name = fresh_market("F")
    maker, me = funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P + 150, Q)
    limit(exchange, maker, name, "BUY", P - 150, Q)
    body = v4_body(me, name, "BUY", "STOP_LIMIT", P + 200, Q, P + 50)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "UNTRIGGERED"
    with exchange.client() as client:
        halt = client.post(f"/v1/admin/markets/{name}/halt", headers=ADMIN)
        assert halt.status_code in (200, 202), halt.text
        push_index(exchange, name, P + 60)
        time.sleep(0.3)
        assert order(exchange, me, cid)["status"] == "UNTRIGGERED"
        status = client.post(
            f"/v1/admin/markets/{name}/status", json={"status": "REDUCE_ONLY"},
            headers=ADMIN,
        )  # fmt: skip
        assert status.status_code in (200, 202), status.text
    push_index(exchange, name, P + 61)  # fires into REDUCE_ONLY: refused, released
    assert wait_for(lambda: order(exchange, me, cid)["status"] == "REJECTED", 10)
    view = order(exchange, me, cid)
    assert (view["reason"], view["triggered"]) == ("MARKET_REDUCE_ONLY", True)
    settles_to(exchange, me, "USDC", (USDC, 0))
