"""Nothing grows without bound with traffic: what a finished order keeps, the events stream
trimmed up to the settlement cursor (never past it), the indexes the account reads use, and
the bound on an account's withdrawal list."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from support.exchange import Exchange
from support.gateway import ADMIN, error_of, gateway_client
from support.market_driver import bulk_fills
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.audit import audit
from common.eip712 import sign
from common.events import events_of
from common.markets import load_markets
from services.gateway import withdrawals
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
SPOT, PERP = "BTC-USDC", "BTC-PERP"
USERS = [f"0x{i:040x}" for i in range(1, 9)]


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message.setdefault("userId", trader.address)
    message.setdefault("ts", int(time.time() * 1000))
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


# -- what a finished order keeps -------------------------------------------------------------
@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def test_a_finished_and_settled_order_keeps_only_what_its_reads_need(
    exchange: Exchange, r: redis.Redis
) -> None:
    maker, taker = Trader(), Trader()
    user = maker.address.lower()
    exchange.deposit(maker.address, "USDC", 10_000_000_000)
    exchange.deposit(taker.address, "BTC", 100_000_000)
    with exchange.client() as http:

        def place(trader: Trader, body: dict[str, Any]) -> dict[str, Any]:
            response = http.post("/v1/orders?wait=1", json=body)
            assert response.status_code == 200, response.text
            return response.json()

        filled = place(maker, maker.order(SPOT, "BUY", 3_000_000, 100, cid="to-fill"))
        place(maker, maker.order(SPOT, "BUY", 2_900_000, 100, cid="to-cancel"))
        place(maker, maker.order(SPOT, "BUY", 2_800_000, 100, cid="resting"))
        place(maker, maker.order(PERP, "BUY", 2_800_000, 100, cid="perp", product="PERP"))
        assert filled["status"] == "NEW"
        assert place(taker, taker.order(SPOT, "SELL", 3_000_000, 100))["status"] == "FILLED"
        cancel = signed(maker, "Cancel", market=SPOT, clientOrderId="to-cancel")
        assert http.post("/v1/orders/cancel", json=cancel).json()["status"] == "CXL"
        # settled: both finished orders released (what stays locked is the two resting ones)
        resting_lock = (280_000_000 + 140_000) + (28_000_000 + 140_000)  # spot + perp
        assert wait_for(
            lambda: r.hget(keys.balances(user), keys.locked_field("USDC")) == str(resting_lock),
            30,
        ), exchange.log("settler")[-3000:]
        assert wait_for(lambda: r.zcard(keys.account_open_orders(user, SPOT)) == 1, 30)

        # The finished orders: no accepted record, reservation, open-index or open-set entry.
        for cid in ("to-fill", "to-cancel"):
            assert r.exists(keys.account_order(user, cid)) == 0
            assert r.hexists(keys.reservations(user), cid) == 0
            assert r.hexists(keys.reservation_fills(user), cid) == 0
            assert r.sismember(keys.market_user_open(SPOT, user), cid) == 0
        assert r.zrange(keys.account_open_orders(user, SPOT), 0, -1) == ["resting"]
        assert r.zrange(keys.account_open_orders(user, PERP), 0, -1) == ["perp"]
        assert r.zcard(keys.outbox(user)) == 0
        # Only what reads need stays: the matcher's record, the id (duplicates), the listing.
        assert r.hgetall(keys.account_cids(user)) == {
            "to-fill": SPOT, "to-cancel": SPOT, "resting": SPOT, "perp": PERP
        }  # fmt: skip
        assert r.zrange(keys.account_market_orders(user, SPOT), 0, -1) == [
            "to-fill", "to-cancel", "resting"
        ]  # fmt: skip
        order_keys = sorted(r.scan_iter(match=keys.account_order_prefix(user).replace(
            "{", "\\{").replace("}", "\\}") + "*"))  # fmt: skip
        assert order_keys == [keys.account_order(user, "perp"), keys.account_order(user, "resting")]

        # Every read still answers.
        got = http.get(f"/v1/orders/{maker.address}/to-fill").json()
        assert (got["status"], got["filled"], got["price"], got["qty"]) == (
            "FILLED", 100, 3_000_000, 100
        )  # fmt: skip
        got = http.get(f"/v1/orders/{maker.address}/to-cancel").json()
        assert (got["status"], got["reason"], got["filled"]) == ("CXL", "USER", 0)

        def listed(query: str) -> list[tuple[str, str]]:
            orders = http.get(f"/v1/accounts/{maker.address}/orders{query}").json()
            return [(o["clientOrderId"], o["status"]) for o in orders]

        assert listed("") == [
            ("perp", "NEW"), ("resting", "NEW"), ("to-cancel", "CXL"), ("to-fill", "FILLED")
        ]  # fmt: skip
        assert listed("?limit=2") == [("perp", "NEW"), ("resting", "NEW")]
        assert listed(f"?market={SPOT}") == [
            ("resting", "NEW"), ("to-cancel", "CXL"), ("to-fill", "FILLED")
        ]  # fmt: skip
        assert listed(f"?market={SPOT}&limit=1") == [("resting", "NEW")]
        assert listed("?open=1") == [("perp", "NEW"), ("resting", "NEW")]
        assert listed(f"?open=1&market={PERP}") == [("perp", "NEW")]
        # A (userId, clientOrderId) pair is accepted once only, ever, settled or not.
        again = http.post(
            "/v1/orders", json=maker.order(SPOT, "BUY", 3_000_000, 100, cid="to-fill")
        )
        assert error_of(again) == (409, "DUPLICATE")
        cancel = signed(maker, "Cancel", market=SPOT, clientOrderId="to-fill")
        assert error_of(http.post("/v1/orders/cancel", json=cancel)) == (409, "ORDER_CLOSED")
    report = audit(r, MARKETS)
    assert report["ok"], report["invariants"]


# -- the events stream -------------------------------------------------------------------
def _entry_ids(r: redis.Redis, symbol: str, start: str = "-") -> list[str]:
    return [entry_id for entry_id, _ in r.xrange(keys.market_events(symbol), min=start)]


def test_events_are_trimmed_up_to_the_settled_cursor_and_never_past_it(r: redis.Redis) -> None:
    market = MARKETS.markets[SPOT]
    written = bulk_fills(r, market, USERS, 400, 3_000_000, 7)  # one entry per event
    every = _entry_ids(r, SPOT)
    assert len(every) == written == 1200
    ledger = Ledger(r, batch=300)
    cursors = []
    while not ledger.is_settled(SPOT):
        stored = r.get(keys.market_settled(SPOT)) or "0-0"
        assert ledger._settle_batch(market) > 0
        cursor = r.get(keys.market_settled(SPOT))
        cursors.append(cursor)
        # never past the cursor stored before the batch: it and all after it are still there
        kept = _entry_ids(r, SPOT)
        assert kept == every[len(every) - len(kept) :]
        if stored != "0-0":
            assert every.index(kept[0]) <= every.index(stored)
        assert _entry_ids(r, SPOT, start=cursor) == every[every.index(cursor) :]
    assert len(cursors) == 4 and cursors[-1] == every[-1]
    assert r.xlen(keys.market_events(SPOT)) < 400
    # an idle round trims up to the last cursor; the last entry stays (auditor, sweep)
    assert ledger.settle_market(market) == 0
    kept = _entry_ids(r, SPOT)
    assert 1 <= len(kept) <= 100 and kept[-1] == every[-1]
    assert ledger.unsettled_markets([market]) == []
    report = audit(r, MARKETS)
    assert report["ok"], report["invariants"]
    assert report["assets"]["USDC"]["fees"] == str(400 * (2_100 + 10_500))

    # new events after the trim settle exactly once, eseq carrying on
    more = bulk_fills(r, market, USERS, 50, 3_000_000, 7)
    assert ledger.unsettled_markets([market]) == [market]
    assert ledger.settle_market(market) == more == 150
    last = r.xrevrange(keys.market_events(SPOT), count=1)[0][1]
    assert int(events_of(last)[-1]["eseq"]) == 1350
    report = audit(r, MARKETS)
    assert report["ok"], report["invariants"]
    assert report["assets"]["USDC"]["fees"] == str(450 * (2_100 + 10_500))


def test_a_settled_done_event_drops_the_accepted_record_once(r: redis.Redis) -> None:
    """Replaying settled events (cursor lost) neither fails nor brings anything back."""
    market = MARKETS.markets[PERP]
    bulk_fills(r, market, USERS, 20, 3_000_000, 7)
    ledger = Ledger(r)
    assert ledger.settle_market(market) == 60
    assert list(r.scan_iter(match="dex:\\{0x*\\}:ord:*")) == []
    assert list(r.scan_iter(match="dex:\\{0x*\\}:res*")) == []
    balances = {u: r.hgetall(keys.balances(u)) for u in [*USERS, keys.FEES_ACCOUNT]}
    r.delete(keys.market_settled(PERP))
    assert ledger.settle_market(market) == sum(
        len(events_of(f)) for _, f in r.xrange(keys.market_events(PERP))
    )
    assert {u: r.hgetall(keys.balances(u)) for u in [*USERS, keys.FEES_ACCOUNT]} == balances
    report = audit(r, MARKETS)
    assert report["ok"], report["invariants"]


# -- withdrawals ---------------------------------------------------------------------------
@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


def test_the_withdrawal_list_keeps_the_newest_records_and_the_relayer_gets_every_one(
    client: TestClient, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(withdrawals, "ACCOUNT_WITHDRAWALS_KEPT", 5)
    trader = Trader()
    user = trader.address.lower()
    deposit = {"userId": user, "asset": "USDC", "amount": "1000000"}
    assert client.post("/v1/admin/deposits", json=deposit, headers=ADMIN).status_code == 200
    ids = []
    for amount in range(1, 9):
        body = signed(trader, "Withdraw", asset="USDC", amount=str(amount))
        response = client.post("/v1/withdrawals", json=body)
        assert response.status_code == 200, response.text
        ids.append(response.json()["withdrawalId"])
    listed = client.get(f"/v1/accounts/{user}/withdrawals").json()
    assert [(w["withdrawalId"], w["amount"]) for w in listed] == [
        (ids[i], str(i + 1)) for i in range(7, 2, -1)
    ]
    assert r.xlen(keys.account_withdrawals(user)) == 5
    relayed = [orjson.loads(f["w"]) for _, f in r.xrange(keys.withdrawal_requests())]
    assert [w["withdrawalId"] for w in relayed] == ids
    assert r.hget(keys.balances(user), keys.withdrawals_field("USDC")) == str(sum(range(1, 9)))
    assert client.get(f"/v1/accounts/{user}/balances").json()["USDC"]["total"] == str(
        1_000_000 - 36
    )
    report = audit(r, MARKETS)
    assert report["invariants"]["conservation"] == {"ok": True}
