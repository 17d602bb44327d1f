"""Signed batches through the real gateway, matcher and settler on a real Redis (docs/api.md
"Signed batches").

One signature over up to 50 actions of one account: an atomic batch with one refused action
changes nothing (balances, records, cids, streams, its signature), a batch that is not atomic
applies exactly the actions that pass, each answering for itself in order, and the places of
one market reach its stream, and the book, in the batch's order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

SPOT, ETH = "BTC-USDC", "ETH-USDC"
PRICE, QTY = 3_000_000, 1_000
# A buy of QTY at PRICE locks its notional 3,000,000,000 USDC units + the 5 bp taker fee.
BUY_LOCK = 3_000_000_000 + 1_500_000
# ETH-USDC at 300,000 for 1,000: notional 300,000,000 + fee 150,000.
ETH_LOCK = 300_000_000 + 150_000
BLANK = {
    "side": "",
    "type": "",
    "price": 0,
    "qty": 0,
    "timeInForce": "",
    "reduceOnly": False,
    "expiresAt": 0,
    "expectedFilled": 0,
}


def place(cid: str, market: str = SPOT, side: str = "BUY", **fields: Any) -> dict[str, Any]:
    action = {
        "kind": "PLACE",
        "market": market,
        "clientOrderId": cid,
        "side": side,
        "type": "LIMIT",
        "price": PRICE if market == SPOT else 300_000,
        "qty": QTY,
        "timeInForce": "GTC",
        "reduceOnly": False,
        "expiresAt": 0,
        "expectedFilled": 0,
    }
    return action | fields


def cancel(cid: str, market: str = SPOT) -> dict[str, Any]:
    return {"kind": "CANCEL", "market": market, "clientOrderId": cid, **BLANK}


def batch(
    signer: Trader,
    actions: list[dict[str, Any]],
    atomic: bool = False,
    owner: Trader | None = None,
    ts: int | None = None,
) -> dict[str, Any]:
    """A signed Batch body for ``owner``'s account (the signer's own by default)."""
    message = {
        "userId": (owner or signer).address,
        "atomic": atomic,
        "actions": actions,
        "ts": ts or int(time.time() * 1000),
    }
    return {**message, "sig": sign(signer.key, "Batch", message, CHAIN_ID, VERIFYING_CONTRACT)}


def post(exchange: Exchange, body: Any, path: str = "/v1/orders/batch") -> httpx.Response:
    with exchange.client() as client:
        return client.post(path, json=body)


def account_state(r: redis.Redis, user: str) -> dict[str, Any]:
    """Every key of the account's slot with its value (but the rate limit's bucket, which any
    request spends, refused or not), and the market streams' lengths."""
    state: dict[str, Any] = {}
    for key in r.scan_iter(f"dex:{{{user}}}:*"):
        if key == keys.rate_limit_user(user):
            continue
        kind = r.type(key)
        if kind == "hash":
            state[key] = r.hgetall(key)
        elif kind == "zset":
            state[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = r.smembers(key)
        else:
            state[key] = (kind, r.dump(key))
    for market in (SPOT, ETH):
        state[market] = r.xlen(keys.market_in(market))
    return state


def settled_state(r: redis.Redis, user: str) -> dict[str, Any]:
    """The account's state once the matcher and settler have left it alone for a moment."""
    last = account_state(r, user)
    while True:
        time.sleep(0.3)
        now = account_state(r, user)
        if now == last:
            return now
        last = now


def stream_cids(r: redis.Redis, market: str) -> list[tuple[str, str]]:
    return [
        (c["op"], c["cid"])
        for c in (orjson.loads(f["c"]) for _, f in r.xrange(keys.market_in(market)))
    ]


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def test_a_batch_that_is_not_atomic_applies_exactly_the_good_actions(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 7_000_000_000)
    resting = trader.order(SPOT, "BUY", PRICE - 1, QTY, cid="old")
    assert post(exchange, resting, "/v1/orders?wait=1").json()["status"] == "NEW"
    total, old_lock = exchange.balance(user, "USDC")
    assert (total, old_lock) == (7_000_000_000, 2_999_999_000 + 1_500_000)  # fee rounded up
    actions = [
        place("a"),  # 0: accepted
        place("b", price=0),  # 1: a LIMIT at price 0: 400 INVALID_PRICE
        place("c", market=ETH),  # 2: accepted, in another market
        place("d"),  # 3: more than the balance left: 422 INSUFFICIENT_BALANCE
        cancel("nope"),  # 4: no such order: 404
        cancel("old"),  # 5: accepted
        place("a", market=ETH),  # 6: a clientOrderId used by action 0: 409 DUPLICATE
        {**place("e"), "kind": "SWAP"},  # 7: 400 INVALID_REQUEST
    ]
    response = post(exchange, batch(trader, actions))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["atomic"] is False
    results = answer["results"]
    assert [(x["status"], x.get("error", {}).get("code")) for x in results] == [
        (202, None),
        (400, "INVALID_PRICE"),
        (202, None),
        (422, "INSUFFICIENT_BALANCE"),
        (404, "NOT_FOUND"),
        (202, None),
        (409, "DUPLICATE"),
        (400, "INVALID_REQUEST"),
    ]
    assert results[0]["order"] == {"clientOrderId": "a", "status": "ACCEPTED"}
    assert results[5]["order"]["clientOrderId"] == "old"
    # The stream holds exactly the good actions, in the batch's order.
    assert stream_cids(r, SPOT) == [("order", "old"), ("order", "a"), ("cancel", "old")]
    assert stream_cids(r, ETH) == [("order", "c")]
    assert wait_for(lambda: exchange.get(f"/v1/orders/{user}/old")["status"] == "CXL", 30)
    assert exchange.get(f"/v1/orders/{user}/a")["status"] == "NEW"
    assert exchange.get(f"/v1/orders/{user}/c")["status"] == "NEW"
    for cid in ("b", "d", "e"):
        with exchange.client() as client:
            assert client.get(f"/v1/orders/{user}/{cid}").status_code == 404
    # To the unit: a and c locked, old released.
    assert wait_for(
        lambda: exchange.balance(user, "USDC") == (7_000_000_000, BUY_LOCK + ETH_LOCK), 30
    )
    assert r.hgetall(keys.reservations(user)) == {"a": str(BUY_LOCK), "c": str(ETH_LOCK)}


def test_an_atomic_batch_with_one_bad_action_changes_nothing(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    exchange.deposit(user, "USDC", 7_000_000_000)
    resting = trader.order(SPOT, "BUY", PRICE - 1, QTY, cid="old")
    assert post(exchange, resting, "/v1/orders?wait=1").json()["status"] == "NEW"
    before = settled_state(r, user)
    # Refused by the account script at action 3, after 0-2 were written and then undone.
    body = batch(
        trader,
        [place("a"), place("c", market=ETH), cancel("old"), place("d"), place("f")],
        atomic=True,
    )
    response = post(exchange, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["index"]) == ("INSUFFICIENT_BALANCE", 3)
    assert error["message"].startswith("action 3 (PLACE): ")
    assert account_state(r, user) == before
    # Refused by its own checks (a LIMIT at price 0) before anything reached the account.
    bad = batch(trader, [place("a"), place("b", price=0), place("c")], atomic=True)
    response = post(exchange, bad)
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["index"]) == (
        "INVALID_PRICE",
        1,
    )
    # A duplicate clientOrderId inside the batch.
    twice = batch(trader, [place("a"), place("x", market=ETH), place("a")], atomic=True)
    response = post(exchange, twice)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["index"] == 2
    assert account_state(r, user) == before
    assert exchange.get(f"/v1/orders/{user}/old")["status"] == "NEW"
    assert exchange.balance(user, "USDC") == (7_000_000_000, 2_999_999_000 + 1_500_000)
    # Not even the signature was used up: with the funds there, the same batch goes through.
    exchange.deposit(user, "USDC", 6_000_000_000)
    response = post(exchange, body)
    assert response.status_code == 200, response.text
    assert [x["status"] for x in response.json()["results"]] == [202] * 5
    assert stream_cids(r, SPOT) == [
        ("order", "old"),
        ("order", "a"),
        ("cancel", "old"),
        ("order", "d"),
        ("order", "f"),
    ]
    assert wait_for(
        lambda: exchange.balance(user, "USDC") == (13_000_000_000, 3 * BUY_LOCK + ETH_LOCK), 30
    )
    # ...and once only.
    response = post(exchange, body)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "DUPLICATE")


def test_places_of_one_market_keep_the_batch_order_in_the_book(
    exchange: Exchange, r: redis.Redis
) -> None:
    maker, taker = Trader(), Trader()
    exchange.deposit(maker.address, "BTC", 10 * QTY * 10**4)
    exchange.deposit(taker.address, "USDC", 10_000_000_000)
    cids = [f"s{i}" for i in range(5)]
    actions = [place(cid, side="SELL") for cid in cids]
    response = post(exchange, batch(maker, actions, atomic=True))
    assert response.status_code == 200, response.text
    assert stream_cids(r, SPOT) == [("order", cid) for cid in cids]
    # A buy of twice QTY at the same price takes the first two, in the batch's order.
    buy = taker.order(SPOT, "BUY", PRICE, 2 * QTY)
    assert post(exchange, buy, "/v1/orders?wait=1").json()["status"] == "FILLED"
    statuses = [exchange.get(f"/v1/orders/{maker.address}/{cid}")["status"] for cid in cids]
    assert statuses == ["FILLED", "FILLED", "NEW", "NEW", "NEW"]


def test_agents_sign_batches_within_their_scope_and_markets(
    exchange: Exchange, r: redis.Redis
) -> None:
    owner, trader_agent, cancel_agent = Trader(), Trader(), Trader()
    user = owner.address.lower()
    exchange.deposit(user, "USDC", 10_000_000_000)
    for agent, scope, markets in ((trader_agent, "TRADE", SPOT), (cancel_agent, "CANCEL_ONLY", "")):
        message = {
            "userId": owner.address,
            "agent": agent.address,
            "name": scope.lower(),
            "scope": scope,
            "markets": markets,
            "expiresAt": 0,
            "ts": int(time.time() * 1000),
        }
        sig = sign(owner.key, "ApproveAgent", message, CHAIN_ID, VERIFYING_CONTRACT)
        assert post(exchange, {**message, "sig": sig}, "/v1/accounts/agents").status_code == 200
    # A TRADE agent places for its owner in its market, never in another one.
    response = post(exchange, batch(trader_agent, [place("a"), place("b")], owner=owner))
    assert response.status_code == 200, response.text
    assert [x["status"] for x in response.json()["results"]] == [202, 202]
    elsewhere = batch(trader_agent, [place("c"), place("d", market=ETH)], owner=owner)
    response = post(exchange, elsewhere)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "FORBIDDEN")
    # A CANCEL_ONLY agent cancels in a batch, but a batch with a place is beyond it.
    response = post(exchange, batch(cancel_agent, [place("e"), cancel("a")], owner=owner))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "FORBIDDEN")
    response = post(exchange, batch(cancel_agent, [cancel("a"), cancel("b")], owner=owner))
    assert [x["status"] for x in response.json()["results"]] == [202, 202]
    assert wait_for(lambda: exchange.balance(user, "USDC") == (10_000_000_000, 0), 30)
    commands = [orjson.loads(f["c"]) for _, f in r.xrange(keys.market_in(SPOT))]
    assert [(c["op"], c["cid"], c.get("agent")) for c in commands] == [
        ("order", "a", trader_agent.address.lower()),
        ("order", "b", trader_agent.address.lower()),
        ("cancel", "a", None),
        ("cancel", "b", None),
    ]
    assert r.hlen(keys.account_cids(user)) == 2


def test_a_batch_stranded_by_a_killed_gateway_is_delivered_once_by_the_sweeper(
    redis_url: str, r: redis.Redis
) -> None:
    """The outbox path (a cluster's): the streams refuse the batch's XADDs (a string where
    the stream should be), the gateway is SIGKILLed; a fresh gateway's sweeper delivers each
    accepted place to the real matcher exactly once, each reservation locked once."""
    with Exchange(redis_url, DEX_ORDER_OUTBOX="1") as exchange:
        trader = Trader()
        user = trader.address.lower()
        exchange.start("gateway")
        exchange.deposit(user, "USDC", 7_000_000_000)
        r.set(keys.market_in(SPOT), "not a stream")
        response = post(exchange, batch(trader, [place("a"), place("b"), place("c")]))
        assert response.status_code == 200, response.text
        assert [x["status"] for x in response.json()["results"]] == [202, 202, 422]
        assert sorted(r.zrange(keys.outbox(user), 0, -1)) == ["a", "b"]
        exchange.kill("gateway")

        r.delete(keys.market_in(SPOT))
        exchange.start("matcher", "gateway")
        for cid in ("a", "b"):
            order_key = keys.market_order(SPOT, user, cid)
            assert wait_for(lambda k=order_key: r.hget(k, "status") == "NEW", 60), exchange.log(
                "gateway"
            )[-3000:]
        assert wait_for(lambda: r.zcard(keys.outbox(user)) == 0, 30)
        assert sorted(cid for _, cid in stream_cids(r, SPOT)) == ["a", "b"]
        assert exchange.balance(user, "USDC") == (7_000_000_000, 2 * BUY_LOCK)
        assert r.hget(keys.market_state(SPOT), "seq") == "2"
