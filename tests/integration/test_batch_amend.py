"""AMEND actions of signed batches through the real gateway, matcher and settler on a real
Redis (docs/api.md "Signed batches", "Amend").

An AMEND in a batch is judged by the Amend's own checks and admitted by the amend's own
account code inside the batch's one script: an atomic batch whose AMEND is refused changes
nothing (balances, reservations, pending counts, streams), one that is not atomic applies
exactly the AMENDs that pass; a lower qty keeps the order's place in the queue; an order a
PLACE of the same batch placed can be amended after it; every reservation ends to the unit at
what the order's terms need, and the auditor finds nothing wrong.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from support.exchange import Exchange
from support.gateway import ADMIN, error_of, gateway_client
from support.gateway import balance as cluster_balance
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServerUnavailable, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from test_amend import audit_ok, perp_need
from test_batch import (
    BLANK,
    BUY_LOCK,
    ETH,
    PRICE,
    QTY,
    SPOT,
    account_state,
    batch,
    cancel,
    place,
    post,
    settled_state,
    stream_cids,
)

from common import keys, money
from common.eip712 import sign
from common.markets import load_markets
from common.redis_client import connect
from common.settings import DEFAULT_MARKETS_FILE, DexSettings

pytestmark = pytest.mark.integration

MARKETS = load_markets(DEFAULT_MARKETS_FILE)
ETH_PRICE = 300_000
PERP, P = "BTC-PERP", 3_000_000  # the PERP's index, so its mark
USDC = 10**12


def amend(
    cid: str, price: int, qty: int, expected: int = -1, market: str = SPOT, **fields: Any
) -> dict[str, Any]:
    action = {"kind": "AMEND", "market": market, "clientOrderId": cid, **BLANK}
    return action | {"price": price, "qty": qty, "expectedFilled": expected} | fields


def need(price: int, qty: int, market: str = SPOT) -> int:
    """What a spot buy of ``qty`` at ``price`` locks: notional + taker fee, rounded up."""
    return money.spot_buy_reservation(MARKETS.markets[market], price, qty)


def rest(exchange: Exchange, trader: Trader, cid: str, price: int, market: str = SPOT) -> None:
    body = trader.order(market, "BUY", price, QTY, cid=cid)
    assert post(exchange, body, "/v1/orders?wait=1").json()["status"] == "NEW"


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def statuses(response: Any) -> list[tuple[int, str | None]]:
    assert response.status_code == 200, response.text
    return [(x["status"], x.get("error", {}).get("code")) for x in response.json()["results"]]


def audit_clean(exchange: Exchange) -> None:
    """The auditor finds nothing wrong once the settler has caught up with the book."""

    def failing() -> list[str]:
        return [name for name, check in audit_ok(exchange).items() if not check["ok"]]

    wait_for(lambda: not failing(), 10)
    report = audit_ok(exchange)
    assert [name for name, check in report.items() if not check["ok"]] == [], report


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def test_an_atomic_batch_whose_amend_is_refused_changes_nothing(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 10_000_000_000)
    rest(exchange, trader, "old", PRICE - 1)
    before = settled_state(r, user)
    # The AMEND (up to three times the qty) is more than the balance left after the PLACE.
    up = batch(trader, [place("a"), amend("old", PRICE - 1, 3 * QTY)], atomic=True)
    response = post(exchange, up)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["index"]) == ("INSUFFICIENT_BALANCE", 1)
    assert error["message"].startswith("action 1 (AMEND): ")
    assert account_state(r, user) == before
    # The AMEND passes (its raise locked, its pending count and command recorded), then a
    # PLACE after it is refused: the script undoes the AMEND too.
    body = batch(trader, [amend("old", PRICE - 1, 2 * QTY), place("a"), place("d")], atomic=True)
    response = post(exchange, body)
    assert response.status_code == 422, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["index"]) == (
        "INSUFFICIENT_BALANCE",
        2,
    )
    assert account_state(r, user) == before
    # Refused by the AMEND's own checks: an unknown order, another market, a guard.
    for bad, code in (
        (amend("nope", PRICE, QTY), "NOT_FOUND"),
        (amend("old", ETH_PRICE, QTY, market=ETH), "NOT_FOUND"),
        (amend("old", PRICE, QTY, expected=3), "FILLED_CHANGED"),
        (amend("old", PRICE, QTY, side="BUY"), "INVALID_REQUEST"),
        (amend("old", 0, QTY), "INVALID_PRICE"),
    ):
        response = post(exchange, batch(trader, [place("a"), bad], atomic=True))
        assert response.status_code != 200, response.text
        assert (response.json()["error"]["code"], response.json()["error"]["index"]) == (code, 1)
    assert account_state(r, user) == before
    assert r.hget(keys.account_order(user, "old"), "pa") in (None, "0")
    # With the funds there the same batch goes through, in the batch's order, once.
    exchange.deposit(user, "USDC", 6_000_000_000)
    response = post(exchange, body)
    assert statuses(response) == [(202, None)] * 3
    assert response.json()["results"][0]["order"]["clientOrderId"] == "old"
    assert stream_cids(r, SPOT) == [
        ("order", "old"),
        ("amend", "old"),
        ("order", "a"),
        ("order", "d"),
    ]
    locked = need(PRICE - 1, 2 * QTY) + 2 * BUY_LOCK
    assert wait_for(lambda: exchange.balance(user, "USDC") == (16_000_000_000, locked), 30)
    assert r.hgetall(keys.reservations(user)) == {
        "old": str(need(PRICE - 1, 2 * QTY)),
        "a": str(BUY_LOCK),
        "d": str(BUY_LOCK),
    }
    assert order(exchange, trader, "old")["qty"] == 2 * QTY
    audit_clean(exchange)
    response = post(exchange, body)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "DUPLICATE")


def test_a_batch_that_is_not_atomic_applies_exactly_the_good_amend(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 10_000_000_000)
    rest(exchange, trader, "o1", PRICE - 1)
    rest(exchange, trader, "o2", PRICE - 2)
    actions = [
        amend("o1", PRICE - 1, QTY // 2),  # 0: down, same price: accepted
        amend("o2", PRICE - 2, 10 * QTY),  # 1: 422 INSUFFICIENT_BALANCE
        amend("nope", PRICE, QTY),  # 2: 404 NOT_FOUND
        amend("o2", PRICE - 2, QTY, side="BUY"),  # 3: 400 INVALID_REQUEST (side not blank)
        amend("o2", PRICE - 2, QTY, expected=5),  # 4: 409 FILLED_CHANGED
        amend("o2", PRICE - 2, 0),  # 5: 400 INVALID_QTY
    ]
    response = post(exchange, batch(trader, actions))
    assert statuses(response) == [
        (202, None),
        (422, "INSUFFICIENT_BALANCE"),
        (404, "NOT_FOUND"),
        (400, "INVALID_REQUEST"),
        (409, "FILLED_CHANGED"),
        (400, "INVALID_QTY"),
    ]
    first = response.json()["results"][0]["order"]
    assert (first["clientOrderId"], first["qty"], first["status"]) == ("o1", QTY, "NEW")
    assert stream_cids(r, SPOT) == [("order", "o1"), ("order", "o2"), ("amend", "o1")]
    assert wait_for(lambda: order(exchange, trader, "o1")["qty"] == QTY // 2, 30)
    locked = need(PRICE - 1, QTY // 2) + need(PRICE - 2, QTY)
    assert wait_for(lambda: exchange.balance(user, "USDC") == (10_000_000_000, locked), 30)
    assert r.hgetall(keys.reservations(user)) == {
        "o1": str(need(PRICE - 1, QTY // 2)),
        "o2": str(need(PRICE - 2, QTY)),
    }
    assert order(exchange, trader, "o2")["qty"] == QTY
    assert r.hget(keys.account_order(user, "o2"), "pa") in (None, "0")
    audit_clean(exchange)


def test_an_amend_down_in_a_batch_keeps_its_place_in_the_queue(exchange: Exchange) -> None:
    first, second, taker = Trader(), Trader(), Trader()
    for maker in (first, second):
        exchange.deposit(maker.address, "BTC", 10 * QTY * 10**4)
    exchange.deposit(taker.address, "USDC", 10_000_000_000)
    for maker, cid in ((first, "s1"), (second, "s2")):
        body = maker.order(SPOT, "SELL", PRICE, QTY, cid=cid)
        assert post(exchange, body, "/v1/orders?wait=1").json()["status"] == "NEW"
    response = post(exchange, batch(first, [amend("s1", PRICE, QTY // 2)]))
    assert statuses(response) == [(202, None)]
    assert wait_for(lambda: order(exchange, first, "s1")["qty"] == QTY // 2, 30)
    # s1, lowered in place, is still first at its price: a buy of its rest takes it alone.
    buy = taker.order(SPOT, "BUY", PRICE, QTY // 2)
    assert post(exchange, buy, "/v1/orders?wait=1").json()["status"] == "FILLED"
    assert order(exchange, first, "s1")["status"] == "FILLED"
    assert order(exchange, second, "s2")["status"] == "NEW"
    buy = taker.order(SPOT, "BUY", PRICE, QTY)
    assert post(exchange, buy, "/v1/orders?wait=1").json()["status"] == "FILLED"
    assert order(exchange, second, "s2")["status"] == "FILLED"
    assert wait_for(lambda: exchange.balance(first.address, "BTC")[1] == 0, 30)
    assert exchange.balance(first.address, "BTC")[0] == 10 * QTY * 10**4 - QTY // 2 * 10**4
    audit_clean(exchange)


def test_a_mixed_batch_across_two_markets_and_an_amend_of_its_own_place(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 20_000_000_000)
    rest(exchange, trader, "x", PRICE - 1)
    rest(exchange, trader, "y", ETH_PRICE - 1, market=ETH)
    actions = [
        place("p1"),
        amend("x", PRICE - 2, QTY),  # a new price: to the back of its new level
        cancel("y", ETH),
        place("p2", market=ETH),
        amend("p2", ETH_PRICE, QTY // 2, expected=0, market=ETH),  # the order placed above
    ]
    response = post(exchange, batch(trader, actions))
    assert statuses(response) == [(202, None)] * 5
    assert response.json()["results"][4]["order"] == {"clientOrderId": "p2", "status": "ACCEPTED"}
    assert stream_cids(r, SPOT) == [("order", "x"), ("order", "p1"), ("amend", "x")]
    assert stream_cids(r, ETH) == [
        ("order", "y"),
        ("cancel", "y"),
        ("order", "p2"),
        ("amend", "p2"),
    ]
    assert wait_for(lambda: exchange.get(f"/v1/orders/{user}/y")["status"] == "CXL", 30)
    assert wait_for(lambda: order(exchange, trader, "p2")["qty"] == QTY // 2, 30)
    assert order(exchange, trader, "x")["price"] == PRICE - 2
    locked = BUY_LOCK + need(PRICE - 2, QTY) + need(ETH_PRICE, QTY // 2, ETH)
    assert wait_for(lambda: exchange.balance(user, "USDC") == (20_000_000_000, locked), 30)
    assert r.hgetall(keys.reservations(user)) == {
        "p1": str(BUY_LOCK),
        "x": str(need(PRICE - 2, QTY)),
        "p2": str(need(ETH_PRICE, QTY // 2, ETH)),
    }
    audit_clean(exchange)


def test_an_amend_of_a_place_of_the_same_batch_that_was_refused_is_not_found(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 4_000_000_000)
    actions = [
        place("a"),
        place("b"),  # 422: the balance holds one
        amend("b", PRICE, QTY // 2),  # its order was never placed
        place("c", price=0),  # 400: its own checks
        amend("c", PRICE, QTY // 2),
        amend("a", PRICE, QTY // 2),  # the good one's
    ]
    response = post(exchange, batch(trader, actions))
    assert statuses(response) == [
        (202, None),
        (422, "INSUFFICIENT_BALANCE"),
        (404, "NOT_FOUND"),
        (400, "INVALID_PRICE"),
        (404, "NOT_FOUND"),
        (202, None),
    ]
    assert stream_cids(r, SPOT) == [("order", "a"), ("amend", "a")]
    assert wait_for(lambda: order(exchange, trader, "a")["qty"] == QTY // 2, 30)
    locked = need(PRICE, QTY // 2)
    assert wait_for(lambda: exchange.balance(user, "USDC") == (4_000_000_000, locked), 30)
    # A PLACE of an id already accepted is DUPLICATE; the AMEND after it amends that order.
    response = post(exchange, batch(trader, [place("a", side="SELL"), amend("a", PRICE, QTY // 4)]))
    assert statuses(response) == [(409, "DUPLICATE"), (202, None)]
    assert response.json()["results"][1]["order"]["qty"] == QTY // 2
    assert wait_for(lambda: order(exchange, trader, "a")["qty"] == QTY // 4, 30)
    locked = need(PRICE, QTY // 4)
    assert wait_for(lambda: exchange.balance(user, "USDC") == (4_000_000_000, locked), 30)
    # Atomic: the AMEND of a PLACE refused by the script refuses the batch, at the PLACE.
    exchange.deposit(user, "USDC", 2_500_000_000)
    before = settled_state(r, user)
    body = batch(trader, [place("e"), place("f"), amend("f", PRICE, QTY // 2)], atomic=True)
    response = post(exchange, body)
    assert (response.status_code, response.json()["error"]["index"]) == (422, 1)
    assert account_state(r, user) == before
    audit_clean(exchange)


def test_agents_amend_in_batches_by_their_scope(exchange: Exchange, r: redis.Redis) -> None:
    owner, trader_agent, cancel_agent = Trader(), Trader(), Trader()
    user = owner.address.lower()
    exchange.deposit(user, "USDC", 10_000_000_000)
    rest(exchange, owner, "o", PRICE - 1)
    for agent, scope in ((trader_agent, "TRADE"), (cancel_agent, "CANCEL_ONLY")):
        message = {
            "userId": owner.address,
            "agent": agent.address,
            "name": scope.lower(),
            "scope": scope,
            "markets": "",
            "expiresAt": 0,
            "ts": int(time.time() * 1000),
        }
        sig = sign(owner.key, "ApproveAgent", message, CHAIN_ID, VERIFYING_CONTRACT)
        assert post(exchange, {**message, "sig": sig}, "/v1/accounts/agents").status_code == 200
    before = settled_state(r, user)
    response = post(exchange, batch(cancel_agent, [amend("o", PRICE - 1, QTY // 2)], owner=owner))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert account_state(r, user) == before
    response = post(exchange, batch(trader_agent, [amend("o", PRICE - 1, QTY // 2)], owner=owner))
    assert statuses(response) == [(202, None)]
    assert wait_for(lambda: order(exchange, owner, "o")["qty"] == QTY // 2, 30)
    assert wait_for(
        lambda: exchange.balance(user, "USDC") == (10_000_000_000, need(PRICE - 1, QTY // 2)), 30
    )
    audit_clean(exchange)


def test_amends_in_a_batch_on_the_outbox_path(redis_url: str, r: redis.Redis) -> None:
    """A cluster's path: the script leaves the commands to the gateway, which XADDs them in
    the batch's order (an AMEND after the PLACE it amends)."""
    with Exchange(redis_url, DEX_ORDER_OUTBOX="1") as exchange:
        exchange.start("gateway", "matcher", "settler")
        trader = Trader()
        user = trader.address.lower()
        exchange.deposit(user, "USDC", 10_000_000_000)
        rest(exchange, trader, "old", PRICE - 1)
        actions = [place("a"), amend("a", PRICE, QTY // 2), amend("old", PRICE - 1, QTY // 4)]
        assert statuses(post(exchange, batch(trader, actions, atomic=True))) == [(202, None)] * 3
        assert stream_cids(r, SPOT) == [
            ("order", "old"),
            ("order", "a"),
            ("amend", "a"),
            ("amend", "old"),
        ]
        locked = need(PRICE, QTY // 2) + need(PRICE - 1, QTY // 4)
        assert wait_for(lambda: exchange.balance(user, "USDC") == (10_000_000_000, locked), 30)
        assert wait_for(lambda: r.zcard(keys.outbox(user)) == 0, 30)
        assert order(exchange, trader, "a")["qty"] == QTY // 2
        audit_clean(exchange)


def test_perp_places_and_amends_in_one_batch_net_their_margin_to_the_unit(
    exchange: Exchange, r: redis.Redis
) -> None:
    """An AMEND after a PLACE on the same market and side counts that PLACE as open, as it
    would if sent after it (the account script's guard finds what it was judged on)."""
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", USDC)
    body = trader.order(PERP, "BUY", P, 10, cid="p0", product="PERP")
    assert post(exchange, body, "/v1/orders?wait=1").json()["status"] == "NEW"
    actions = [
        place("p1", market=PERP, price=P, qty=10),
        amend("p0", P, 20, market=PERP),
        amend("p1", P, 15, expected=0, market=PERP),
    ]
    assert statuses(post(exchange, batch(trader, actions, atomic=True))) == [(202, None)] * 3
    assert wait_for(lambda: order(exchange, trader, "p1")["qty"] == 15, 30)
    assert wait_for(
        lambda: exchange.balance(user, "USDC") == (USDC, perp_need(20) + perp_need(15)), 30
    )
    assert wait_for(lambda: r.hget(keys.open_quantities(user), f"{PERP}:BUY") == "35", 30)
    actions = [place("p2", market=PERP, price=P, qty=5), amend("p0", P, 5, market=PERP)]
    assert statuses(post(exchange, batch(trader, actions))) == [(202, None)] * 2
    locked = perp_need(5) + perp_need(15) + perp_need(5)
    assert wait_for(lambda: exchange.balance(user, "USDC") == (USDC, locked), 30)
    assert wait_for(lambda: r.hget(keys.open_quantities(user), f"{PERP}:BUY") == "25", 30)
    audit_clean(exchange)


def test_a_batch_amend_lost_with_its_gateway_only_over_reserves_until_the_order_ends(
    redis_url: str, r: redis.Redis
) -> None:
    """The outbox path: the script raised the reservation, the stream refused the XADD (a
    string where it should be) and the gateway is SIGKILLed. The order keeps its terms; the
    raise stays (the auditor accepts it while the amend is pending) until the order ends."""
    with Exchange(redis_url, DEX_ORDER_OUTBOX="1") as exchange:
        exchange.start("gateway", "settler")
        trader = Trader()
        user = trader.address.lower()
        exchange.deposit(user, "USDC", 10_000_000_000)
        response = post(exchange, trader.order(SPOT, "BUY", PRICE, QTY, cid="old"), "/v1/orders")
        assert response.status_code == 202, response.text
        assert wait_for(lambda: r.zcard(keys.outbox(user)) == 0, 30)
        stream = keys.market_in(SPOT)
        r.rename(stream, "parked-stream")
        r.set(stream, "not a stream")
        response = post(exchange, batch(trader, [amend("old", PRICE, 2 * QTY)]))
        assert statuses(response) == [(202, None)]
        exchange.kill("gateway")
        assert r.hget(keys.balances(user), "USDC:l") == str(need(PRICE, 2 * QTY))
        r.delete(stream)
        r.rename("parked-stream", stream)
        exchange.start("matcher", "gateway")
        assert wait_for(lambda: r.hget(keys.market_order(SPOT, user, "old"), "status") == "NEW", 60)
        assert [op for op, _ in stream_cids(r, SPOT)] == ["order"]
        assert order(exchange, trader, "old")["qty"] == QTY
        assert r.hget(keys.account_order(user, "old"), "pa") == "1"
        assert exchange.balance(user, "USDC") == (10_000_000_000, need(PRICE, 2 * QTY))
        audit_clean(exchange)
        assert statuses(post(exchange, batch(trader, [cancel("old")]))) == [(202, None)]
        assert wait_for(lambda: exchange.balance(user, "USDC") == (10_000_000_000, 0), 30)
        assert r.hgetall(keys.reservations(user)) == {}
        audit_clean(exchange)


def test_batch_amends_on_a_redis_cluster() -> None:
    """On a real three-master cluster every key the AMEND's account code touches is in the
    account's slot; its command goes out after the PLACE it amends; an atomic refusal at an
    AMEND leaves its raise undone."""
    cluster = RedisCluster()
    try:
        cluster.start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with gateway_client(cluster.url, redis_cluster=True) as client:
            trader = Trader()
            user = trader.address.lower()
            response = client.post(
                "/v1/admin/deposits",
                json={"userId": user, "asset": "USDC", "amount": 7_000_000_000},
                headers=ADMIN,
            )
            assert response.status_code == 200, response.text
            actions = [place("a"), amend("a", PRICE, QTY // 2), amend("nope", PRICE, QTY)]
            results = client.post("/v1/orders/batch", json=batch(trader, actions)).json()
            assert [x["status"] for x in results["results"]] == [202, 202, 404]
            raised = batch(trader, [amend("a", PRICE, 2 * QTY), place("b")], atomic=True)
            assert error_of(client.post("/v1/orders/batch", json=raised)) == (
                422,
                "INSUFFICIENT_BALANCE",
            )
            assert client.get(f"/v1/accounts/{user}/balances").json() == {
                "USDC": cluster_balance(7_000_000_000, BUY_LOCK)
            }
            direct = connect(DexSettings(redis_url=cluster.url, redis_cluster=True))
            try:
                spot = [
                    (command["op"], command["cid"])
                    for command in (
                        orjson.loads(f["c"]) for _, f in direct.xrange(keys.market_in(SPOT))
                    )
                ]
                assert spot == [("order", "a"), ("amend", "a")]
                assert direct.hget(keys.account_order(user, "a"), "pa") == "1"
                assert wait_for(lambda: direct.zcard(keys.outbox(user)) == 0, 20)
            finally:
                direct.close()
    finally:
        cluster.stop()


def test_amends_of_others_orders_twice_after_a_cancel_and_too_large(
    exchange: Exchange, r: redis.Redis
) -> None:
    """Another account's order is not found under one's own signature; two AMENDs of one order
    end with the last one's terms; an AMEND after a CANCEL of the same order is refused by the
    book, releasing all; an amended notional of 2^53 quanta is 422 LIMIT_EXCEEDED."""
    trader, stranger = Trader(), Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 10_000_000_000)
    exchange.deposit(stranger.address, "USDC", 10_000_000_000)
    rest(exchange, trader, "o1", PRICE - 1)
    rest(exchange, trader, "o2", PRICE - 2)
    mine = settled_state(r, user)
    response = post(exchange, batch(stranger, [amend("o1", PRICE - 1, QTY // 2)]))
    assert statuses(response) == [(404, "NOT_FOUND")]
    assert account_state(r, user) == mine
    huge = batch(trader, [amend("o1", PRICE - 1, QTY // 2), amend("o2", PRICE, 2**52)], atomic=True)
    response = post(exchange, huge)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "LIMIT_EXCEEDED")
    assert response.json()["error"]["index"] == 1
    assert account_state(r, user) == mine
    actions = [
        amend("o1", PRICE - 1, QTY // 2),
        amend("o1", PRICE - 3, QTY // 4),  # the last word: a new price, a smaller qty
        cancel("o2"),
        amend("o2", PRICE - 2, QTY // 2),  # passes here, then finds the order cancelled
    ]
    assert statuses(post(exchange, batch(trader, actions))) == [(202, None)] * 4
    assert stream_cids(r, SPOT)[2:] == [
        ("amend", "o1"),
        ("amend", "o1"),
        ("cancel", "o2"),
        ("amend", "o2"),
    ]
    assert wait_for(lambda: order(exchange, trader, "o2")["status"] == "CXL", 30)
    locked = need(PRICE - 3, QTY // 4)
    assert wait_for(lambda: exchange.balance(user, "USDC") == (10_000_000_000, locked), 30)
    final = order(exchange, trader, "o1")
    assert (final["price"], final["qty"], final["status"]) == (PRICE - 3, QTY // 4, "NEW")
    assert wait_for(lambda: r.hget(keys.account_order(user, "o1"), "pa") == "0", 30)
    assert r.hgetall(keys.reservations(user)) == {"o1": str(locked)}
    audit_clean(exchange)
