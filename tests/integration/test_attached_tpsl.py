"""Attached TP/SL with OCO and position TP/SL (docs/api.md "Attached TP/SL and position
TP/SL"), through the real gateway, matcher and settler on a real Redis: a parent's children are
created on its first (partial) fill with the filled qty and grow with the next; the take-profit
firing cancels the stop-loss once (LAST) and the other way round (MARK, the oracle's push); a
sweep through both prices fires exactly one and cancels the other once, with no second trade;
a position TP/SL closes a position opened in several fills, replaces an older one of its kind
and, with no position left, ends with nothing traded; the SIGKILLed matcher replays a parent's
fill and a child's fire once; malformed orders are refused with nothing reserved and the
children's ids are taken. Balances, reserved amounts and positions to the unit; the auditor's
invariants after every test. One market per test (support/trigger_orders.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from support.exchange import Exchange
from support.order_changes import order_changes_channel, orders_of
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
    position,
    post,
    push_index,
    settles_to,
    v4_body,
)

from common import keys, money
from common.audit import audit
from common.eip712 import sign
from common.markets import Market, load_markets

pytestmark = pytest.mark.integration


def perp(exchange: Exchange) -> tuple[str, Market]:
    """A fresh perp copy with its oracle at P (mark P: MARKET orders trade within its band)."""
    name = fresh_market("F")
    push_index(exchange, name, P)
    return name, market_of(exchange, name)


def attached(trader: Trader, market: str, side: str, price: int, qty: int, tp: int, sl: int,
             **fields: Any) -> dict[str, Any]:  # fmt: skip
    """A LIMIT parent with a take-profit and a stop-loss on LAST."""
    fields.setdefault("triggerSource", "LAST")
    return v4_body(trader, market, side, "LIMIT", price, qty, 0, takeProfitPrice=tp,
                   stopLossPrice=sl, **fields)  # fmt: skip


def fee(market: Market, price: int, qty: int, maker: bool = False) -> int:
    bps = market.spec.makerFeeBps if maker else market.spec.takerFeeBps
    return money.fee(money.notional(market, price, qty), bps)


def trades(exchange: Exchange, market: str) -> list[tuple[int, int]]:
    listed = exchange.get(f"/v1/markets/{market}/trades")
    return sorted((int(t["price"]), int(t["qty"])) for t in listed)


def open_cids(exchange: Exchange, trader: Trader, market: str) -> set[str]:
    listed = exchange.get(f"/v1/accounts/{trader.address}/orders?open=1&market={market}")
    return {o["clientOrderId"] for o in listed}


def done_events(exchange: Exchange, market: str, cid: str) -> list[dict[str, Any]]:
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        entries = r.xrange(keys.market_events(market))
    events = [json.loads(v) for _, fields in entries for v in fields.values()]
    return [e for e in events if e["k"] == "done" and e["cid"] == cid]


def status_of(exchange: Exchange, trader: Trader, cid: str) -> str | None:
    """The order's status, None while it does not exist."""
    with exchange.client() as client:
        response = client.get(f"/v1/orders/{trader.address}/{cid}")
    return str(response.json()["status"]) if response.status_code == 200 else None


def cancel(exchange: Exchange, trader: Trader, market: str, cid: str) -> int:
    body = {"userId": trader.address, "market": market, "clientOrderId": cid,
            "ts": int(time.time() * 1000)}  # fmt: skip
    body["sig"] = sign(trader.key, "Cancel", body, CHAIN_ID, VERIFYING_CONTRACT)
    return post(exchange, "/v1/orders/cancel", body).status_code


class Publications:
    """The orders: publications of one account, read from Redis pub/sub."""

    def __init__(self, exchange: Exchange, trader: Trader) -> None:
        self.client = redis.Redis.from_url(exchange.redis_url, decode_responses=True)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(order_changes_channel("*"))  # every market's
        self.user = trader.address
        self.seen: list[dict[str, Any]] = []

    def of(self, cid: str) -> list[dict[str, Any]]:
        while (message := self.pubsub.get_message(timeout=0.2)) is not None:
            self.seen.extend(orders_of(self.user, message))
        return [o for o in self.seen if o["clientOrderId"] == cid]

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


def trade_at(exchange: Exchange, seller: Trader, buyer: Trader, market: str, price: int) -> None:
    """One trade of Q at price (LAST = price): a resting SELL taken by an IOC BUY."""
    limit(exchange, seller, market, "SELL", price, Q)
    limit(exchange, buyer, market, "BUY", price, Q, "IOC")


def test_children_grow_with_each_fill_and_the_take_profit_cancels_the_stop_loss_once(
    exchange: Exchange,
) -> None:
    name, market = perp(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = attached(me, name, "BUY", P, 3 * Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    parent = placed(exchange, body)
    assert (parent["status"], parent["filled"]) == ("PARTIAL", Q)
    tp, sl = order(exchange, me, cid + ".tp"), order(exchange, me, cid + ".sl")
    for child, kind, trigger in ((tp, "TAKE_PROFIT_MARKET", P + 100), (sl, "STOP_MARKET", P - 100)):
        assert (child["status"], child["type"], child["side"], child["qty"], child["price"]) == (
            "UNTRIGGERED", kind, "SELL", Q, 0)  # fmt: skip
        assert (child["reduceOnly"], child["triggerPrice"], child["triggerSource"]) == (
            True, trigger, "LAST")  # fmt: skip
    assert open_cids(exchange, me, name) == {cid, cid + ".tp", cid + ".sl"}
    limit(exchange, maker, name, "SELL", P, Q)  # the parent fills Q more, as the maker
    assert order(exchange, me, cid)["filled"] == 2 * Q
    assert order(exchange, me, cid + ".tp")["qty"] == 2 * Q
    assert order(exchange, me, cid + ".sl")["qty"] == 2 * Q
    limit(exchange, other, name, "BUY", P + 50, 2 * Q)  # what the take-profit sells into
    published = Publications(exchange, me)
    try:
        trade_at(exchange, maker, other, name, P + 100)  # LAST reaches the take-profit
        tp = order(exchange, me, cid + ".tp")
        assert (tp["status"], tp["filled"], tp["triggered"]) == ("FILLED", 2 * Q, True)
        sl = order(exchange, me, cid + ".sl")
        assert (sl["status"], sl["reason"], sl["filled"]) == ("CXL", "OCO", 0)
        ended = [o for o in published.of(cid + ".sl") if o["status"] == "CXL"]
        assert len(ended) == 1 and ended[0]["reason"] == "OCO"
    finally:
        published.close()
    assert len(done_events(exchange, name, cid + ".sl")) == 1
    assert trades(exchange, name) == sorted([(P, Q), (P, Q), (P + 100, Q), (P + 50, 2 * Q)])
    assert cancel(exchange, me, name, cid) == 200  # its children keep what they were
    assert wait_for(lambda: open_cids(exchange, me, name) == set(), 10)
    assert position(exchange, me.address, name) == 0
    paid = fee(market, P, Q) + fee(market, P, Q, maker=True) + fee(market, P + 50, 2 * Q)
    pnl = money.notional(market, P + 50, 2 * Q) - money.notional(market, P, 2 * Q)
    settles_to(exchange, me, "USDC", (USDC - paid + pnl, 0))


def test_the_stop_loss_of_a_sell_fires_on_the_mark_and_cancels_its_take_profit(
    exchange: Exchange,
) -> None:
    """A SELL parent's children buy; on the market's default source (MARK) the oracle's push
    past the stop-loss fires it (the prices command) and the take-profit ends CXL OCO."""
    name, market = perp(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "BUY", P, Q)
    body = attached(me, name, "SELL", P, Q, P - 100, P + 100, triggerSource="")
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    tp, sl = order(exchange, me, cid + ".tp"), order(exchange, me, cid + ".sl")
    assert (tp["side"], tp["qty"], sl["side"], sl["qty"]) == ("BUY", Q, "BUY", Q)
    assert (tp["triggerSource"], sl["triggerSource"]) == ("MARK", "MARK")
    limit(exchange, other, name, "SELL", P + 150, Q)  # what the stop-loss buys
    push_index(exchange, name, P + 100)  # no bid: the mark is the index
    assert wait_for(lambda: status_of(exchange, me, cid + ".sl") == "FILLED", 10)
    assert order(exchange, me, cid + ".sl")["filled"] == Q
    tp = order(exchange, me, cid + ".tp")
    assert (tp["status"], tp["reason"]) == ("CXL", "OCO")
    assert len(done_events(exchange, name, cid + ".tp")) == 1
    assert position(exchange, me.address, name) == 0
    paid = fee(market, P, Q) + fee(market, P + 150, Q)
    pnl = money.notional(market, P, Q) - money.notional(market, P + 150, Q)
    settles_to(exchange, me, "USDC", (USDC - paid + pnl, 0))
    assert wait_for(lambda: open_cids(exchange, me, name) == set(), 10)


def test_one_sweep_through_both_prices_fires_one_child_and_cancels_the_other_once(
    exchange: Exchange,
) -> None:
    """A SELL sweeps the bids from above the take-profit to below the stop-loss in one command:
    LAST is judged where the command leaves it (below the stop-loss), so the stop-loss fires
    and the take-profit ends CXL OCO; the stop-loss's own sale moves nothing more."""
    name, market = perp(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    limit(exchange, maker, name, "SELL", P, Q)
    body = attached(me, name, "BUY", P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "FILLED"
    limit(exchange, other, name, "BUY", P + 110, Q)
    limit(exchange, other, name, "BUY", P - 110, 2 * Q)  # Q for the sweep, Q for the stop-loss
    published = Publications(exchange, me)
    try:
        limit(exchange, maker, name, "SELL", P - 110, 2 * Q, "IOC")  # P + 110, then P - 110
        sl, tp = order(exchange, me, cid + ".sl"), order(exchange, me, cid + ".tp")
        assert (sl["status"], sl["filled"]) == ("FILLED", Q)
        assert (tp["status"], tp["reason"], tp["filled"]) == ("CXL", "OCO", 0)
        assert [o["status"] for o in published.of(cid + ".tp")] == ["CXL"]
    finally:
        published.close()
    assert len(done_events(exchange, name, cid + ".tp")) == 1
    assert len(done_events(exchange, name, cid + ".sl")) == 1
    # the auditor knows the rule: a child waiting beside a fired sibling is reported
    with redis.Redis.from_url(exchange.redis_url, decode_responses=True) as r:
        record = keys.market_order(name, me.address.lower(), cid + ".tp")
        r.hset(record, "status", "UNTRIGGERED")  # as if the OCO had missed it
        problems = audit(r, load_markets(Path(exchange.env["DEX_MARKETS_FILE"])))
        r.hset(record, "status", "CXL")
    found = problems["invariants"]["ordersFinalOrResting"]["problems"]
    assert any("OCO sibling" in problem for problem in found), found
    assert trades(exchange, name) == sorted([(P, Q), (P + 110, Q), (P - 110, Q), (P - 110, Q)])
    assert position(exchange, me.address, name) == 0
    paid = fee(market, P, Q) + fee(market, P - 110, Q)
    pnl = money.notional(market, P - 110, Q) - money.notional(market, P, Q)
    settles_to(exchange, me, "USDC", (USDC - paid + pnl, 0))


def test_a_position_stop_loss_closes_a_position_opened_in_several_fills(
    exchange: Exchange,
) -> None:
    name, market = perp(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    for _ in range(3):
        limit(exchange, maker, name, "SELL", P, Q)
        limit(exchange, me, name, "BUY", P, Q, "IOC")
    assert wait_for(lambda: position(exchange, me.address, name) == 3 * Q, 10)

    def closing(kind: str, trigger: int) -> dict[str, Any]:
        return v4_body(me, name, "SELL", kind, 0, 0, trigger, closePosition=True,
                       triggerSource="LAST")  # fmt: skip

    first = closing("STOP_MARKET", P - 50)
    assert placed(exchange, first)["status"] == "UNTRIGGERED"
    stop = closing("STOP_MARKET", P - 100)  # replaces the first
    view = placed(exchange, stop)
    assert (view["status"], view["qty"], view["reduceOnly"]) == ("UNTRIGGERED", 0, True)
    old = order(exchange, me, first["clientOrderId"])
    assert (old["status"], old["reason"]) == ("CXL", "REPLACED")
    take = closing("TAKE_PROFIT_MARKET", P + 100)
    assert placed(exchange, take)["status"] == "UNTRIGGERED"
    taker_fees = 3 * fee(market, P, Q)
    settles_to(exchange, me, "USDC", (USDC - taker_fees, 0))  # nothing reserved
    limit(exchange, other, name, "BUY", P - 150, 3 * Q)  # what the stop sells into
    trade_at(exchange, maker, other, name, P - 100)
    view = order(exchange, me, stop["clientOrderId"])
    assert (view["status"], view["qty"], view["filled"]) == ("FILLED", 3 * Q, 3 * Q)
    assert position(exchange, me.address, name) == 0
    assert order(exchange, me, take["clientOrderId"])["status"] == "UNTRIGGERED"  # no OCO
    # the take-profit fires with no position left: it ends, nothing traded
    before = trades(exchange, name)
    trade_at(exchange, maker, other, name, P + 100)
    view = order(exchange, me, take["clientOrderId"])
    assert (view["status"], view["reason"], view["filled"]) == ("REJECTED", "REDUCE_ONLY", 0)
    assert trades(exchange, name) == sorted([*before, (P + 100, Q)])
    paid = taker_fees + fee(market, P - 150, 3 * Q)
    pnl = money.notional(market, P - 150, 3 * Q) - money.notional(market, P, 3 * Q)
    settles_to(exchange, me, "USDC", (USDC - paid + pnl, 0))


def test_a_fill_and_a_fire_replayed_after_sigkill_apply_once(exchange: Exchange) -> None:
    """The matcher is SIGKILLed with the parent's fill and the take-profit's trade waiting in
    the stream; restarted, it creates the children once and fires the take-profit once."""
    name, market = perp(exchange)
    maker, other, me = funded(exchange), funded(exchange), funded(exchange)
    body = attached(me, name, "BUY", P, Q, P + 100, P - 100)
    cid = body["clientOrderId"]
    assert placed(exchange, body)["status"] == "NEW"
    exchange.kill("matcher")
    # the parent fills (maker); a bid for the take-profit; a trade at P + 100 (LAST)
    for trader, side, price, tif in ((maker, "SELL", P, "GTC"), (other, "BUY", P + 50, "GTC"),
                                     (maker, "SELL", P + 100, "GTC"),
                                     (other, "BUY", P + 100, "IOC")):  # fmt: skip
        sent = trader.order(name, side, price, Q, product="PERP", timeInForce=tif)
        assert post(exchange, "/v1/orders", sent).status_code == 202
    exchange.start("matcher")
    assert wait_for(lambda: status_of(exchange, me, cid + ".tp") == "FILLED", 20)
    assert order(exchange, me, cid + ".sl")["status"] == "CXL"
    assert [e["status"] for e in done_events(exchange, name, cid + ".sl")] == ["CXL"]
    assert [e["status"] for e in done_events(exchange, name, cid + ".tp")] == ["FILLED"]
    assert trades(exchange, name) == sorted([(P, Q), (P + 100, Q), (P + 50, Q)])
    paid = fee(market, P, Q, maker=True) + fee(market, P + 50, Q)
    pnl = money.notional(market, P + 50, Q) - money.notional(market, P, Q)
    settles_to(exchange, me, "USDC", (USDC - paid + pnl, 0))


CLOSE = {"closePosition": True}
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    # (market, fields, code): a BUY LIMIT at P of Q unless fields say otherwise
    ("F", {"takeProfitPrice": P - 10}, "INVALID_PRICE"),  # a BUY's take-profit below its price
    ("F", {"stopLossPrice": P + 10}, "INVALID_PRICE"),  # its stop-loss above
    ("F", {"side": "SELL", "takeProfitPrice": P + 10}, "INVALID_PRICE"),
    (
        "F",
        {"type": "MARKET", "price": 0, "takeProfitPrice": P, "stopLossPrice": P},
        "INVALID_PRICE",
    ),
    ("F", {"takeProfitPrice": P + 10, "cid": "x" * 62}, "INVALID_ORDER"),
    ("F", {"type": "STOP_MARKET", "trigger": P + 10, "takeProfitPrice": P + 20}, "INVALID_ORDER"),
    ("S", {"side": "SELL", "takeProfitPrice": P + 10}, "INVALID_PRICE"),  # a SPOT SELL's too
    ("F", {"type": "STOP_MARKET", "trigger": P - 10, "side": "SELL", **CLOSE}, "INVALID_QTY"),
    (
        "S",
        {"type": "STOP_MARKET", "trigger": P - 10, "side": "SELL", **CLOSE, "qty": 0},
        "INVALID_ORDER",
    ),
    ("F", {"type": "STOP_LIMIT", "trigger": P - 10, **CLOSE}, "INVALID_ORDER"),
]


def test_malformed_attached_and_position_orders_are_refused_and_child_ids_are_taken(
    exchange: Exchange,
) -> None:
    names = {"F": perp(exchange)[0], "S": fresh_market("S")}
    me = funded(exchange)
    for prefix, fields, code in MALFORMED:
        fields = dict(fields)
        side, order_type = fields.pop("side", "BUY"), fields.pop("type", "LIMIT")
        price, qty = fields.pop("price", P), fields.pop("qty", Q)
        trigger = fields.pop("trigger", 0)
        body = v4_body(me, names[prefix], side, order_type, price, qty, trigger, **fields)
        response = post(exchange, "/v1/orders", body)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), (
            fields, response.text)  # fmt: skip
    assert exchange.balance(me.address, "USDC") == (USDC, 0)
    assert exchange.balance(me.address, "BTC") == (BTC, 0)
    name = names["F"]
    # a parent takes <cid>.tp and <cid>.sl: no order may use them, and a parent whose child
    # id is in use is refused whole
    parent = attached(me, name, "BUY", P, Q, P + 100, P - 100, cid="p-1")
    assert placed(exchange, parent)["status"] == "NEW"
    clash = v4_body(me, name, "BUY", "LIMIT", P - 1, Q, 0, cid="p-1.sl")
    assert post(exchange, "/v1/orders", clash).status_code == 409
    used = v4_body(me, name, "BUY", "LIMIT", P - 2, Q, 0, cid="q-1.tp")  # then a parent q-1
    assert placed(exchange, used)["status"] == "NEW"
    refused = attached(me, name, "BUY", P, Q, P + 100, 0, cid="q-1")
    assert post(exchange, "/v1/orders", refused).status_code == 409
    # the parent cancelled unfilled: its children never exist and leave the open orders
    assert cancel(exchange, me, name, "p-1") == 200
    assert wait_for(lambda: "p-1.tp" not in open_cids(exchange, me, name), 10)
    assert open_cids(exchange, me, name) == {"q-1.tp"}
    assert [e["attached"] for e in done_events(exchange, name, "p-1")] == [["p-1.tp", "p-1.sl"]]
    with exchange.client() as client:
        assert client.get(f"/v1/orders/{me.address}/p-1.tp").status_code == 404
    # a child is cancelled on its own; its sibling stays
    maker = funded(exchange)
    limit(exchange, maker, name, "SELL", P + 10, Q)
    body = attached(me, name, "BUY", P + 10, Q, P + 100, P - 100, cid="r-1")
    assert placed(exchange, body)["status"] == "FILLED"
    assert cancel(exchange, me, name, "r-1.tp") == 200
    assert (status_of(exchange, me, "r-1.tp"), status_of(exchange, me, "r-1.sl")) == (
        "CXL", "UNTRIGGERED")  # fmt: skip
    assert wait_for(lambda: open_cids(exchange, me, name) == {"q-1.tp", "r-1.sl"}, 10)
    # someone else cannot reach it: not found under their name
    assert cancel(exchange, funded(exchange), name, "r-1.sl") == 404
    assert status_of(exchange, me, "r-1.sl") == "UNTRIGGERED"
