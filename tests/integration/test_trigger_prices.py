"""Trigger orders on MARK and INDEX (docs/api.md "Trigger orders"), through the real gateway,
matcher and settler on a real Redis: every type and side on a perp fires when a price push jumps
past its trigger (and not before); the oracle's prices command fires an order exactly once
though the oracle runs twice while the matcher is SIGKILLed; the auditor's invariants hold
after every test. One market per test (support/trigger_orders.py); trailing stops and market
states: test_trigger_trailing.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.trigger_orders import (
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

from common import keys, money
from common.markets import load_markets
from common.reservations import derivative_terms
from services.settler.oracle import run_oracle

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


# (type, side, direction): U fires when the source rises to the trigger, D when it falls
CASES = [
    ("STOP_LIMIT", "BUY", "U"), ("STOP_MARKET", "BUY", "U"),
    ("TAKE_PROFIT_LIMIT", "SELL", "U"), ("TAKE_PROFIT_MARKET", "SELL", "U"),
    ("STOP_LIMIT", "SELL", "D"), ("STOP_MARKET", "SELL", "D"),
    ("TAKE_PROFIT_LIMIT", "BUY", "D"), ("TAKE_PROFIT_MARKET", "BUY", "D"),
]  # fmt: skip


@pytest.mark.parametrize("source", ["MARK", "INDEX"])
def test_every_type_and_side_fires_when_the_price_jumps_past_its_trigger(
    exchange: Exchange, source: str
) -> None:
    name = fresh_market("F")
    market = market_of(exchange, name)
    maker = funded(exchange)
    limit(exchange, maker, name, "SELL", P + 150, 4 * Q)
    limit(exchange, maker, name, "BUY", P - 150, 4 * Q)
    traders = {}
    for order_type, side, direction in CASES:
        trader = funded(exchange)
        trigger = P + 50 if direction == "U" else P - 50
        price = P + 200 if side == "BUY" else P - 200  # a MARKET's protection price
        signed = "" if source == "MARK" else source  # "" is a perp's default: MARK
        body = v4_body(trader, name, side, order_type, price, Q, trigger, triggerSource=signed)
        assert placed(exchange, body)["status"] == "UNTRIGGERED"
        assert order(exchange, trader, body["clientOrderId"])["triggerSource"] == source
        traders[(order_type, side)] = (trader, body["clientOrderId"], direction)
    # a jump from P to P + 60 (nothing at P + 50): the U orders fire, the D orders wait
    push_index(exchange, name, P + 60)
    for trader, cid, direction in traders.values():
        want = "FILLED" if direction == "U" else "UNTRIGGERED"
        assert wait_for(lambda t=trader, c=cid, w=want: order(exchange, t, c)["status"] == w, 10)
    # a jump down past P - 50: the D orders fire
    push_index(exchange, name, P - 60)
    for (order_type, side), (trader, cid, _) in traders.items():
        assert wait_for(lambda t=trader, c=cid: order(exchange, t, c)["status"] == "FILLED", 10)
        view = order(exchange, trader, cid)
        assert view["triggered"] is True and view["filled"] == Q, (order_type, side)
        assert position(exchange, trader.address, name) == (Q if side == "BUY" else -Q)
        fill = P + 150 if side == "BUY" else P - 150
        fee = money.fee(money.notional(market, fill, Q), market.spec.takerFeeBps)
        settles_to(exchange, trader, "USDC", (USDC - fee, 0))


def test_the_oracle_fires_an_order_once_though_run_twice_while_the_matcher_is_killed(
    exchange: Exchange,
) -> None:
    name = fresh_market("F")
    markets = load_markets(Path(exchange.env["DEX_MARKETS_FILE"]))
    maker, me = funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P + 150, 4 * Q)
    limit(exchange, maker, name, "BUY", P - 150, 4 * Q)
    body = v4_body(me, name, "BUY", "STOP_LIMIT", P + 200, Q, P + 50)
    assert placed(exchange, body)["status"] == "UNTRIGGERED"
    market = markets.markets[name]
    reserved = derivative_terms(market, "BUY", P + 200, Q, Q, P, P).reserved
    settles_to(exchange, me, "USDC", (USDC, reserved))  # as a LIMIT BUY at P + 200 reserves
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        exchange.kill("matcher")
        r.hset(keys.market_prices(name), "static", P + 60)
        now = int(time.time() * 1000)
        run_oracle(r, markets, "static", now, HOUR_MS)  # the prices command: XADDed
        run_oracle(r, markets, "static", now + 1, HOUR_MS)  # again: the order still waits
        entries = [e for _, e in r.xrange(keys.market_in(name)) if '"prices"' in e["c"]]
        assert len(entries) == 2
        exchange.start("matcher")
        cid = body["clientOrderId"]
        assert wait_for(lambda: order(exchange, me, cid)["status"] == "FILLED", 15)
        trades = exchange.get(f"/v1/markets/{name}/trades")
        assert [(int(t["price"]), int(t["qty"])) for t in trades] == [(P + 150, Q)]
        # a third run finds nothing waiting: no command at all
        before = r.xlen(keys.market_in(name))
        run_oracle(r, markets, "static", now + 2, HOUR_MS)
        assert r.xlen(keys.market_in(name)) == before
    fee = money.fee(money.notional(market, P + 150, Q), market.spec.takerFeeBps)
    settles_to(exchange, me, "USDC", (USDC - fee, 0))
    assert position(exchange, me.address, name) == Q
