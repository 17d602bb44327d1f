"""Amend under faults, on a real redis-server: the gateway dying between its account script
and the XADD (the outbox path of a cluster), a matcher batch replayed after a crash, and a
settler re-running events whose account calls already applied. Each ends with every
reservation to the unit at what the order's rest needs, and nothing applied twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from support.exchange import ADMIN_TOKEN, Exchange
from support.market_driver import MarketDriver
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys, money
from common.eip712 import sign
from common.lua import ScriptSet, read_script
from common.markets import MarketSet, load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.gateway.transport import LUA_DIR as GATEWAY_LUA
from services.matcher.consumer import LUA_DIR, match_args, match_keys, write_market_cfg
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
P = 3_000_000
BTC = 10**10


@pytest.fixture
def markets() -> MarketSet:
    return load_markets(DEFAULT_MARKETS_FILE)


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


def test_gateway_dying_before_the_xadd_only_over_reserves_until_the_order_ends(
    exchange: Exchange, redis_url: str, markets: MarketSet
) -> None:
    """amend_order.lua ran (as on a cluster, without the stream) and the gateway died before
    its XADD: the order keeps its terms, the raise stays (the audit accepts at least the need
    while the amend is pending), a fill never lowers it, and the order's end releases all."""
    spot = markets.markets[SPOT]
    seller, buyer = Trader(), Trader()
    user = seller.address.lower()
    for trader in (seller, buyer):
        exchange.deposit(trader.address, "BTC", BTC)
        exchange.deposit(trader.address, "USDC", 10**12)
    with exchange.client() as client:
        body = seller.order(SPOT, "SELL", P, 10, cid="d1")
        assert client.post("/v1/orders?wait=1", json=body).status_code == 200
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    script = r.register_script(read_script(str(GATEWAY_LUA), "amend_order"))
    accepted = orjson.loads(r.hget(keys.account_order(user, "d1"), "cmd"))
    new_order = {**accepted, "qty": 20, "reserved": money.base_units(spot, 20)}
    verdict = script(
        keys=[
            keys.account_order(user, "d1"),
            keys.account_open_orders(user, SPOT),
            keys.balances(user),
            keys.reservations(user),
            keys.positions(user),
            keys.open_quantities(user),
            keys.used_signature(user, "lost-amend"),
        ],
        args=["d1", "BTC", money.base_units(spot, 20), 0, "INSUFFICIENT_BALANCE", 0, "", 0, "",
              0, 60_000, "lost", orjson.dumps(new_order).decode(), "{}"],
    )  # fmt: skip
    assert verdict == ["OK", str(money.base_units(spot, 20)), str(money.base_units(spot, 10))]
    assert exchange.balance(seller.address, "BTC") == (BTC, money.base_units(spot, 20))
    audit = audit_report(exchange)
    assert audit["reservationsMatchOpenOrders"]["ok"], audit
    with exchange.client() as client:
        body = buyer.order(SPOT, "BUY", P, 4, cid="b1")
        assert client.post("/v1/orders?wait=1", json=body).status_code == 200
    # the fill spent 4 from the reservation; the pending amend keeps the rest at least as high
    assert wait_for(
        lambda: (
            exchange.balance(seller.address, "BTC")
            == (BTC - money.base_units(spot, 4), money.base_units(spot, 16))
        ),
        10,
    )
    assert exchange.get(f"/v1/orders/{seller.address}/d1")["qty"] == 10
    cancel = {"userId": seller.address, "market": SPOT, "clientOrderId": "d1", "ts": now_ms()}
    cancel["sig"] = sign(seller.key, "Cancel", cancel, CHAIN_ID, VERIFYING_CONTRACT)
    with exchange.client() as client:
        assert client.post("/v1/orders/cancel", json=cancel).status_code == 200
    assert wait_for(
        lambda: exchange.balance(seller.address, "BTC") == (BTC - money.base_units(spot, 4), 0),
        10,
    )
    assert all(check["ok"] for check in audit_report(exchange).values())


def audit_report(exchange: Exchange) -> dict[str, Any]:
    with exchange.client() as client:
        response = client.get("/v1/admin/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return dict(response.json()["invariants"])


def command(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def test_a_replayed_matcher_batch_amends_once(client: redis.Redis, markets: MarketSet) -> None:
    """The same stream ids applied twice (a matcher killed before its XACK): the second call
    is skipped whole, so the amend moves the order, prints its trade and emits its event once."""
    write_market_cfg(client, markets.markets[SPOT])
    scripts = ScriptSet(client, LUA_DIR)
    order = {"op": "order", "type": "LIMIT", "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
             "ts": 1, "reserved": 0, "acceptedAt": 1}  # fmt: skip
    args = match_args(SPOT, now_ms(), "")
    for i, text in enumerate(
        [
            command(**order, user="0xaa", cid="a1", side="SELL", price=P + 10, qty=5),
            command(**order, user="0xbb", cid="b1", side="BUY", price=P, qty=5),
            command(
                op="amend",
                user="0xbb",
                cid="b1",
                side="BUY",
                price=P + 10,
                qty=8,
                expectedFilled=-1,
                reserved=0,
                aid="x",
                ts=2,
            ),
        ],
        1,
    ):
        args.extend((f"7-{i}", text))
    assert scripts["match"](keys=match_keys(SPOT), args=args)[:2] == [3, 3]  # fill, done, amend
    snapshot = {k: client.dump(k) for k in client.keys("*")}
    assert scripts["match"](keys=match_keys(SPOT), args=args)[:2] == [0, 0]
    assert {k: client.dump(k) for k in client.keys("*")} == snapshot
    record = client.hgetall(keys.market_order(SPOT, "0xbb", "b1"))
    assert (record["qty"], record["filled"], record["status"]) == ("8", "5", "PARTIAL")
    assert client.xlen(keys.market_trades(SPOT)) == 1


def test_a_settler_rerun_applies_the_amend_once(client: redis.Redis, markets: MarketSet) -> None:
    """The settler's account calls applied, then it died before its cursor moved: the next
    run reads the same events, and every account call skips them by its watermark."""
    spot = markets.markets[SPOT]
    drive = MarketDriver(client, spot)
    drive.deposit("0xaa", "BTC", BTC)
    drive.order("0xaa", "a1", "SELL", P, 10)
    # what amend_order.lua leaves: the raise for qty 20, one pending amend, its new command
    record = keys.account_order("0xaa", "a1")
    new_order = {**orjson.loads(client.hget(record, "cmd")), "qty": 20}
    new_order["reserved"] = money.base_units(spot, 20)
    client.hset(keys.reservations("0xaa"), "a1", money.base_units(spot, 20))
    client.hset(keys.balances("0xaa"), keys.locked_field("BTC"), money.base_units(spot, 20))
    client.hset(record, mapping={"pa": 1, "amd:x": orjson.dumps(new_order).decode()})
    client.hset(keys.market_order(SPOT, "0xaa", "a1"), "qty", 20)
    drive.event(
        {"k": "amend", "user": "0xaa", "cid": "a1", "side": "SELL", "accepted": True,
         "result": "AMENDED", "aid": "x", "price": P, "qty": 20,
         "reserved": money.base_units(spot, 20), "ts": now_ms()}
    )  # fmt: skip
    drive.deposit("0xbb", "USDC", 10**12)
    drive.order("0xbb", "b1", "BUY", P, 6)
    drive.fill(("0xbb", "b1"), ("0xaa", "a1"), P, 6)
    ledger = Ledger(client)
    assert ledger.settle_market(spot) == 3  # the amend, the fill, b1's done
    after = {k: client.dump(k) for k in client.keys("dex:{0xaa}*")}
    assert client.hget(keys.reservations("0xaa"), "a1") == str(money.base_units(spot, 14))
    assert orjson.loads(client.hget(record, "cmd"))["qty"] == 20
    assert client.hget(record, "pa") == "0"
    client.delete(keys.market_settled(SPOT))  # the cursor never moved
    assert Ledger(client).settle_market(spot) == 3
    assert {k: client.dump(k) for k in client.keys("dex:{0xaa}*")} == after


def test_a_ledger_that_missed_an_amend_reads_the_new_terms(
    client: redis.Redis, markets: MarketSet
) -> None:
    """Two workers take turns on a market: the one that cached an order's terms before another
    settled its amend reads them again, so the next fill leaves what the new terms need."""
    spot = markets.markets[SPOT]
    drive = MarketDriver(client, spot)
    drive.deposit("0xaa", "BTC", BTC)
    drive.deposit("0xbb", "USDC", 10**12)
    drive.order("0xaa", "a1", "SELL", P, 10)
    drive.order("0xbb", "b1", "BUY", P, 2)
    drive.fill(("0xbb", "b1"), ("0xaa", "a1"), P, 2)
    first, second = Ledger(client), Ledger(client)
    assert first.settle_market(spot) == 2  # first caches a1's terms (qty 10)
    assert client.hget(keys.reservations("0xaa"), "a1") == str(money.base_units(spot, 8))
    record = keys.account_order("0xaa", "a1")
    new_order = {**orjson.loads(client.hget(record, "cmd")), "qty": 20}
    new_order["reserved"] = money.base_units(spot, 20)
    client.hset(keys.reservations("0xaa"), "a1", money.base_units(spot, 18))
    client.hset(keys.balances("0xaa"), keys.locked_field("BTC"), money.base_units(spot, 18))
    client.hset(record, mapping={"pa": 1, "amd:y": orjson.dumps(new_order).decode()})
    client.hset(keys.market_order(SPOT, "0xaa", "a1"), "qty", 20)
    drive.event(
        {"k": "amend", "user": "0xaa", "cid": "a1", "side": "SELL", "accepted": True,
         "result": "AMENDED", "aid": "y", "price": P, "qty": 20,
         "reserved": money.base_units(spot, 20), "ts": now_ms()}
    )  # fmt: skip
    assert second.settle_market(spot) == 1
    drive.order("0xbb", "b2", "BUY", P, 3)
    drive.fill(("0xbb", "b2"), ("0xaa", "a1"), P, 3)
    assert first.settle_market(spot) == 2
    assert client.hget(keys.reservations("0xaa"), "a1") == str(money.base_units(spot, 15))
    assert client.hget(keys.balances("0xaa"), keys.locked_field("BTC")) == str(
        money.base_units(spot, 15)
    )
