"""Cancel-replace (docs/api.md "Cancel-replace") through the real gateway, matcher and settler
on a real Redis: the new order is placed only if the old one was cancelled, in the same
matcher call; when the cancel fails the new order ends REJECTED (REPLACE_FAILED) and its
reservation is released, to the atomic unit. Attackers: forged, replayed, someone else's
order, the same id twice, malformed, an agent beyond its scope."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from support.exchange import Exchange
from support.redis_server import RedisServer, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys, money
from common.eip712 import sign
from common.events import COMMAND_FIELD, events_of
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
MARKET = load_markets(DEFAULT_MARKETS_FILE).markets[SPOT]
PRICE, QTY = 3_000_000, 1_000
DEPOSIT = 20_000_000_000
SETTLED_S = 30


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    """One exchange for the module: each test has its own fresh traders."""
    redis_server.flushall()
    with Exchange(redis_server.url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


@pytest.fixture
def r(exchange: Exchange) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(exchange.redis_url, decode_responses=True)
    yield client
    client.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def lock(price: int = PRICE, qty: int = QTY) -> int:
    """What a resting BTC-USDC buy locks: notional plus the taker fee."""
    return money.spot_buy_reservation(MARKET, price, qty)


def replace_body(
    signer: Trader,
    old: str,
    cid: str,
    *,
    owner: Trader | None = None,
    price: int = PRICE,
    qty: int = QTY,
    side: str = "BUY",
    market: str = SPOT,
    **over: Any,
) -> dict[str, Any]:
    """A CancelReplace for ``owner``'s account (the signer's own by default)."""
    message: dict[str, Any] = {
        "clientOrderId": cid,
        "userId": (owner or signer).address,
        "market": market,
        "side": side,
        "type": "LIMIT",
        "price": price,
        "qty": qty,
        "product": "SPOT" if market == SPOT else "PERP",
        "ts": now_ms(),
        "timeInForce": "GTC",
        "reduceOnly": False,
        "expiresAt": 0,
        "cancelClientOrderId": old,
    }
    message |= over
    return {
        **message,
        "sig": sign(signer.key, "CancelReplace", message, CHAIN_ID, VERIFYING_CONTRACT),
    }


def post(exchange: Exchange, path: str, body: dict[str, Any]) -> httpx.Response:
    with exchange.client() as http:
        return http.post(path, json=body)


def replace(exchange: Exchange, body: dict[str, Any]) -> httpx.Response:
    return post(exchange, "/v1/orders/cancel-replace", body)


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def funded(exchange: Exchange, asset: str = "USDC", amount: int = DEPOSIT) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, asset, amount)
    return trader


def rest(exchange: Exchange, trader: Trader, cid: str, price: int = PRICE, **kw: Any) -> None:
    body = trader.order(SPOT, "BUY", price, QTY, cid=cid, **kw)
    response = post(exchange, "/v1/orders?wait=1", body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "NEW"


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def settled_to(exchange: Exchange, trader: Trader, expected: tuple[int, int]) -> bool:
    return wait_for(lambda: exchange.balance(trader.address, "USDC") == expected, SETTLED_S)


def bids(exchange: Exchange) -> list[list[Any]]:
    return list(exchange.get(f"/v1/markets/{SPOT}/depth")["bids"])


def test_replace_cancels_the_old_order_and_places_the_new_one_to_the_unit(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = funded(exchange)
    rest(exchange, trader, "old", price=PRICE - 7)
    assert exchange.balance(trader.address, "USDC") == (DEPOSIT, lock(PRICE - 7))
    response = replace(exchange, replace_body(trader, "old", "new", price=PRICE - 5, qty=2 * QTY))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"cancelled", "order"}
    old, new = answer["cancelled"], answer["order"]
    assert (old["clientOrderId"], old["status"], old["reason"]) == ("old", "CXL", "REPLACED")
    assert (new["clientOrderId"], new["status"], new["reason"]) == ("new", "NEW", None)
    assert (new["price"], new["qty"], new["timeInForce"]) == (PRICE - 5, 2 * QTY, "GTC")
    assert order(exchange, trader, "old") == old
    # the old reservation is released whole, the new one locked whole
    assert settled_to(exchange, trader, (DEPOSIT, lock(PRICE - 5, 2 * QTY)))
    user = trader.address.lower()
    assert r.hgetall(keys.reservations(user)) == {"new": str(lock(PRICE - 5, 2 * QTY))}
    assert r.zrange(keys.account_open_orders(user, SPOT), 0, -1) == ["new"]
    mine = [level for level in bids(exchange) if int(level[0]) in (PRICE - 7, PRICE - 5)]
    assert [(int(p), int(q)) for p, q in mine] == [(PRICE - 5, 2 * QTY)]
    # one settlement event for the account: the old order's end (the new one rests)
    events = [e for e in exchange_events(r) if e.get("user") == user]
    assert [(e["k"], e["cid"], e["status"], e["reason"]) for e in events] == [
        ("done", "old", "CXL", "REPLACED")
    ]


def exchange_events(r: redis.Redis) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for _, fields in r.xrange(keys.market_events(SPOT)):
        result.extend(dict(e) for e in events_of(fields))
    return result


def test_replace_of_a_finished_order_rejects_the_new_one_and_releases_it_to_the_unit(
    exchange: Exchange,
) -> None:
    trader, seller = funded(exchange), funded(exchange, "BTC", 10 * QTY * 10_000)
    rest(exchange, trader, "filled", price=PRICE + 1)
    sold = post(exchange, "/v1/orders?wait=1", seller.order(SPOT, "SELL", PRICE + 1, QTY))
    assert sold.json()["status"] == "FILLED", sold.text
    assert order(exchange, trader, "filled")["status"] == "FILLED"
    assert wait_for(lambda: exchange.balance(trader.address, "USDC")[1] == 0, SETTLED_S)
    paid = exchange.balance(trader.address, "USDC")
    response = replace(exchange, replace_body(trader, "filled", "after-fill"))
    assert error(response) == (409, "ORDER_CLOSED")
    assert "'filled' was already FILLED" in response.json()["error"]["message"]
    rejected = order(exchange, trader, "after-fill")
    assert (rejected["status"], rejected["reason"], rejected["filled"]) == (
        "REJECTED",
        "REPLACE_FAILED",
        0,
    )
    assert order(exchange, trader, "filled")["status"] == "FILLED"
    # its reservation was locked, then released whole: the account is exactly as before
    assert settled_to(exchange, trader, paid)


def test_replace_of_a_cancelled_or_unknown_order_is_refused_and_the_new_id_is_spent(
    exchange: Exchange,
) -> None:
    trader = funded(exchange)
    rest(exchange, trader, "gone")
    cancel = {"userId": trader.address, "market": SPOT, "clientOrderId": "gone", "ts": now_ms()}
    cancel["sig"] = sign(trader.key, "Cancel", cancel, CHAIN_ID, VERIFYING_CONTRACT)
    assert post(exchange, "/v1/orders/cancel", cancel).status_code == 200
    assert error(replace(exchange, replace_body(trader, "gone", "n1"))) == (409, "ORDER_CLOSED")
    response = replace(exchange, replace_body(trader, "never-placed", "n2"))
    assert error(response) == (404, "NOT_FOUND")
    assert "REPLACE_FAILED" in response.json()["error"]["message"]
    for cid in ("n1", "n2"):
        assert (order(exchange, trader, cid)["status"], order(exchange, trader, cid)["reason"]) == (
            "REJECTED",
            "REPLACE_FAILED",
        )
    assert settled_to(exchange, trader, (DEPOSIT, 0))
    # a clientOrderId is once only, even when its order was rejected
    again = post(exchange, "/v1/orders", trader.order(SPOT, "BUY", PRICE, QTY, cid="n2"))
    assert error(again) == (409, "DUPLICATE")


def test_replaying_a_replace_is_a_duplicate_and_changes_nothing(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, "r-old")
    body = replace_body(trader, "r-old", "r-new", price=PRICE - 1)
    assert replace(exchange, body).status_code == 200
    assert settled_to(exchange, trader, (DEPOSIT, lock(PRICE - 1)))
    for _ in range(3):
        assert error(replace(exchange, body)) == (409, "DUPLICATE")
    assert order(exchange, trader, "r-new")["status"] == "NEW"
    assert order(exchange, trader, "r-old")["reason"] == "REPLACED"
    assert exchange.balance(trader.address, "USDC") == (DEPOSIT, lock(PRICE - 1))


def test_a_resent_replace_command_is_applied_once(exchange: Exchange, r: redis.Redis) -> None:
    """The outbox sweeper may send a command twice: the matcher ignores an order it knows."""
    trader = funded(exchange)
    rest(exchange, trader, "s-old")
    assert replace(exchange, replace_body(trader, "s-old", "s-new")).status_code == 200
    user = trader.address.lower()
    before = len(exchange_events(r))
    command = r.hget(keys.account_order(user, "s-new"), "cmd")  # kept while the order is open
    assert command is not None and '"replaces":"s-old"' in command
    r.xadd(keys.market_in(SPOT), {COMMAND_FIELD: command})
    time.sleep(0.5)
    assert len(exchange_events(r)) == before
    assert order(exchange, trader, "s-new")["status"] == "NEW"
    assert order(exchange, trader, "s-old")["reason"] == "REPLACED"
    assert settled_to(exchange, trader, (DEPOSIT, lock()))


def test_no_one_replaces_another_users_order(exchange: Exchange) -> None:
    victim, attacker = funded(exchange), funded(exchange)
    rest(exchange, victim, "victims")
    # the attacker's own account: the victim's id is looked up under the attacker only
    response = replace(exchange, replace_body(attacker, "victims", "hijack"))
    assert error(response) == (404, "NOT_FOUND")
    assert order(exchange, attacker, "hijack")["reason"] == "REPLACE_FAILED"
    # in the victim's name: the signature is not the victim's
    forged = replace_body(attacker, "victims", "forged", owner=victim)
    assert error(replace(exchange, forged)) == (401, "INVALID_SIGNATURE")
    # a genuine body altered after signing
    genuine = replace_body(victim, "victims", "mine")
    assert error(replace(exchange, {**genuine, "cancelClientOrderId": "other"})) == (
        401,
        "INVALID_SIGNATURE",
    )
    assert order(exchange, victim, "victims")["status"] == "NEW"
    with exchange.client() as http:
        assert http.get(f"/v1/orders/{victim.address}/forged").status_code == 404
    assert settled_to(exchange, victim, (DEPOSIT, lock()))
    assert settled_to(exchange, attacker, (DEPOSIT, 0))


def test_malformed_replaces_are_refused_and_change_nothing(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, "m-old")
    cases = [
        (replace_body(trader, "m-old", "m-old"), 400, "INVALID_ORDER"),  # the same id
        (replace_body(trader, "bad id!", "m1"), 400, "INVALID_ORDER"),
        (replace_body(trader, "", "m2"), 400, "INVALID_ORDER"),
        (replace_body(trader, "x" * 65, "m3"), 400, "INVALID_ORDER"),
        (replace_body(trader, "m-old", "m4", qty=0), 400, "INVALID_QTY"),
        (replace_body(trader, "m-old", "m5", timeInForce="NEVER"), 400, "INVALID_ORDER"),
        (replace_body(trader, "m-old", "m6", ts=now_ms() - 3_600_000), 400, "STALE_TS"),
        (replace_body(trader, "m-old", "m7", market="NOPE-USDC"), 400, "UNKNOWN_MARKET"),
        (
            {k: v for k, v in replace_body(trader, "m-old", "m8").items() if k != "timeInForce"},
            400,
            "INVALID_REQUEST",
        ),
        ({**replace_body(trader, "m-old", "m9"), "extra": 1}, 400, "INVALID_REQUEST"),
        (
            {**replace_body(trader, "m-old", "m10"), "cancelClientOrderId": 7},
            400,
            "INVALID_REQUEST",
        ),
    ]
    for body, status, code in cases:
        assert error(replace(exchange, body)) == (status, code), body
    with exchange.client() as http:
        response = http.post(
            "/v1/orders/cancel-replace",
            content=b"[1]",
            headers={"content-type": "application/json"},
        )
        assert error(response) == (400, "INVALID_REQUEST")
        for n in range(1, 11):
            assert http.get(f"/v1/orders/{trader.address}/m{n}").status_code == 404
    assert order(exchange, trader, "m-old")["status"] == "NEW"
    assert exchange.balance(trader.address, "USDC") == (DEPOSIT, lock())


def test_the_new_order_needs_its_funds_while_the_old_one_is_still_open(
    exchange: Exchange,
) -> None:
    """The new order is reserved before the cancel runs: it is refused when the account can
    not hold both, and then nothing changes (the old order rests on)."""
    trader = funded(exchange, amount=lock() + lock() // 2)
    rest(exchange, trader, "f-old")
    response = replace(exchange, replace_body(trader, "f-old", "f-new", price=PRICE - 1))
    assert error(response) == (422, "INSUFFICIENT_BALANCE")
    assert order(exchange, trader, "f-old")["status"] == "NEW"
    assert exchange.balance(trader.address, "USDC") == (lock() + lock() // 2, lock())
    with exchange.client() as http:
        assert http.get(f"/v1/orders/{trader.address}/f-new").status_code == 404
    # the same id is still free: a smaller replace goes through
    smaller = replace_body(trader, "f-old", "f-new", qty=QTY // 4)
    assert replace(exchange, smaller).status_code == 200
    assert settled_to(exchange, trader, (lock() + lock() // 2, lock(PRICE, QTY // 4)))


def test_an_order_in_another_market_is_not_replaced(exchange: Exchange) -> None:
    trader = funded(exchange)
    perp = trader.order(PERP, "BUY", PRICE, 10, cid="p-old", product="PERP")
    assert post(exchange, "/v1/orders?wait=1", perp).json()["status"] == "NEW"
    assert error(replace(exchange, replace_body(trader, "p-old", "p-new"))) == (404, "NOT_FOUND")
    assert order(exchange, trader, "p-old")["status"] == "NEW"
    assert order(exchange, trader, "p-new")["reason"] == "REPLACE_FAILED"


def test_a_trade_agent_may_replace_and_a_cancel_only_agent_may_not(exchange: Exchange) -> None:
    owner, trade, cancel_only = funded(exchange), Trader(), Trader()
    for agent, scope in ((trade, "TRADE"), (cancel_only, "CANCEL_ONLY")):
        approval = {
            "userId": owner.address, "agent": agent.address, "name": scope.lower(),
            "scope": scope, "markets": SPOT, "expiresAt": 0, "ts": now_ms(),
        }  # fmt: skip
        approval["sig"] = sign(owner.key, "ApproveAgent", approval, CHAIN_ID, VERIFYING_CONTRACT)
        assert post(exchange, "/v1/accounts/agents", approval).status_code == 200
    rest(exchange, owner, "g-old")
    refused = replace(exchange, replace_body(cancel_only, "g-old", "g-1", owner=owner))
    assert error(refused) == (403, "FORBIDDEN")
    assert order(exchange, owner, "g-old")["status"] == "NEW"
    response = replace(exchange, replace_body(trade, "g-old", "g-2", owner=owner))
    assert response.status_code == 200, response.text
    assert response.json()["order"]["agent"] == trade.address.lower()
    assert response.json()["cancelled"]["reason"] == "REPLACED"
    assert settled_to(exchange, owner, (DEPOSIT, lock()))


def test_a_replace_that_crosses_cancels_first_then_trades(exchange: Exchange) -> None:
    """Were the old buy still resting, the new sell would meet it (self-trade prevention):
    cancelled first, it is not there, and the sell trades with another user's bid."""
    trader = funded(exchange)
    trader_btc = 10 * QTY * 10_000
    exchange.deposit(trader.address, "BTC", trader_btc)
    buyer = funded(exchange)
    rest(exchange, trader, "x-old", price=PRICE + 3)
    rest(exchange, buyer, "x-bid", price=PRICE + 2)
    response = replace(exchange, replace_body(trader, "x-old", "x-new", side="SELL", price=PRICE))
    assert response.status_code == 200, response.text
    assert response.json()["cancelled"]["reason"] == "REPLACED"
    assert response.json()["order"]["status"] == "FILLED"
    assert order(exchange, buyer, "x-bid")["status"] == "FILLED"


def test_two_replaces_racing_for_one_order_place_exactly_one(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, "race-old")
    bodies = [replace_body(trader, "race-old", f"race-{n}", price=PRICE - 20 - n) for n in range(4)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda body: replace(exchange, body), bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409], [r.text for r in responses]
    winner = next(r.json()["order"] for r in responses if r.status_code == 200)
    for n in range(4):
        placed = order(exchange, trader, f"race-{n}")
        if placed["clientOrderId"] == winner["clientOrderId"]:
            assert placed["status"] == "NEW"
        else:
            assert (placed["status"], placed["reason"]) == ("REJECTED", "REPLACE_FAILED")
    assert order(exchange, trader, "race-old")["reason"] == "REPLACED"
    assert settled_to(exchange, trader, (DEPOSIT, lock(winner["price"])))


def test_a_replacement_may_itself_be_replaced(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, "chain-0")
    for n in (1, 2, 3):
        body = replace_body(trader, f"chain-{n - 1}", f"chain-{n}", price=PRICE - 30 - n)
        assert replace(exchange, body).status_code == 200
    states = [(order(exchange, trader, f"chain-{n}")["status"]) for n in range(4)]
    assert states == ["CXL", "CXL", "CXL", "NEW"]
    assert settled_to(exchange, trader, (DEPOSIT, lock(PRICE - 33)))


def test_a_derivative_replace_moves_margin_and_open_quantity_to_the_unit(
    exchange: Exchange, r: redis.Redis
) -> None:
    trader = funded(exchange)
    perp = load_markets(DEFAULT_MARKETS_FILE).markets[PERP]
    first = trader.order(PERP, "SELL", PRICE + 100, 10, cid="d-old", product="PERP")
    assert post(exchange, "/v1/orders?wait=1", first).json()["status"] == "NEW"
    body = replace_body(
        trader, "d-old", "d-new", side="SELL", market=PERP, price=PRICE + 109, qty=30
    )
    response = replace(exchange, body)
    assert response.status_code == 200, response.text
    assert response.json()["cancelled"]["reason"] == "REPLACED"
    margin = money.derivative_reservation(perp, PRICE + 109, 30)
    assert settled_to(exchange, trader, (DEPOSIT, margin))
    user = trader.address.lower()
    assert r.hgetall(keys.reservations(user)) == {"d-new": str(margin)}
    assert r.hget(keys.open_quantities(user), f"{PERP}:SELL") == "30"
    assert r.hgetall(keys.open_quantity_shares(user)) == {"d-new": f"30|{PERP}:SELL"}
