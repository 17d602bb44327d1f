"""Signed batches against an attacker, on the real gateway app and a real Redis: forged,
replayed, oversized, malformed, in someone else's name, beyond the rate limit; and the
derivative rules judged across a batch's actions as across single orders.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from support.gateway import ADMIN, error_of, gateway_client
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from test_batch import BUY_LOCK, ETH, SPOT, batch, cancel, place, stream_cids

from common import keys
from common.eip712 import sign
from services.gateway import funds

pytestmark = pytest.mark.integration

PERP = "BTC-PERP"


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


def deposit(client: TestClient, user: str, asset: str, amount: int) -> None:
    response = client.post(
        "/v1/admin/deposits", json={"userId": user, "asset": asset, "amount": amount}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


def nothing_written(r: redis.Redis, user: str) -> bool:
    """No key of the account but its balance, and no command on any stream."""
    written = {k for k in r.scan_iter(f"dex:{{{user}}}:*")} - {keys.balances(user)}
    written -= {keys.rate_limit_user(user)}
    return not written and r.xlen(keys.market_in(SPOT)) == 0 and r.xlen(keys.market_in(ETH)) == 0


def test_a_forged_or_foreign_batch_is_401_and_writes_nothing(
    client: TestClient, r: redis.Redis
) -> None:
    owner, mallory = Trader(), Trader()
    user = owner.address.lower()
    deposit(client, user, "USDC", 10_000_000_000)
    # Mallory signs a batch in the owner's name: the signature covers userId once, so every
    # action is the signer's, and this one recovers to Mallory.
    status, code = error_of(
        client.post("/v1/orders/batch", json=batch(mallory, [place("a")], owner=owner))
    )
    assert (status, code) == (401, "INVALID_SIGNATURE")
    # A signature over other actions than those sent.
    body = batch(owner, [place("a")])
    body["actions"] = [place("a", qty=2_000)]
    assert error_of(client.post("/v1/orders/batch", json=body)) == (401, "INVALID_SIGNATURE")
    body = batch(owner, [place("a"), place("b")])
    body["actions"] = body["actions"][::-1]
    assert error_of(client.post("/v1/orders/batch", json=body)) == (401, "INVALID_SIGNATURE")
    body = batch(owner, [place("a")])
    body["atomic"] = True
    assert error_of(client.post("/v1/orders/batch", json=body)) == (401, "INVALID_SIGNATURE")
    stale = batch(owner, [place("a")], ts=int(time.time() * 1000) - 3_600_000)
    assert error_of(client.post("/v1/orders/batch", json=stale)) == (400, "STALE_TS")
    assert nothing_written(r, user)


def test_a_replayed_batch_is_a_duplicate(client: TestClient, r: redis.Redis) -> None:
    trader = Trader()
    user = trader.address.lower()
    deposit(client, user, "USDC", 10_000_000_000)
    body = batch(trader, [place("a"), place("b", market=ETH)])
    assert client.post("/v1/orders/batch", json=body).status_code == 200
    assert error_of(client.post("/v1/orders/batch", json=body)) == (409, "DUPLICATE")
    assert r.xlen(keys.market_in(SPOT)) == 1 and r.xlen(keys.market_in(ETH)) == 1


@pytest.mark.parametrize(
    ("change", "status", "code", "words"),
    [
        ({"actions": [place(f"c{i}") for i in range(51)]}, 400, "INVALID_REQUEST", "1-50"),
        ({"actions": []}, 400, "INVALID_REQUEST", "1-50"),
        ({"actions": place("a")}, 400, "INVALID_REQUEST", "array"),
        ({"actions": ["PLACE"]}, 400, "INVALID_REQUEST", "actions[0] must be an object"),
        ({"actions": [place("a"), [place("b")]]}, 400, "INVALID_REQUEST", "actions[1]"),
        ({"actions": [place("a"), place("b", price="12x")]}, 400, "INVALID_REQUEST", "price"),
        ({"actions": [place("a", price=-1)]}, 400, "INVALID_REQUEST", "actions[0]: price"),
        ({"actions": [place("a", reduceOnly="false")]}, 400, "INVALID_REQUEST", "reduceOnly"),
        ({"actions": [place("a", expectedFilled=2**255)]}, 400, "INVALID_REQUEST", "int256"),
        ({"actions": [{**place("a"), "userId": "0x" + "22" * 20}]}, 400, "INVALID_REQUEST",
         "unexpected field(s): userId"),
        ({"actions": [{k: v for k, v in place("a").items() if k != "kind"}]}, 400,
         "INVALID_REQUEST", "missing field(s): kind"),
        ({"atomic": "yes"}, 400, "INVALID_REQUEST", "atomic"),
        ({"userId": "0x12"}, 400, "INVALID_USER", "userId"),
        ({"market": SPOT}, 400, "INVALID_REQUEST", "unexpected field(s): market"),
    ],
)  # fmt: skip
def test_malformed_batches_are_400_naming_the_field(
    client: TestClient, r: redis.Redis, change: dict[str, Any], status: int, code: str, words: str
) -> None:
    trader = Trader()
    body = {**batch(trader, [place("a")]), **change}
    response = client.post("/v1/orders/batch", json=body)
    assert error_of(response) == (status, code), response.text
    assert words in response.json()["error"]["message"]
    assert nothing_written(r, trader.address.lower())


def test_a_huge_batch_body_is_413(client: TestClient) -> None:
    trader = Trader()
    body = batch(trader, [place("a", clientOrderId="x" * 70_000)])
    assert error_of(client.post("/v1/orders/batch", json=body)) == (413, "BODY_TOO_LARGE")


def test_a_cancel_action_leaves_the_fields_it_does_not_use_blank(
    client: TestClient, r: redis.Redis
) -> None:
    trader = Trader()
    user = trader.address.lower()
    deposit(client, user, "USDC", 10_000_000_000)
    assert client.post("/v1/orders/batch", json=batch(trader, [place("a")])).status_code == 200
    actions = [{**cancel("a"), "qty": 5}, {**place("b"), "expectedFilled": -1}, cancel("a", ETH)]
    results = client.post("/v1/orders/batch", json=batch(trader, actions)).json()["results"]
    assert [(x["status"], x["error"]["code"]) for x in results] == [
        (400, "INVALID_REQUEST"),
        (400, "INVALID_REQUEST"),
        (404, "NOT_FOUND"),
    ]
    assert "qty" in results[0]["error"]["message"]
    amend = {**place("a"), "kind": "AMEND", "side": "", "type": "", "timeInForce": ""}
    results = client.post("/v1/orders/batch", json=batch(trader, [{**amend, "expiresAt": 5}]))
    assert [(x["status"], x["error"]["code"]) for x in results.json()["results"]] == [
        (400, "INVALID_REQUEST")
    ]
    assert "expiresAt" in results.json()["results"][0]["error"]["message"]
    assert r.xlen(keys.market_in(SPOT)) == 1


def test_a_batch_spends_one_token_of_the_user_budget_per_action(
    redis_url: str, r: redis.Redis
) -> None:
    with gateway_client(redis_url, rate_limit_user=10) as client:  # a bucket of 20 tokens
        trader = Trader()
        user = trader.address.lower()
        deposit(client, user, "USDC", 1_000_000_000_000)
        actions = [place(f"c{i}", market=ETH) for i in range(21)]
        assert error_of(client.post("/v1/orders/batch", json=batch(trader, actions))) == (
            429,
            "RATE_LIMITED",
        )
        assert r.xlen(keys.market_in(ETH)) == 0
        response = client.post("/v1/orders/batch", json=batch(trader, actions[:20]))
        assert response.status_code == 200, response.text
        assert error_of(client.post("/v1/orders/batch", json=batch(trader, actions[20:]))) == (
            429,
            "RATE_LIMITED",
        )
        assert r.xlen(keys.market_in(ETH)) == 20


def test_perp_places_in_one_batch_are_judged_as_the_same_single_orders_would_be(
    client: TestClient, r: redis.Redis
) -> None:
    """A long of 1,000: two sells of 500 only reduce it (each reserves its fee alone, the
    second counting the first as open, as it would if sent after it), a third opens a short
    and needs margin the account lacks."""
    results = {}
    for mode in ("batch", "single"):
        trader = Trader()
        user = trader.address.lower()
        r.hset(
            keys.positions(user), mapping={f"{PERP}:size": 1_000, f"{PERP}:entry": 3_000_000_000}
        )
        deposit(client, user, "USDC", 10_000_000)
        sells = [
            place(f"s{i}", market=PERP, side="SELL", price=3_000_000, qty=500) for i in range(3)
        ]
        if mode == "batch":
            answer = client.post("/v1/orders/batch", json=batch(trader, sells)).json()
            statuses = [(x["status"], x.get("error", {}).get("code")) for x in answer["results"]]
        else:
            statuses = []
            for action in sells:
                body = trader.order(
                    PERP, "SELL", 3_000_000, 500, product="PERP", cid=action["clientOrderId"],
                    timeInForce="GTC",
                )  # fmt: skip
                response = client.post("/v1/orders", json=body)
                statuses.append((202, None) if response.status_code == 202 else error_of(response))
        results[mode] = (
            statuses,
            r.hgetall(keys.balances(user)),
            r.hgetall(keys.open_quantities(user)),
            r.hgetall(keys.reservations(user)),
        )
    assert results["batch"] == results["single"]
    statuses, balances, open_quantities, reservations = results["batch"]
    assert statuses == [(202, None), (202, None), (422, "INSUFFICIENT_MARGIN")]
    assert (balances["USDC:t"], balances["USDC:l"]) == ("10000000", "1500000")
    assert reservations == {"s0": "750000", "s1": "750000"}
    assert open_quantities == {f"{PERP}:SELL": "1000"}


def test_an_info_read_publishes_the_batch_types(client: TestClient) -> None:
    types = client.get("/v1/info").json()["types"]
    assert [f["type"] for f in types["Batch"]] == ["string", "bool", "BatchAction[]", "uint256"]
    assert types["BatchAction"][-1] == {"name": "expectedFilled", "type": "int256"}
    message = {"userId": "0x" + "11" * 20, "atomic": False, "actions": [place("a")], "ts": 1}
    assert sign(Trader().key, "Batch", message, CHAIN_ID, VERIFYING_CONTRACT)


def stale_positions(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Make the gateway judge the next ``times`` batches' derivative places on a position one
    lot off the account's (as when a fill lands between the read and the account script);
    the list counts the reads."""
    real = funds.account_state
    reads: list[int] = []

    async def account_state(gateway: Any, user: str, asset: str) -> Any:
        adjustment, positions, *rest = await real(gateway, user, asset)
        reads.append(1)
        if len(reads) <= times:
            positions = {**positions, f"{PERP}:size": str(int(positions[f"{PERP}:size"]) - 1)}
        return (adjustment, positions, *rest)

    monkeypatch.setattr(funds, "account_state", account_state)
    return reads


def with_long(client: TestClient, r: redis.Redis) -> tuple[Trader, str]:
    trader = Trader()
    user = trader.address.lower()
    r.hset(keys.positions(user), mapping={f"{PERP}:size": 1_000, f"{PERP}:entry": 3_000_000_000})
    deposit(client, user, "USDC", 10_000_000_000)
    return trader, user


MIXED = [
    place("s0", market=PERP, side="SELL", price=3_000_000, qty=500),
    place("x"),
    place("s1", market=PERP, side="SELL", price=3_000_000, qty=500),
    place("y"),
]


def test_a_moved_position_defers_its_market_and_keeps_its_order(
    client: TestClient, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not atomic: the perp place judged on a stale position is judged again, with the later
    place of its market, after the other market's places went out; the stream keeps the order."""
    trader, user = with_long(client, r)
    reads = stale_positions(monkeypatch, times=1)
    answer = client.post("/v1/orders/batch", json=batch(trader, MIXED)).json()
    assert [x["status"] for x in answer["results"]] == [202, 202, 202, 202]
    assert len(reads) == 2
    assert [c for _, c in stream_cids(r, PERP)] == ["s0", "s1"]
    assert [c for _, c in stream_cids(r, SPOT)] == ["x", "y"]
    assert r.hgetall(keys.reservations(user)) == {
        "s0": "750000",
        "s1": "750000",
        "x": str(BUY_LOCK),
        "y": str(BUY_LOCK),
    }
    assert r.hget(keys.open_quantities(user), f"{PERP}:SELL") == "1000"


def test_a_position_that_keeps_moving_is_503_for_its_actions_alone(
    client: TestClient, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    trader, user = with_long(client, r)
    stale_positions(monkeypatch, times=99)
    answer = client.post("/v1/orders/batch", json=batch(trader, MIXED)).json()
    assert [(x["status"], x.get("error", {}).get("code")) for x in answer["results"]] == [
        (503, "UNAVAILABLE"),
        (202, None),
        (503, "UNAVAILABLE"),
        (202, None),
    ]
    assert stream_cids(r, PERP) == []
    assert r.hget(keys.open_quantities(user), f"{PERP}:SELL") is None
    # Atomic: the whole batch is judged again, and at last refused whole.
    before = {k: r.dump(k) for k in r.scan_iter(f"dex:{{{user}}}:*") if "rl" not in k}
    fresh = [{**a, "clientOrderId": a["clientOrderId"] + "-2"} for a in MIXED]
    response = client.post("/v1/orders/batch", json=batch(trader, fresh, atomic=True))
    assert error_of(response) == (503, "UNAVAILABLE")
    after = {k: r.dump(k) for k in r.scan_iter(f"dex:{{{user}}}:*") if "rl" not in k}
    assert after.keys() == before.keys()
    assert r.xlen(keys.market_in(SPOT)) == 2 and r.xlen(keys.market_in(PERP)) == 0


def test_an_atomic_batch_on_a_moved_position_is_judged_again_whole(
    client: TestClient, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    trader, _ = with_long(client, r)
    reads = stale_positions(monkeypatch, times=1)
    response = client.post("/v1/orders/batch", json=batch(trader, MIXED, atomic=True))
    assert [x["status"] for x in response.json()["results"]] == [202] * 4
    assert len(reads) == 2
    assert [c for _, c in stream_cids(r, PERP)] == ["s0", "s1"]
    assert [c for _, c in stream_cids(r, SPOT)] == ["x", "y"]


def test_actions_across_markets_answer_by_their_own_market(
    client: TestClient, r: redis.Redis
) -> None:
    """One market halted: its place answers 422 MARKET_HALTED, after the balance (as a single
    order's checks run), while the other market's places go through; atomic, nothing does."""
    trader = Trader()
    user = trader.address.lower()
    deposit(client, user, "USDC", 10_000_000_000)
    r.hset(keys.market_state(ETH), "status", "HALTED")
    actions = [place("a"), place("b", market=ETH), place("c", market=ETH, qty=10**9), place("d")]
    results = client.post("/v1/orders/batch", json=batch(trader, actions)).json()["results"]
    assert [(x["status"], x.get("error", {}).get("code")) for x in results] == [
        (202, None),
        (422, "MARKET_HALTED"),
        (422, "INSUFFICIENT_BALANCE"),
        (202, None),
    ]
    assert [c for _, c in stream_cids(r, SPOT)] == ["a", "d"]
    assert r.xlen(keys.market_in(ETH)) == 0
    fresh = [{**a, "clientOrderId": a["clientOrderId"] + "-2"} for a in actions[:2]]
    response = client.post("/v1/orders/batch", json=batch(trader, fresh, atomic=True))
    assert error_of(response) == (422, "MARKET_HALTED")
    assert response.json()["error"]["index"] == 1
    assert r.hget(keys.balances(user), "USDC:l") == str(2 * BUY_LOCK)
