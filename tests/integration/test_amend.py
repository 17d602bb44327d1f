"""Amend (docs/api.md "Amend") through the real gateway, matcher and settler on a real Redis:
a lower qty keeps the order's place in the queue, a larger qty or a new price moves it to the
back (a crossing price trades as a taker at the maker's price), expectedFilled refuses an
amend a fill overtook, and every reservation ends to the unit at what the order's rest needs.
Agents, replays, forgeries, other users' orders and malformed bodies are refused, changing
nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import redis
from support.exchange import ADMIN_TOKEN, Exchange
from support.gateway import ADMIN, ReplyingMatcher, gateway_client
from support.order_changes import order_changes_channel, orders_of
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys, money
from common.eip712 import sign
from common.markets import load_markets
from common.reservations import derivative_need
from common.settings import DEFAULT_MARKETS_FILE
from services.gateway import amends
from services.gateway.errors import ApiError

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
P = 3_000_000  # the PERP's index, so its mark: no open loss at this price
USDC = 10**12
BTC = 10**10
MARKETS = load_markets(DEFAULT_MARKETS_FILE)


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", USDC)
    exchange.deposit(trader.address, "BTC", BTC)
    return trader


def amend_body(
    signer: Trader,
    cid: str,
    price: int,
    qty: int,
    expected: int = -1,
    market: str = SPOT,
    owner: Trader | None = None,
    **over: Any,
) -> dict[str, Any]:
    message = {
        "userId": (owner or signer).address,
        "market": market,
        "clientOrderId": cid,
        "price": price,
        "qty": qty,
        "expectedFilled": expected,
        "ts": now_ms(),
    } | over
    return {**message, "sig": sign(signer.key, "Amend", message, CHAIN_ID, VERIFYING_CONTRACT)}


def post(exchange: Exchange, path: str, body: dict[str, Any]) -> httpx.Response:
    with exchange.client() as client:
        return client.post(path, json=body)


def amend(exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    response = post(exchange, "/v1/orders/amend", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refused(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def place(
    exchange: Exchange,
    trader: Trader,
    side: str,
    price: int,
    qty: int,
    cid: str,
    market: str = SPOT,
    **v2: Any,
) -> dict[str, Any]:
    product = "SPOT" if market == SPOT else "PERP"
    body = trader.order(market, side, price, qty, cid=cid, product=product, **v2)
    response = post(exchange, "/v1/orders?wait=1", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def settled(exchange: Exchange, trader: Trader, asset: str, locked: int) -> bool:
    """True once the account's ``asset`` locked amount is ``locked`` (settlement is async)."""
    return wait_for(lambda: exchange.balance(trader.address, asset)[1] == locked, 10)


def audit_ok(exchange: Exchange) -> dict[str, Any]:
    with exchange.client() as client:
        report = client.get(
            "/v1/admin/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).json()
    return dict(report["invariants"])


def base(qty: int) -> int:
    return money.base_units(MARKETS.markets[SPOT], qty)


def quote_need(price: int, qty: int) -> int:
    return money.spot_buy_reservation(MARKETS.markets[SPOT], price, qty)


def perp_need(qty: int) -> int:
    return derivative_need(MARKETS.markets[PERP], P, qty, qty, P, 0)


def test_amend_down_keeps_priority_and_releases_the_surplus(exchange: Exchange) -> None:
    a, b, c = funded(exchange), funded(exchange), funded(exchange)
    place(exchange, a, "SELL", P, 10, "a1")
    place(exchange, b, "SELL", P, 10, "b1")
    listener = redis.Redis.from_url(exchange.redis_url, decode_responses=True).pubsub()
    listener.subscribe(order_changes_channel(SPOT))
    after = amend(exchange, amend_body(a, "a1", P, 5))
    assert (after["qty"], after["filled"], after["status"]) == (5, 0, "NEW")
    published = [
        u
        for m in iter(lambda: listener.get_message(timeout=1.0), None)
        for u in orders_of(a.address, m)
    ]
    assert [(u["clientOrderId"], u["qty"], u.get("amended")) for u in published] == [
        ("a1", 5, True)
    ]
    listener.close()
    assert exchange.get(f"/v1/markets/{SPOT}/depth")["asks"] == [[P, 15]]
    assert settled(exchange, a, "BTC", base(5))
    place(exchange, c, "BUY", P, 5, "c1")  # the taker meets a1 first: it kept its place
    assert order(exchange, a, "a1")["status"] == "FILLED"
    assert order(exchange, b, "b1")["filled"] == 0
    assert settled(exchange, a, "BTC", 0)
    assert exchange.balance(a.address, "BTC") == (BTC - base(5), 0)
    assert exchange.balance(b.address, "BTC") == (BTC, base(10))
    assert all(check["ok"] for check in audit_ok(exchange).values())


def test_amend_up_loses_priority_and_locks_more(exchange: Exchange) -> None:
    a, b, c = funded(exchange), funded(exchange), funded(exchange)
    place(exchange, a, "SELL", P, 10, "a2")
    place(exchange, b, "SELL", P, 10, "b2")
    after = amend(exchange, amend_body(a, "a2", P, 20))
    assert (after["qty"], after["status"]) == (20, "NEW")
    assert exchange.balance(a.address, "BTC") == (BTC, base(20))  # locked at once, by the gateway
    place(exchange, c, "BUY", P, 10, "c2")  # b2 is now first at the level
    assert order(exchange, b, "b2")["status"] == "FILLED"
    assert order(exchange, a, "a2")["filled"] == 0
    assert settled(exchange, b, "BTC", 0)
    assert exchange.balance(a.address, "BTC") == (BTC, base(20))
    assert exchange.get(f"/v1/markets/{SPOT}/depth")["asks"][0] == [P, 20]


def test_a_crossing_price_trades_as_a_taker_at_the_makers_price(exchange: Exchange) -> None:
    seller, buyer = funded(exchange), funded(exchange)
    place(exchange, seller, "SELL", P + 100, 10, "s1")
    place(exchange, buyer, "BUY", P - 100, 10, "k1")
    assert exchange.balance(buyer.address, "USDC") == (USDC, quote_need(P - 100, 10))
    after = amend(exchange, amend_body(buyer, "k1", P + 200, 10))
    assert (after["price"], after["filled"], after["status"]) == (P + 200, 10, "FILLED")
    trade = exchange.get(f"/v1/markets/{SPOT}/trades")[0]
    assert (trade["price"], trade["qty"], trade["takerSide"]) == (P + 100, 10, "BUY")
    notional = money.notional(MARKETS.markets[SPOT], P + 100, 10)
    taker_fee = money.fee(notional, 5)
    assert settled(exchange, buyer, "USDC", 0)
    assert exchange.balance(buyer.address, "USDC") == (USDC - notional - taker_fee, 0)
    assert exchange.balance(buyer.address, "BTC") == (BTC + base(10), 0)


def test_expected_filled_guard_and_qty_at_or_below_filled(exchange: Exchange) -> None:
    maker, taker = funded(exchange), funded(exchange)
    place(exchange, maker, "SELL", P, 10, "g1")
    place(exchange, taker, "BUY", P, 3, "t1")
    assert settled(exchange, maker, "BTC", base(7))
    response = post(exchange, "/v1/orders/amend", amend_body(maker, "g1", P, 8, expected=0))
    assert refused(response) == (409, "FILLED_CHANGED")
    assert "filled 3" in response.json()["error"]["message"]
    response = post(exchange, "/v1/orders/amend", amend_body(maker, "g1", P, 3))
    assert refused(response) == (409, "QTY_NOT_ABOVE_FILLED")
    assert exchange.balance(maker.address, "BTC") == (BTC - base(3), base(7))
    after = amend(exchange, amend_body(maker, "g1", P, 6, expected=3))
    assert (after["qty"], after["filled"], after["status"]) == (6, 3, "PARTIAL")
    assert settled(exchange, maker, "BTC", base(3))


def test_a_fill_that_overtakes_the_amend_in_the_stream_refuses_it(
    exchange: Exchange, redis_url: str
) -> None:
    """The matcher is down (SIGKILL) while a taker and then an amend guarded on 0 filled
    queue up; restarted, it fills first and refuses the amend: the order is unchanged and the
    raised reservation falls back to exactly what the rest needs."""
    maker, taker = funded(exchange), funded(exchange)
    place(exchange, maker, "SELL", P, 10, "o1")
    exchange.kill("matcher")
    body = taker.order(SPOT, "BUY", P, 4, cid="t4", product="SPOT")
    assert post(exchange, "/v1/orders", body).status_code == 202
    response = post(exchange, "/v1/orders/amend", amend_body(maker, "o1", P, 20, expected=0))
    assert response.status_code == 202  # the matcher did not answer in time
    assert exchange.balance(maker.address, "BTC") == (BTC, base(20))  # both versions covered
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hget(keys.account_order(maker.address.lower(), "o1"), "pa") == "1"
    exchange.start("matcher")
    assert wait_for(lambda: order(exchange, maker, "o1")["filled"] == 4, 10)
    assert order(exchange, maker, "o1")["qty"] == 10
    assert settled(exchange, maker, "BTC", base(6))
    assert client.hget(keys.account_order(maker.address.lower(), "o1"), "pa") == "0"
    assert all(check["ok"] for check in audit_ok(exchange).values())


def test_perp_reservation_follows_amends_and_fills_to_the_unit(
    exchange: Exchange, redis_url: str
) -> None:
    trader, other = funded(exchange), funded(exchange)
    user = trader.address.lower()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    place(exchange, trader, "BUY", P, 10, "p1", market=PERP)
    assert exchange.balance(trader.address, "USDC") == (USDC, perp_need(10))
    amend(exchange, amend_body(trader, "p1", P, 20, market=PERP))
    assert exchange.balance(trader.address, "USDC") == (USDC, perp_need(20))
    assert wait_for(lambda: client.hget(keys.open_quantities(user), f"{PERP}:BUY") == "20", 10)
    place(exchange, other, "SELL", P, 5, "q1", market=PERP)  # p1 fills 5 as the maker
    maker_fee = money.fee(money.notional(MARKETS.markets[PERP], P, 5), 1)
    assert settled(exchange, trader, "USDC", perp_need(15))
    assert exchange.balance(trader.address, "USDC") == (USDC - maker_fee, perp_need(15))
    assert client.hget(keys.open_quantities(user), f"{PERP}:BUY") == "15"
    after = amend(exchange, amend_body(trader, "p1", P, 8, expected=5, market=PERP))
    assert (after["qty"], after["filled"], after["status"]) == (8, 5, "PARTIAL")
    assert settled(exchange, trader, "USDC", perp_need(3))
    assert client.hget(keys.open_quantities(user), f"{PERP}:BUY") == "3"
    assert all(check["ok"] for check in audit_ok(exchange).values())
    cancel = {"userId": trader.address, "market": PERP, "clientOrderId": "p1", "ts": now_ms()}
    cancel["sig"] = sign(trader.key, "Cancel", cancel, CHAIN_ID, VERIFYING_CONTRACT)
    assert post(exchange, "/v1/orders/cancel", cancel).status_code == 200
    assert settled(exchange, trader, "USDC", 0)
    assert exchange.balance(trader.address, "USDC") == (USDC - maker_fee, 0)
    assert client.hget(keys.open_quantities(user), f"{PERP}:BUY") in (None, "0")


def test_post_only_amended_to_cross_is_refused_unchanged(exchange: Exchange) -> None:
    seller, buyer = funded(exchange), funded(exchange)
    place(exchange, seller, "SELL", P + 100, 10, "s2")
    place(exchange, buyer, "BUY", P, 10, "po", timeInForce="POST_ONLY")
    response = post(exchange, "/v1/orders/amend", amend_body(buyer, "po", P + 100, 10))
    assert refused(response) == (409, "POST_ONLY_WOULD_CROSS")
    current = order(exchange, buyer, "po")
    assert (current["price"], current["qty"], current["status"]) == (P, 10, "NEW")
    assert settled(exchange, buyer, "USDC", quote_need(P, 10))


def test_agents_replays_forgeries_and_other_users_orders(exchange: Exchange) -> None:
    owner, trade_agent, cancel_agent, stranger = (
        funded(exchange),
        Trader(),
        Trader(),
        funded(exchange),
    )
    for agent, scope in ((trade_agent, "TRADE"), (cancel_agent, "CANCEL_ONLY")):
        approval = {
            "userId": owner.address, "agent": agent.address, "name": scope.lower(),
            "scope": scope, "markets": "", "expiresAt": 0, "ts": now_ms(),
        }  # fmt: skip
        approval["sig"] = sign(owner.key, "ApproveAgent", approval, CHAIN_ID, VERIFYING_CONTRACT)
        assert post(exchange, "/v1/accounts/agents", approval).status_code == 200
    place(exchange, owner, "SELL", P, 10, "x1")
    place(exchange, stranger, "SELL", P, 10, "x2")
    by_agent = amend_body(trade_agent, "x1", P, 8, owner=owner)
    assert amend(exchange, by_agent)["qty"] == 8
    assert refused(post(exchange, "/v1/orders/amend", by_agent)) == (409, "DUPLICATE")
    cases = [
        (amend_body(cancel_agent, "x1", P, 7, owner=owner), (403, "FORBIDDEN")),
        (amend_body(stranger, "x1", P, 7, owner=owner), (401, "INVALID_SIGNATURE")),
        ({**amend_body(owner, "x1", P, 7), "qty": 6}, (401, "INVALID_SIGNATURE")),
        (amend_body(owner, "x2", P, 7), (404, "NOT_FOUND")),  # the stranger's cid
        (amend_body(owner, "x1", P, 7, expected=-2), (400, "INVALID_QTY")),
        (amend_body(owner, "x1", 0, 7), (400, "INVALID_PRICE")),
        (amend_body(owner, "x1", P, 0), (400, "INVALID_QTY")),
        (amend_body(owner, "x1", P, 7, market="NOPE-USDC"), (400, "UNKNOWN_MARKET")),
        (amend_body(owner, "x1", P, 7, ts=now_ms() - 3_600_000), (400, "STALE_TS")),
        ({**amend_body(owner, "x1", P, 7), "expectedFilled": "lots"}, (400, "INVALID_REQUEST")),
    ]
    for body, expected in cases:
        assert refused(post(exchange, "/v1/orders/amend", body)) == expected, body
    assert (order(exchange, owner, "x1")["qty"], order(exchange, stranger, "x2")["qty"]) == (8, 10)
    assert settled(exchange, owner, "BTC", base(8))
    assert exchange.balance(stranger.address, "BTC") == (BTC, base(10))
    assert all(check["ok"] for check in audit_ok(exchange).values())


def test_amend_on_the_outbox_path_of_a_cluster(redis_url: str) -> None:
    """DEX_ORDER_OUTBOX=1: the stream is treated as another slot, as on Redis Cluster: the
    account script raises the reservation, then the gateway XADDs the amend."""
    with Exchange(redis_url, DEX_ORDER_OUTBOX="1") as exchange:
        exchange.start("gateway", "matcher", "settler")
        a, c = funded(exchange), funded(exchange)
        place(exchange, a, "BUY", P, 10, "o1")
        after = amend(exchange, amend_body(a, "o1", P + 10, 12))
        assert (after["price"], after["qty"], after["status"]) == (P + 10, 12, "NEW")
        assert settled(exchange, a, "USDC", quote_need(P + 10, 12))
        place(exchange, c, "SELL", P + 10, 12, "o2")
        assert order(exchange, a, "o1")["status"] == "FILLED"
        assert settled(exchange, a, "USDC", 0)
        notional = money.notional(MARKETS.markets[SPOT], P + 10, 12)
        maker_fee = money.fee(notional, 1)
        assert exchange.balance(a.address, "USDC") == (USDC - notional - maker_fee, 0)


def test_a_batch_item_is_admitted_on_the_batch_signature(redis_url: str) -> None:
    """verify_batch_item + admit_amend, as a signed batch calls them: the item's fields are
    checked as an Amend's, no signature of its own is asked for, and each admission is one."""
    trader = Trader()
    with gateway_client(redis_url) as client, ReplyingMatcher(redis_url, [SPOT]):
        gateway = client.app.state.gateway  # type: ignore[attr-defined]
        deposit = {"userId": trader.address, "asset": "BTC", "amount": BTC}
        assert client.post("/v1/admin/deposits", json=deposit, headers=ADMIN).status_code == 200
        body = trader.order(SPOT, "SELL", P, 10, cid="i1")
        assert client.post("/v1/orders", json=body).status_code == 202
        item = {"userId": trader.address, "market": SPOT, "clientOrderId": "i1", "price": P,
                "qty": 12, "expectedFilled": -1, "ts": now_ms()}  # fmt: skip
        portal = client.portal  # type: ignore[attr-defined]
        verified = portal.call(amends.verify_batch_item, gateway, item)
        assert verified.digest is None
        status, after = portal.call(amends.admit_amend, gateway, verified)
        assert (status, after["qty"]) == (200, 12)
        status, after = portal.call(amends.admit_amend, gateway, verified)  # a second item
        assert (status, after["qty"]) == (200, 12)
        with pytest.raises(ApiError) as refusal:
            portal.call(amends.verify_batch_item, gateway, {**item, "qty": 0})
        assert refusal.value.code == "INVALID_QTY"
        with pytest.raises(ApiError) as refusal:
            portal.call(amends.verify_batch_item, gateway, {**item, "sig": "0x"})
        assert refusal.value.code == "INVALID_REQUEST"
        assert exchange_locked(redis_url, trader) == money.base_units(MARKETS.markets[SPOT], 12)


def exchange_locked(redis_url: str, trader: Trader) -> int:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return int(client.hget(keys.balances(trader.address.lower()), "BTC:l") or 0)


def test_many_amends_at_once_end_with_the_last_ones_terms(
    exchange: Exchange, redis_url: str
) -> None:
    """Twelve amends of one order in flight together: each holds the reservation at least at
    its own version's need while pending; once all are settled it is exactly what the order's
    final terms need, and nothing is left pending."""
    trader = funded(exchange)
    place(exchange, trader, "BUY", P, 10, "m1")
    bodies = [amend_body(trader, "m1", P - 10 * i, 5 + i) for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda b: post(exchange, "/v1/orders/amend", b), bodies))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    final = order(exchange, trader, "m1")
    assert final["status"] == "NEW"
    assert (final["price"], final["qty"]) in {(P - 10 * i, 5 + i) for i in range(12)}
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    record_key = keys.account_order(trader.address.lower(), "m1")
    # the reservation may equal the final need while amends are still pending (when the final
    # version needs the most): wait for the settler to have applied every amend event first
    assert wait_for(lambda: client.hget(record_key, "pa") == "0", 30)
    assert settled(exchange, trader, "USDC", quote_need(final["price"], final["qty"]))
    record = client.hgetall(record_key)
    assert record["pa"] == "0" and not [f for f in record if f.startswith("amd:")]
    assert orjson.loads(record["cmd"])["qty"] == final["qty"]
    assert all(check["ok"] for check in audit_ok(exchange).values())
