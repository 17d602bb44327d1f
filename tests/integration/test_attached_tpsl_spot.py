"""Attached TP/SL on SPOT (docs/api.md "Attached TP/SL and position TP/SL"), through the real
gateway, matcher and settler on a real Redis: a BUY parent's children sell the base it bought,
which their pair holds (dex:{u}:res "<cid>|tpsl") from the fill that credits it; the child that
fires spends the hold, its OCO sibling releases nothing, the last child to end unfired releases
it. Balances and reservations of BTC and USDC to the unit after each step; a child fired in the
same matcher call as the parent's fill; the settle worker SIGKILLed between the parent's fill and
the child's fire, with the accounts of the unsettled events applied once before it comes back;
the matcher SIGKILLed with the fill and the fire in its stream; the held base cannot be
withdrawn; the refused shapes reserve nothing; the auditor's invariants after every test. One
market per test (support/trigger_orders.py).

A SELL parent's children buy the base back: the pair holds quote, locked whole at admission (its
qty at the bound, as a LIMIT BUY reserves it; 422 with nothing reserved when it is not there);
the parent's end keeps what buying back its filled qty may spend; the child that fires takes that
as its budget, buys what it affords (at most its qty) and releases the rest; one move through
both prices fires one; the matcher SIGKILLed with the fill and the fire in its stream."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.trigger_orders import (
    BTC,
    USDC,
    P,
    Q,
    assert_audit_ok,
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

from common import keys, money
from common.audit import audit
from common.eip712 import sign
from common.markets import Market, load_markets
from services.settler import settlement
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration


def spot(exchange: Exchange) -> tuple[str, Market]:
    name = fresh_market("S")
    return name, market_of(exchange, name)


def parent(trader: Trader, market: str, price: int, qty: int, tp: int, sl: int,
           **fields: Any) -> dict[str, Any]:  # fmt: skip
    """A LIMIT BUY parent with a take-profit and a stop-loss on LAST (SPOT's default)."""
    return v4_body(trader, market, "BUY", "LIMIT", price, qty, 0, takeProfitPrice=tp,
                   stopLossPrice=sl, **fields)  # fmt: skip


def base(market: Market, qty: int) -> int:
    return money.base_units(market, qty)


def cost(market: Market, price: int, qty: int, maker: bool = False) -> int:
    """What a BUY of qty at price pays in USDC (notional + fee)."""
    amount = money.notional(market, price, qty)
    return amount + money.fee(amount, market.spec.makerFeeBps if maker else market.spec.takerFeeBps)


def proceeds(market: Market, price: int, qty: int, maker: bool = False) -> int:
    """What a SELL of qty at price is credited in USDC (notional − fee)."""
    amount = money.notional(market, price, qty)
    return amount - money.fee(amount, market.spec.makerFeeBps if maker else market.spec.takerFeeBps)


def reservations(exchange: Exchange, trader: Trader) -> dict[str, str]:
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        return dict(r.hgetall(keys.reservations(trader.address.lower())))


def events(exchange: Exchange, market: str) -> list[list[dict[str, Any]]]:
    """The market's settlement events, one list per stream entry (one matcher call)."""
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        entries = r.xrange(keys.market_events(market))
    return [[json.loads(v) for v in fields.values()] for _, fields in entries]


def done_of(exchange: Exchange, market: str, cid: str) -> list[dict[str, Any]]:
    return [e for call in events(exchange, market) for e in call
            if e["k"] == "done" and e["cid"] == cid]  # fmt: skip


def assert_one_fired(exchange: Exchange, me: Trader, market: str, cid: str, fired: str) -> None:
    """Of the pair, ``fired`` (tp or sl) filled Q and its sibling ended CXL OCO, one done each."""
    other = {"tp": "sl", "sl": "tp"}[fired]
    won, lost = order(exchange, me, f"{cid}.{fired}"), order(exchange, me, f"{cid}.{other}")
    assert (won["status"], won["filled"]) == ("FILLED", Q)
    assert (lost["status"], lost["reason"], lost["filled"]) == ("CXL", "OCO", 0)
    assert len(done_of(exchange, market, f"{cid}.tp")) == 1
    assert len(done_of(exchange, market, f"{cid}.sl")) == 1


def trades(exchange: Exchange, market: str) -> list[tuple[int, int]]:
    listed = exchange.get(f"/v1/markets/{market}/trades")
    return sorted((int(t["price"]), int(t["qty"])) for t in listed)


def cancel(exchange: Exchange, trader: Trader, market: str, cid: str) -> int:
    body = {"userId": trader.address, "market": market, "clientOrderId": cid,
            "ts": int(time.time() * 1000)}  # fmt: skip
    body["sig"] = sign(trader.key, "Cancel", body, CHAIN_ID, VERIFYING_CONTRACT)
    return post(exchange, "/v1/orders/cancel", body).status_code


def status_of(exchange: Exchange, trader: Trader, cid: str) -> str | None:
    with exchange.client() as client:
        response = client.get(f"/v1/orders/{trader.address}/{cid}")
    return str(response.json()["status"]) if response.status_code == 200 else None


def test_two_fills_hold_the_summed_base_and_the_take_profit_spends_it(
    exchange: Exchange,
) -> None:
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = parent(me, name, P, 3 * Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert (placed(exchange, body)["status"], order(exchange, me, cid)["filled"]) == ("PARTIAL", Q)
    for kind, trigger in (("tp", P + 100), ("sl", P - 100)):
        child = order(exchange, me, f"{cid}.{kind}")
        assert (child["status"], child["side"], child["qty"], child["price"]) == (
            "UNTRIGGERED", "SELL", Q, 0)  # fmt: skip
        assert (child["reduceOnly"], child["triggerPrice"], child["triggerSource"]) == (
            False, trigger, "LAST")  # fmt: skip
    paid = cost(market, P, Q)
    settles_to(exchange, me, "BTC", (BTC + base(market, Q), base(market, Q)))
    settles_to(exchange, me, "USDC", (USDC - paid, money.spot_buy_reservation(market, P, 2 * Q)))
    assert reservations(exchange, me)[cid + "|tpsl"] == str(base(market, Q))
    limit(exchange, maker, name, "SELL", P, Q)  # the parent fills Q more, as the maker
    assert (
        order(exchange, me, cid + ".tp")["qty"] == order(exchange, me, cid + ".sl")["qty"] == 2 * Q
    )
    paid += cost(market, P, Q, maker=True)
    settles_to(exchange, me, "BTC", (BTC + base(market, 2 * Q), base(market, 2 * Q)))
    settles_to(exchange, me, "USDC", (USDC - paid, money.spot_buy_reservation(market, P, Q)))
    limit(exchange, other, name, "BUY", P + 50, 2 * Q)  # what the take-profit sells into
    limit(exchange, maker, name, "SELL", P + 100, Q)
    limit(exchange, other, name, "BUY", P + 100, Q, "IOC")  # LAST reaches the take-profit
    tp, sl = order(exchange, me, cid + ".tp"), order(exchange, me, cid + ".sl")
    assert (tp["status"], tp["filled"], tp["triggered"]) == ("FILLED", 2 * Q, True)
    assert (sl["status"], sl["reason"], sl["filled"]) == ("CXL", "OCO", 0)
    assert [e.get("hold") for e in done_of(exchange, name, cid + ".sl")] == [None]
    assert [e.get("hold") for e in done_of(exchange, name, cid + ".tp")] == [None]
    got = proceeds(market, P + 50, 2 * Q)
    settles_to(exchange, me, "BTC", (BTC, 0))  # the hold spent to the unit
    settles_to(exchange, me, "USDC", (USDC - paid + got, money.spot_buy_reservation(market, P, Q)))
    assert reservations(exchange, me) == {cid: str(money.spot_buy_reservation(market, P, Q))}
    assert cancel(exchange, me, name, cid) == 200
    settles_to(exchange, me, "USDC", (USDC - paid + got, 0))
    assert reservations(exchange, me) == {}


def test_one_move_through_both_prices_fires_exactly_one(exchange: Exchange) -> None:
    """A SELL sweeps the bids from above the take-profit to below the stop-loss: the
    stop-loss fires (one trade), the take-profit ends CXL OCO, one done event each."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = parent(me, name, P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    limit(exchange, other, name, "BUY", P + 110, Q)
    limit(exchange, other, name, "BUY", P - 110, 2 * Q)  # Q for the sweep, Q for the stop-loss
    limit(exchange, maker, name, "SELL", P - 110, 2 * Q, "IOC")  # P + 110, then P - 110
    assert_one_fired(exchange, me, name, cid, fired="sl")
    assert trades(exchange, name) == sorted([(P, Q), (P + 110, Q), (P - 110, Q), (P - 110, Q)])
    settles_to(exchange, me, "BTC", (BTC, 0))
    settles_to(exchange, me, "USDC", (USDC - cost(market, P, Q) + proceeds(market, P - 110, Q), 0))
    assert reservations(exchange, me) == {}


def test_a_cancelled_child_leaves_the_hold_to_its_sibling_and_the_last_releases_it(
    exchange: Exchange,
) -> None:
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, 2 * Q)
    first, second = parent(me, name, P, Q, P + 100, P - 100), parent(me, name, P, Q, P + 90, 0)
    assert placed(exchange, first)["status"] == placed(exchange, second)["status"] == "FILLED"
    a, b = first["clientOrderId"], second["clientOrderId"]
    paid = 2 * cost(market, P, Q)
    settles_to(exchange, me, "BTC", (BTC + base(market, 2 * Q), base(market, 2 * Q)))
    assert cancel(exchange, me, name, a + ".tp") == 200
    assert [e.get("hold") for e in done_of(exchange, name, a + ".tp")] == [None]
    settles_to(exchange, me, "BTC", (BTC + base(market, 2 * Q), base(market, 2 * Q)))
    assert set(reservations(exchange, me)) == {a + "|tpsl", b + "|tpsl"}
    # the stop-loss still holds and fires: it sells Q from the hold
    limit(exchange, other, name, "BUY", P - 150, Q)
    limit(exchange, maker, name, "SELL", P - 100, Q)
    limit(exchange, other, name, "BUY", P - 100, Q, "IOC")  # LAST at the stop-loss
    assert (status_of(exchange, me, a + ".sl"), order(exchange, me, a + ".sl")["filled"]) == (
        "FILLED", Q)  # fmt: skip
    got = proceeds(market, P - 150, Q)
    settles_to(exchange, me, "BTC", (BTC + base(market, Q), base(market, Q)))
    settles_to(exchange, me, "USDC", (USDC - paid + got, 0))
    # the second parent's only child cancelled: its hold released to the unit
    assert cancel(exchange, me, name, b + ".tp") == 200
    assert [e["hold"] for e in done_of(exchange, name, b + ".tp")] == [b + "|tpsl"]
    settles_to(exchange, me, "BTC", (BTC + base(market, Q), 0))
    assert reservations(exchange, me) == {}


def test_both_children_cancelled_release_the_hold_once(exchange: Exchange) -> None:
    name, market = spot(exchange)
    maker, me = funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = parent(me, name, P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    settles_to(exchange, me, "BTC", (BTC + base(market, Q), base(market, Q)))
    # the auditor knows the rule: a hold must be what its waiting children sell
    user, hold = me.address.lower(), cid + "|tpsl"
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        r.hincrby(keys.reservations(user), hold, 1)
        problems = audit(r, load_markets(Path(exchange.env["DEX_MARKETS_FILE"])))
        r.hincrby(keys.reservations(user), hold, -1)
    found = problems["invariants"]["reservationsMatchOpenOrders"]["problems"]
    assert any("its waiting children sell" in problem for problem in found), found
    # the held base cannot be withdrawn: one unit more than the free BTC is refused
    message = {"userId": me.address, "asset": "BTC", "amount": str(BTC + 1),
               "ts": int(time.time() * 1000)}  # fmt: skip
    message["sig"] = sign(me.key, "Withdraw", message, CHAIN_ID, VERIFYING_CONTRACT)
    refused = post(exchange, "/v1/withdrawals", message)
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "INSUFFICIENT_BALANCE")
    assert exchange.balance(me.address, "BTC") == (BTC + base(market, Q), base(market, Q))
    assert cancel(exchange, me, name, cid + ".sl") == 200
    assert cancel(exchange, me, name, cid + ".tp") == 200
    assert [e.get("hold") for e in done_of(exchange, name, cid + ".sl")] == [None]
    assert [e.get("hold") for e in done_of(exchange, name, cid + ".tp")] == [cid + "|tpsl"]
    settles_to(exchange, me, "BTC", (BTC + base(market, Q), 0))
    settles_to(exchange, me, "USDC", (USDC - cost(market, P, Q), 0))
    assert reservations(exchange, me) == {}
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        r.hset(keys.reservations(user), hold, 1)  # as if the release had missed it
        problems = audit(r, load_markets(Path(exchange.env["DEX_MARKETS_FILE"])))
        r.hdel(keys.reservations(user), hold)
    found = problems["invariants"]["reservationsMatchOpenOrders"]["problems"]
    assert any("its children wait with set()" in problem for problem in found), found


def test_a_fired_child_that_sells_part_releases_the_rest(exchange: Exchange) -> None:
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = parent(me, name, P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    half = Q // 2
    limit(exchange, other, name, "BUY", P - 100, half)
    limit(exchange, other, name, "BUY", P - 150, half)  # all the stop-loss finds
    limit(exchange, maker, name, "SELL", P - 100, half, "IOC")  # LAST at the stop-loss
    sl = order(exchange, me, cid + ".sl")
    assert (sl["filled"], sl["triggered"], sl["status"] in ("CXL", "EXP")) == (half, True, True)
    settles_to(exchange, me, "BTC", (BTC + base(market, Q - half), 0))
    settles_to(
        exchange, me, "USDC", (USDC - cost(market, P, Q) + proceeds(market, P - 150, half), 0)
    )
    assert reservations(exchange, me) == {}


def test_a_child_fired_in_the_same_call_as_the_parent_fill_spends_the_hold_it_made(
    exchange: Exchange,
) -> None:
    """One SELL fills the resting parent and goes on to print below the stop-loss: in that one
    matcher call the parent's fill (naming the hold) precedes the stop-loss's take and its
    trade, so the settler holds the base before the sale spends it."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    body = parent(me, name, P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "NEW"
    limit(exchange, other, name, "BUY", P - 200, Q)
    limit(exchange, other, name, "BUY", P - 250, Q)  # what the stop-loss sells into
    limit(exchange, maker, name, "SELL", P - 200, 2 * Q, "IOC")
    assert (status_of(exchange, me, cid + ".sl"), status_of(exchange, me, cid + ".tp")) == (
        "FILLED", "CXL")  # fmt: skip
    call = next(c for c in events(exchange, name) if any(e["k"] == "take" for e in c))
    assert [e["eseq"] for e in call] == sorted(e["eseq"] for e in call)

    def at(kind: str, **fields: str) -> int:
        wanted = {"k": kind, **fields}
        return next(i for i, e in enumerate(call) if all(e.get(k) == v for k, v in wanted.items()))

    assert call[at("fill", buyCid=cid)]["hold"] == cid + "|tpsl"
    assert at("fill", buyCid=cid) < at("take", cid=cid + ".sl")
    assert (
        at("take", cid=cid + ".sl") < at("fill", sellCid=cid + ".sl") < at("done", cid=cid + ".sl")
    )
    settles_to(exchange, me, "BTC", (BTC, 0))
    settles_to(exchange, me, "USDC", (USDC - cost(market, P, Q, maker=True)
                                      + proceeds(market, P - 250, Q), 0))  # fmt: skip
    assert reservations(exchange, me) == {}


def test_a_settle_worker_killed_between_the_fill_and_the_fire_holds_and_spends_once(
    exchange: Exchange,
) -> None:
    """The settle worker dies once the parent's fill is settled; the fire comes while it is
    down, its accounts applied by a worker that died before the cursor moved; restarted, the
    worker settles the same events again: nothing is held, spent or released twice."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = parent(me, name, P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    settles_to(exchange, me, "BTC", (BTC + base(market, Q), base(market, Q)))
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        assert wait_for(lambda: Ledger(r).is_settled(name), 20)  # the fill's events all applied
    exchange.kill("settler")  # a settle loop dies holding the market: its lease lapses (5 s)
    try:
        limit(exchange, other, name, "BUY", P + 50, Q)
        limit(exchange, maker, name, "SELL", P + 100, Q)
        limit(exchange, other, name, "BUY", P + 100, Q, "IOC")  # the take-profit fires
        assert status_of(exchange, me, cid + ".tp") == "FILLED"
        # a worker applies every account's share of what is unsettled, then dies
        with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
            ledger = Ledger(r)
            cursor = r.get(keys.market_settled(name)) or "0-0"
            pending, _ = ledger._read_events(name, cursor)
            assert {"take", "fill", "done"} <= {e["k"] for e in pending}
            plan = settlement.plan(market, pending, ledger._order_terms(market, pending)[0])
            ledger._apply_all(name, [(a, g) for a, g in plan.items() if a != keys.FEES_ACCOUNT])
            assert r.get(keys.market_settled(name)) == (None if cursor == "0-0" else cursor)
        assert exchange.balance(me.address, "BTC") == (BTC, 0)
    finally:
        exchange.start("settler")
    # as the beat's sweeper does: a settle task now and then until the market is settled (the
    # killed worker's lock lapses first when it died holding it)
    app = Celery("test-client", broker=exchange.redis_url)
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:

        def settled() -> bool:
            if Ledger(r).is_settled(name):
                return True
            app.send_task("dex.settle", args=[name], queue="settle")
            time.sleep(0.5)
            return False

        try:
            assert wait_for(settled, 40)
        finally:
            app.close()
    settles_to(exchange, me, "BTC", (BTC, 0))
    settles_to(exchange, me, "USDC", (USDC - cost(market, P, Q) + proceeds(market, P + 50, Q), 0))
    assert reservations(exchange, me) == {}


def test_a_fill_and_a_fire_replayed_by_a_sigkilled_matcher_hold_and_spend_once(
    exchange: Exchange,
) -> None:
    """The matcher is SIGKILLed with the parent's fill and the take-profit's trade waiting in
    its stream; restarted, it holds the base once and fires the take-profit once."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    body = parent(me, name, P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "NEW"
    exchange.kill("matcher")
    try:
        for trader, side, price, tif in ((maker, "SELL", P, "GTC"), (other, "BUY", P + 50, "GTC"),
                                         (maker, "SELL", P + 100, "GTC"),
                                         (other, "BUY", P + 100, "IOC")):  # fmt: skip
            sent = trader.order(name, side, price, Q, product="SPOT", timeInForce=tif)
            assert post(exchange, "/v1/orders", sent).status_code == 202
    finally:
        exchange.start("matcher")
    assert wait_for(lambda: status_of(exchange, me, cid + ".tp") == "FILLED", 20)
    assert [e["status"] for e in done_of(exchange, name, cid + ".sl")] == ["CXL"]
    assert [e["status"] for e in done_of(exchange, name, cid + ".tp")] == ["FILLED"]
    takes = [e for call in events(exchange, name) for e in call if e["k"] == "take"]
    assert [e["cid"] for e in takes] == [cid + ".tp"]
    assert trades(exchange, name) == sorted([(P, Q), (P + 100, Q), (P + 50, Q)])
    settles_to(exchange, me, "BTC", (BTC, 0))
    paid = cost(market, P, Q, maker=True)
    settles_to(exchange, me, "USDC", (USDC - paid + proceeds(market, P + 50, Q), 0))
    assert reservations(exchange, me) == {}


# a SELL's take-profit must be below its stop-loss
SELL_TP_ABOVE_SL = {"takeProfitPrice": P - 100, "stopLossPrice": P - 200}
REFUSED: list[tuple[dict[str, Any], str]] = [
    # a BUY LIMIT at P of Q on a SPOT market unless the fields say otherwise
    ({"side": "SELL", "takeProfitPrice": P + 100, "stopLossPrice": P + 200}, "INVALID_PRICE"),
    ({"side": "SELL", "type": "MARKET", "price": 0, **SELL_TP_ABOVE_SL}, "INVALID_PRICE"),
    ({"takeProfitPrice": P - 10}, "INVALID_PRICE"),  # a BUY's take-profit below its price
    ({"stopLossPrice": P + 10}, "INVALID_PRICE"),
    ({"type": "STOP_LIMIT", "trigger": P + 10, "takeProfitPrice": P + 20}, "INVALID_ORDER"),
    ({"takeProfitPrice": P + 10, "cid": "y" * 62}, "INVALID_ORDER"),
]


def test_refused_spot_shapes_reserve_nothing(exchange: Exchange) -> None:
    name, _ = spot(exchange)
    me = funded(exchange)
    for fields, code in REFUSED:
        fields = dict(fields)
        side, order_type = fields.pop("side", "BUY"), fields.pop("type", "LIMIT")
        price, trigger = fields.pop("price", P), fields.pop("trigger", 0)
        body = v4_body(me, name, side, order_type, price, Q, trigger, **fields)
        response = post(exchange, "/v1/orders", body)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), (
            fields, response.text)  # fmt: skip
    assert exchange.balance(me.address, "USDC") == (USDC, 0)
    assert exchange.balance(me.address, "BTC") == (BTC, 0)
    assert reservations(exchange, me) == {}


# -- a SELL parent: its children buy the base back with the quote its pair holds ----------------


def sell_parent(trader: Trader, market: str, price: int, qty: int, tp: int, sl: int,
                **fields: Any) -> dict[str, Any]:  # fmt: skip
    """A LIMIT SELL parent: take-profit below its price, stop-loss above, on LAST."""
    return v4_body(trader, market, "SELL", "LIMIT", price, qty, 0, takeProfitPrice=tp,
                   stopLossPrice=sl, **fields)  # fmt: skip


def buy_back(market: Market, bound: int, qty: int) -> int:
    """What a SELL parent's pair may spend buying back qty: a LIMIT BUY's reservation."""
    return money.spot_buy_reservation(market, bound, qty)


def test_a_sell_parent_holds_quote_its_cancel_releases_the_unfilled_share_and_the_sl_buys_back(
    exchange: Exchange,
) -> None:
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, other, name, "BUY", P, Q)
    tp, sl = P - 100, P + 100
    body = sell_parent(me, name, P, 3 * Q, tp, sl)
    cid = body["clientOrderId"]
    held = buy_back(market, sl, 3 * Q)  # locked at admission, with the SELL's own base
    assert placed(exchange, body)["status"] == "PARTIAL"
    for kind, trigger, kind_type in (("tp", tp, "TAKE_PROFIT_MARKET"), ("sl", sl, "STOP_MARKET")):
        child = order(exchange, me, f"{cid}.{kind}")
        assert (child["status"], child["side"], child["type"], child["qty"], child["price"]) == (
            "UNTRIGGERED", "BUY", kind_type, Q, 0)  # fmt: skip
        assert (child["reduceOnly"], child["triggerPrice"]) == (False, trigger)
    got = proceeds(market, P, Q)
    settles_to(exchange, me, "BTC", (BTC - base(market, Q), base(market, 2 * Q)))
    settles_to(exchange, me, "USDC", (USDC + got, held))
    assert reservations(exchange, me) == {cid: str(base(market, 2 * Q)), cid + "|tpsl": str(held)}
    limit(exchange, other, name, "BUY", P, Q)  # the parent fills Q more, as the maker
    assert (
        order(exchange, me, cid + ".tp")["qty"] == order(exchange, me, cid + ".sl")["qty"] == 2 * Q
    )
    got += proceeds(market, P, Q, maker=True)
    settles_to(exchange, me, "BTC", (BTC - base(market, 2 * Q), base(market, Q)))
    settles_to(exchange, me, "USDC", (USDC + got, held))  # still the whole qty's
    assert_audit_ok(exchange)  # the open parent's hold: what it locked at admission
    # cancelled part-filled: the hold keeps the filled qty's buy-back, the rest released
    assert cancel(exchange, me, name, cid) == 200
    kept = buy_back(market, sl, 2 * Q)
    assert [(e["hold"], e["keep"]) for e in done_of(exchange, name, cid)] == [(cid + "|tpsl", kept)]
    settles_to(exchange, me, "BTC", (BTC - base(market, 2 * Q), 0))
    settles_to(exchange, me, "USDC", (USDC + got, kept))
    assert reservations(exchange, me) == {cid + "|tpsl": str(kept)}
    assert_audit_ok(exchange)  # the ended parent's hold: its waiting children's buy-back
    user, hold = me.address.lower(), cid + "|tpsl"
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        r.hincrby(keys.reservations(user), hold, -1)
        problems = audit(r, load_markets(Path(exchange.env["DEX_MARKETS_FILE"])))
        r.hincrby(keys.reservations(user), hold, 1)
    found = problems["invariants"]["reservationsMatchOpenOrders"]["problems"]
    assert any(f"hold {kept - 1} for {hold}" in problem for problem in found), found
    # LAST rises to the stop-loss: it buys 2Q back at it, spending the hold to the unit
    limit(exchange, maker, name, "SELL", sl, 3 * Q)
    limit(exchange, other, name, "BUY", sl, Q, "IOC")
    sl_order, tp_order = order(exchange, me, cid + ".sl"), order(exchange, me, cid + ".tp")
    assert (sl_order["status"], sl_order["filled"], sl_order["triggered"]) == (
        "FILLED",
        2 * Q,
        True,
    )
    assert (tp_order["status"], tp_order["reason"], tp_order["filled"]) == ("CXL", "OCO", 0)
    takes = [e for call in events(exchange, name) for e in call if e["k"] == "take"]
    assert [(e["cid"], e["keep"]) for e in takes] == [(cid + ".sl", kept)]
    assert [e.get("hold") for e in done_of(exchange, name, cid + ".tp")] == [None]
    assert cost(market, sl, 2 * Q) == kept
    settles_to(exchange, me, "BTC", (BTC, 0))
    settles_to(exchange, me, "USDC", (USDC + got - kept, 0))
    assert reservations(exchange, me) == {}


def test_a_stop_loss_gapping_above_the_bound_buys_what_the_hold_affords(
    exchange: Exchange,
) -> None:
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, other, name, "BUY", P, Q)
    sl = P + 100
    # a MARKET parent (price 0): its children are bounded by the stop-loss all the same
    body = v4_body(me, name, "SELL", "MARKET", 0, Q, 0, takeProfitPrice=P - 100, stopLossPrice=sl)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    held = buy_back(market, sl, Q)
    got = proceeds(market, P, Q)
    settles_to(exchange, me, "USDC", (USDC + got, held))
    limit(exchange, maker, name, "SELL", sl, Q)
    limit(exchange, maker, name, "SELL", sl + 300, Q)  # all the stop-loss finds: above its bound
    limit(exchange, other, name, "BUY", sl, Q, "IOC")  # LAST at the stop-loss
    bought = max(x for x in range(Q + 1) if cost(market, sl + 300, x) <= held)
    assert 0 < bought < Q
    child = order(exchange, me, cid + ".sl")
    assert (child["filled"], child["triggered"], child["status"] in ("CXL", "EXP")) == (
        bought, True, True)  # fmt: skip
    settles_to(exchange, me, "BTC", (BTC - base(market, Q - bought), 0))
    settles_to(exchange, me, "USDC", (USDC + got - cost(market, sl + 300, bought), 0))
    assert reservations(exchange, me) == {}


def test_one_move_through_both_buy_back_prices_fires_exactly_one(exchange: Exchange) -> None:
    """A SELL sweeps the bids from above the stop-loss to below the take-profit and rests the
    rest: the take-profit fires and buys it back, the stop-loss ends CXL OCO."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, other, name, "BUY", P, Q)
    body = sell_parent(me, name, P, Q, P - 100, P + 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    limit(exchange, other, name, "BUY", P + 110, Q)
    limit(exchange, other, name, "BUY", P - 110, Q)
    limit(exchange, maker, name, "SELL", P - 110, 3 * Q)  # P + 110, P - 110, Q rests at P - 110
    assert_one_fired(exchange, me, name, cid, fired="tp")
    assert trades(exchange, name) == sorted([(P, Q), (P + 110, Q), (P - 110, Q), (P - 110, Q)])
    settles_to(exchange, me, "BTC", (BTC, 0))
    settles_to(exchange, me, "USDC", (USDC + proceeds(market, P, Q) - cost(market, P - 110, Q), 0))
    assert reservations(exchange, me) == {}


def test_a_sell_parent_without_the_buy_back_quote_is_refused_with_nothing_reserved(
    exchange: Exchange,
) -> None:
    name, market = spot(exchange)
    tp, sl = P - 100, P + 100
    held = buy_back(market, sl, Q)
    short, enough = Trader(), Trader()
    for trader, quote in ((short, held - 1), (enough, held)):
        exchange.deposit(trader.address, "BTC", BTC)
        exchange.deposit(trader.address, "USDC", quote)
    refused = post(exchange, "/v1/orders", sell_parent(short, name, P, Q, tp, sl))
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "INSUFFICIENT_BALANCE")
    assert f"{held} USDC (what its attached TP/SL may spend" in refused.json()["error"]["message"]
    # a stop-loss far above: a hold past 2^53 quanta, not there either
    huge = post(exchange, "/v1/orders", sell_parent(enough, name, P, Q, tp, 2**52))
    assert (huge.status_code, huge.json()["error"]["code"]) == (422, "INSUFFICIENT_BALANCE")
    assert exchange.balance(enough.address, "USDC") == (held, 0)
    assert exchange.balance(short.address, "BTC") == (BTC, 0)
    assert exchange.balance(short.address, "USDC") == (held - 1, 0)
    assert reservations(exchange, short) == {}
    # exactly enough is admitted; cancelled with nothing filled, all of it is released
    body = sell_parent(enough, name, P, Q, tp, sl)
    assert placed(exchange, body)["status"] == "NEW"
    cid = body["clientOrderId"]
    assert exchange.balance(enough.address, "USDC") == (held, held)
    assert reservations(exchange, enough) == {cid: str(base(market, Q)), cid + "|tpsl": str(held)}
    assert cancel(exchange, enough, name, cid) == 200
    (done,) = done_of(exchange, name, cid)
    assert (done["keep"], done["attached"]) == (0, [cid + ".tp", cid + ".sl"])
    settles_to(exchange, enough, "USDC", (held, 0))
    settles_to(exchange, enough, "BTC", (BTC, 0))
    assert reservations(exchange, enough) == {}
    assert status_of(exchange, enough, cid + ".sl") is None


def test_a_child_fired_while_its_parent_rests_takes_its_budget_and_releases_the_rest(
    exchange: Exchange,
) -> None:
    """The take-profit fires while the parent still rests: it takes what buying back its qty
    may spend and the rest of the hold is released (no child grows again); its buy meets the
    parent's own ask first (self-trade prevention ends the parent, whose done names no hold)."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, other, name, "BUY", P, Q)
    sl = P + 100
    body = sell_parent(me, name, P, 3 * Q, P - 100, sl)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "PARTIAL"
    limit(exchange, maker, name, "SELL", P + 50, Q)  # behind the parent's ask
    limit(exchange, other, name, "BUY", P - 100, Q)
    limit(exchange, maker, name, "SELL", P - 100, Q, "IOC")  # LAST at the take-profit
    tp, sl_order = order(exchange, me, cid + ".tp"), order(exchange, me, cid + ".sl")
    assert (tp["status"], tp["filled"]) == ("FILLED", Q)
    assert (sl_order["status"], sl_order["reason"]) == ("CXL", "OCO")
    assert (order(exchange, me, cid)["status"], order(exchange, me, cid)["filled"]) == ("CXL", Q)
    takes = [e for call in events(exchange, name) for e in call if e["k"] == "take"]
    assert [(e["cid"], e["keep"]) for e in takes] == [(cid + ".tp", buy_back(market, sl, Q))]
    assert [("hold" in e, "keep" in e) for e in done_of(exchange, name, cid)] == [(False, False)]
    assert trades(exchange, name) == sorted([(P, Q), (P - 100, Q), (P + 50, Q)])
    settles_to(exchange, me, "BTC", (BTC, 0))
    settles_to(exchange, me, "USDC", (USDC + proceeds(market, P, Q) - cost(market, P + 50, Q), 0))
    assert reservations(exchange, me) == {}


def test_a_buy_back_replayed_by_a_sigkilled_matcher_holds_and_spends_once(
    exchange: Exchange,
) -> None:
    """The matcher is SIGKILLed with the SELL parent's fill and the stop-loss's trigger waiting
    in its stream; restarted, the stop-loss fires and buys back once."""
    name, market = spot(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    sl = P + 100
    body = sell_parent(me, name, P, Q, P - 100, sl)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "NEW"
    exchange.kill("matcher")
    try:
        for trader, side, price, qty, tif in ((other, "BUY", P, Q, "GTC"),
                                              (maker, "SELL", sl, 2 * Q, "GTC"),
                                              (other, "BUY", sl, Q, "IOC")):  # fmt: skip
            sent = trader.order(name, side, price, qty, product="SPOT", timeInForce=tif)
            assert post(exchange, "/v1/orders", sent).status_code == 202
    finally:
        exchange.start("matcher")
    assert wait_for(lambda: status_of(exchange, me, cid + ".sl") == "FILLED", 20)
    assert [e["status"] for e in done_of(exchange, name, cid + ".tp")] == ["CXL"]
    assert [e["status"] for e in done_of(exchange, name, cid + ".sl")] == ["FILLED"]
    takes = [e for call in events(exchange, name) for e in call if e["k"] == "take"]
    assert [(e["cid"], e["keep"]) for e in takes] == [(cid + ".sl", buy_back(market, sl, Q))]
    assert trades(exchange, name) == sorted([(P, Q), (sl, Q), (sl, Q)])
    settles_to(exchange, me, "BTC", (BTC, 0))
    paid = cost(market, sl, Q)
    settles_to(exchange, me, "USDC", (USDC + proceeds(market, P, Q, maker=True) - paid, 0))
    assert reservations(exchange, me) == {}
