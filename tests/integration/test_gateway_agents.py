"""Agent keys against a real gateway, matcher and settler on a real Redis (API.md "Agent keys").

The owner approves an agent key with a signed ApproveAgent; the agent then signs orders and
cancels for the owner's account within its scope, markets and expiry, never a withdrawal or
another approval, and a revocation holds from the very next request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from support.exchange import Exchange
from support.gateway import ADMIN, error_of, gateway_client
from support.order_changes import order_changes_channel, orders_of
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common.eip712 import sign
from common.events import OrderChangesPublication
from common.events.schema import validate

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
PRICE, QTY = 3_000_000, 1_000
# notional 3,000,000,000 USDC units + the 5 bp taker fee 1,500,000 (test_gateway_orders.py)
NOTIONAL, TAKER_FEE = 3_000_000_000, 1_500_000


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(signer: Trader, primary: str, owner: Trader | None = None, **message: Any) -> dict:
    """A ``primary`` body for ``owner``'s account (the signer's own by default), signed by
    ``signer``."""
    message.setdefault("userId", (owner or signer).address)
    message.setdefault("ts", now_ms())
    return {**message, "sig": sign(signer.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def approval(
    owner: Trader,
    agent: Trader | str,
    scope: str = "TRADE",
    markets: str = "",
    expires_at: int = 0,
    signer: Trader | None = None,
    name: str = "bot-1",
) -> dict[str, Any]:
    address = agent if isinstance(agent, str) else agent.address
    return signed(
        signer or owner,
        "ApproveAgent",
        owner,
        agent=address,
        name=name,
        scope=scope,
        markets=markets,
        expiresAt=expires_at,
    )


def order(
    signer: Trader, owner: Trader, side: str = "BUY", market: str = SPOT, cid: str = ""
) -> dict[str, Any]:
    product = "SPOT" if market == SPOT else "PERP"
    return signed(
        signer,
        "Order",
        owner,
        clientOrderId=cid or f"a-{time.time_ns()}",
        market=market,
        side=side,
        type="LIMIT",
        price=PRICE,
        qty=QTY,
        product=product,
    )


def post(exchange: Exchange, path: str, body: dict[str, Any]) -> httpx.Response:
    with exchange.client() as http:
        return http.post(path, json=body)


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_an_agent_trades_for_the_owner_to_the_unit_and_the_order_names_it(
    exchange: Exchange, r: redis.Redis
) -> None:
    owner, agent, bob = Trader(), Trader(), Trader()
    exchange.deposit(owner.address, "USDC", 5_000_000_000)
    exchange.deposit(bob.address, "BTC", 10_000_000)
    approved = post(exchange, "/v1/accounts/agents", approval(owner, agent, markets=SPOT))
    assert approved.status_code == 200, approved.text
    assert approved.json()["agent"] == agent.address.lower()
    listed = exchange.get(f"/v1/accounts/{owner.address}/agents")
    assert [(a["agent"], a["scope"], a["markets"]) for a in listed] == [
        (agent.address.lower(), "TRADE", SPOT)
    ]
    # An agent's resting order reserves the owner's funds, to the unit.
    listener = r.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(order_changes_channel(SPOT))
    resting = order(agent, owner, cid="rest")
    assert post(exchange, "/v1/orders?wait=1", resting).json()["status"] == "NEW"
    deadline, published = time.monotonic() + 10, None
    while published is None and time.monotonic() < deadline:
        message = listener.get_message(timeout=1)  # None too for the subscribe's answer
        published = message if orders_of(owner.address, message) else None
    listener.close()
    assert published is not None
    change = validate(OrderChangesPublication, published["data"])
    update = next(u for u in change["data"] if u["userId"] == owner.address.lower())
    assert (update["clientOrderId"], update["agent"]) == ("rest", agent.address.lower())
    assert exchange.balance(owner.address, "USDC") == (5_000_000_000, NOTIONAL + TAKER_FEE)
    assert exchange.get(f"/v1/accounts/{agent.address}/balances") == {}
    shown = exchange.get(f"/v1/orders/{owner.address}/rest")
    assert shown["agent"] == agent.address.lower() and shown["userId"] == owner.address.lower()
    # ...and the agent's cancel releases them.
    cancel = signed(agent, "Cancel", owner, market=SPOT, clientOrderId="rest")
    assert post(exchange, "/v1/orders/cancel", cancel).json()["status"] == "CXL"
    assert wait_for(lambda: exchange.balance(owner.address, "USDC") == (5_000_000_000, 0), 30)
    # A fill against Bob's resting sell settles into the owner's account.
    sell = bob.order(SPOT, "SELL", PRICE, QTY)
    assert post(exchange, "/v1/orders?wait=1", sell).json()["status"] == "NEW"
    taker = order(agent, owner, cid="take")
    assert post(exchange, "/v1/orders?wait=1", taker).json()["status"] == "FILLED"
    assert wait_for(
        lambda: (
            exchange.balance(owner.address, "BTC") == (QTY * 10**4, 0)
            and exchange.balance(owner.address, "USDC") == (5_000_000_000 - NOTIONAL - TAKER_FEE, 0)
        ),
        30,
    )
    assert exchange.get(f"/v1/orders/{owner.address}/take")["agent"] == agent.address.lower()
    # An owner's own order carries no agent field.
    own = owner.order(SPOT, "SELL", PRICE * 2, QTY, cid="own")
    assert post(exchange, "/v1/orders?wait=1", own).json()["status"] == "NEW"
    assert "agent" not in exchange.get(f"/v1/orders/{owner.address}/own")
    # Never a withdrawal, never an approval of another agent.
    withdraw = signed(agent, "Withdraw", owner, asset="USDC", amount=1_000_000)
    status, code, message = refusal(post(exchange, "/v1/withdrawals", withdraw))
    assert (status, code) == (403, "FORBIDDEN") and "cannot sign a Withdraw" in message
    other = Trader()
    status, code, message = refusal(
        post(exchange, "/v1/accounts/agents", approval(owner, other, signer=agent))
    )
    assert (status, code) == (403, "FORBIDDEN") and agent.address.lower() in message
    revoke = signed(agent, "RevokeAgent", owner, agent=agent.address)
    assert refusal(post(exchange, "/v1/accounts/agents/revoke", revoke))[:2] == (403, "FORBIDDEN")
    assert exchange.balance(owner.address, "USDC") == (5_000_000_000 - NOTIONAL - TAKER_FEE, 0)


def test_an_agent_signs_a_trigger_order_for_the_owner(exchange: Exchange) -> None:
    """An OrderV4 (docs/api.md "Trigger orders") is an order: a TRADE agent signs it for its
    owner, it waits UNTRIGGERED on the owner's funds, named by the agent; a CANCEL_ONLY agent
    may not."""
    owner, agent, watcher = Trader(), Trader(), Trader()
    exchange.deposit(owner.address, "USDC", 5_000_000_000)
    assert post(exchange, "/v1/accounts/agents", approval(owner, agent)).status_code == 200
    stop = {
        "clientOrderId": "stop", "market": SPOT, "side": "BUY", "type": "STOP_LIMIT",
        "price": PRICE, "qty": QTY, "product": "SPOT", "timeInForce": "GTC",
        "reduceOnly": False, "expiresAt": 0, "selfTradePrevention": "",
        "triggerPrice": PRICE * 2, "triggerSource": "LAST", "trailingDelta": 0,
        "trailingUnit": "", "closePosition": False, "takeProfitPrice": 0, "stopLossPrice": 0,
    }  # fmt: skip
    placed = post(exchange, "/v1/orders?wait=1", signed(agent, "OrderV4", owner, **stop))
    assert placed.status_code == 200, placed.text
    shown = exchange.get(f"/v1/orders/{owner.address}/stop")
    assert (shown["status"], shown["agent"]) == ("UNTRIGGERED", agent.address.lower())
    assert exchange.balance(owner.address, "USDC") == (5_000_000_000, NOTIONAL + TAKER_FEE)
    approved = approval(owner, watcher, scope="CANCEL_ONLY")
    assert post(exchange, "/v1/accounts/agents", approved).status_code == 200
    refused = signed(watcher, "OrderV4", owner, **(stop | {"clientOrderId": "stop-2"}))
    assert refusal(post(exchange, "/v1/orders", refused))[:2] == (403, "FORBIDDEN")
    cancel = signed(agent, "Cancel", owner, market=SPOT, clientOrderId="stop")
    assert post(exchange, "/v1/orders/cancel", cancel).json()["status"] == "CXL"
    assert wait_for(lambda: exchange.balance(owner.address, "USDC") == (5_000_000_000, 0), 30)


def test_a_cancel_only_agent_cancels_but_never_places_and_keeps_to_its_markets(
    exchange: Exchange,
) -> None:
    owner, agent = Trader(), Trader()
    exchange.deposit(owner.address, "USDC", 10_000_000_000)
    body = approval(owner, agent, scope="CANCEL_ONLY", markets=SPOT)
    assert post(exchange, "/v1/accounts/agents", body).status_code == 200
    status, code, message = refusal(post(exchange, "/v1/orders", order(agent, owner)))
    assert (status, code) == (403, "FORBIDDEN") and "CANCEL_ONLY" in message
    assert exchange.balance(owner.address, "USDC") == (10_000_000_000, 0)
    mine = owner.order(SPOT, "BUY", PRICE, QTY, cid="mine")
    assert post(exchange, "/v1/orders?wait=1", mine).json()["status"] == "NEW"
    # Its markets only: a cancel in another market, or in every market, is refused.
    elsewhere = signed(agent, "Cancel", owner, market=PERP, clientOrderId="mine")
    assert refusal(post(exchange, "/v1/orders/cancel", elsewhere))[:2] == (403, "FORBIDDEN")
    everywhere = signed(agent, "CancelAll", owner, market="")
    assert refusal(post(exchange, "/v1/orders/cancel-all", everywhere))[:2] == (403, "FORBIDDEN")
    cancel_all = signed(agent, "CancelAll", owner, market=SPOT)
    response = post(exchange, "/v1/orders/cancel-all", cancel_all)
    assert response.status_code == 200 and response.json() == {"cancelled": 1}
    assert exchange.get(f"/v1/orders/{owner.address}/mine")["status"] == "CXL"


def test_an_expired_or_revoked_agent_is_refused_on_the_very_next_request(
    exchange: Exchange,
) -> None:
    owner, agent = Trader(), Trader()
    exchange.deposit(owner.address, "USDC", 20_000_000_000)
    expires_at = now_ms() + 2_000
    body = approval(owner, agent, expires_at=expires_at)
    assert post(exchange, "/v1/accounts/agents", body).status_code == 200
    assert post(exchange, "/v1/orders", order(agent, owner)).status_code == 202
    time.sleep(max(0.0, (expires_at - now_ms()) / 1000) + 0.1)
    status, code, message = refusal(post(exchange, "/v1/orders", order(agent, owner)))
    assert (status, code) == (401, "INVALID_SIGNATURE") and "expired" in message
    assert exchange.get(f"/v1/accounts/{owner.address}/agents") == []
    # Approved again, then revoked: the next order is refused and the error names the signer.
    assert post(exchange, "/v1/accounts/agents", approval(owner, agent)).status_code == 200
    assert post(exchange, "/v1/orders", order(agent, owner)).status_code == 202
    revoke = signed(owner, "RevokeAgent", agent=agent.address)
    revoked = post(exchange, "/v1/accounts/agents/revoke", revoke)
    assert revoked.json() == {"agent": agent.address.lower(), "revoked": True}
    status, code, message = refusal(post(exchange, "/v1/orders", order(agent, owner)))
    assert (status, code) == (401, "INVALID_SIGNATURE")
    assert f"recovers {agent.address.lower()}, which is neither {owner.address.lower()}" in message
    again = signed(owner, "RevokeAgent", agent=agent.address)
    assert refusal(post(exchange, "/v1/accounts/agents/revoke", again))[:2] == (404, "NOT_FOUND")
    # Two orders were accepted: exactly two reservations are held.
    assert exchange.balance(owner.address, "USDC") == (
        20_000_000_000,
        2 * (NOTIONAL + TAKER_FEE),
    )


# -- attacks on the approval (the gateway alone; the matcher plays no part) ------------------
def test_an_approval_signed_by_anyone_but_the_owner_names_the_signer(client: TestClient) -> None:
    owner, agent, mallory = Trader(), Trader(), Trader()
    body = approval(owner, agent, signer=mallory)
    response = client.post("/v1/accounts/agents", json=body)
    assert error_of(response) == (401, "INVALID_SIGNATURE")
    assert mallory.address.lower() in response.json()["error"]["message"]
    assert client.get(f"/v1/accounts/{owner.address}/agents").json() == []


def test_a_replayed_approval_is_a_duplicate_even_after_a_revocation(client: TestClient) -> None:
    owner, agent = Trader(), Trader()
    body = approval(owner, agent)
    assert client.post("/v1/accounts/agents", json=body).status_code == 200
    revoke = signed(owner, "RevokeAgent", agent=agent.address)
    assert client.post("/v1/accounts/agents/revoke", json=revoke).status_code == 200
    assert error_of(client.post("/v1/accounts/agents", json=body)) == (409, "DUPLICATE")
    assert error_of(client.post("/v1/accounts/agents/revoke", json=revoke)) == (409, "DUPLICATE")
    assert client.get(f"/v1/accounts/{owner.address}/agents").json() == []


def test_an_agent_of_one_account_cannot_sign_for_another(client: TestClient) -> None:
    alice, bob, agent = Trader(), Trader(), Trader()
    client.post(
        "/v1/admin/deposits",
        json={"userId": bob.address, "asset": "USDC", "amount": 10_000_000_000},
        headers=ADMIN,
    )
    assert client.post("/v1/accounts/agents", json=approval(alice, agent)).status_code == 200
    response = client.post("/v1/orders", json=order(agent, bob))
    assert error_of(response) == (401, "INVALID_SIGNATURE")
    assert agent.address.lower() in response.json()["error"]["message"]
    cancel_all = signed(agent, "CancelAll", bob, market="")
    assert error_of(client.post("/v1/orders/cancel-all", json=cancel_all)) == (
        401,
        "INVALID_SIGNATURE",
    )


def test_malformed_approvals_are_refused_with_the_field_named(client: TestClient) -> None:
    owner, agent = Trader(), Trader()
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("huge name", approval(owner, agent, name="x" * 10_000), 400, "INVALID_REQUEST"),
        ("control name", approval(owner, agent, name="a\nb"), 400, "INVALID_REQUEST"),
        ("short agent", approval(owner, "0x12"), 400, "INVALID_REQUEST"),
        ("agent is owner", approval(owner, owner.address), 400, "INVALID_REQUEST"),
        ("scope", approval(owner, agent, scope="ADMIN"), 400, "INVALID_REQUEST"),
        ("market", approval(owner, agent, markets="NOPE"), 400, "UNKNOWN_MARKET"),
        ("repeated market", approval(owner, agent, markets=f"{SPOT},{SPOT}"), 400,
         "UNKNOWN_MARKET"),
        ("many markets", approval(owner, agent, markets=",".join([SPOT] * 1_000)), 400,
         "UNKNOWN_MARKET"),
        ("expired", approval(owner, agent, expires_at=now_ms() - 1), 400, "INVALID_REQUEST"),
        ("expiry 2^53", approval(owner, agent, expires_at=2**53), 400, "INVALID_REQUEST"),
        ("expiry 2^256", {**approval(owner, agent), "expiresAt": str(2**256)}, 400,
         "INVALID_REQUEST"),
        ("expiry text", {**approval(owner, agent), "expiresAt": "soon"}, 400, "INVALID_REQUEST"),
        ("scope number", {**approval(owner, agent), "scope": 1}, 400, "INVALID_REQUEST"),
        ("extra", {**approval(owner, agent), "admin": True}, 400, "INVALID_REQUEST"),
        ("stale", approval(owner, agent) | {"ts": 5}, 400, "STALE_TS"),
    ]  # fmt: skip
    for name, body, status, code in cases:
        assert error_of(client.post("/v1/accounts/agents", json=body)) == (status, code), name
    assert client.get(f"/v1/accounts/{owner.address}/agents").json() == []
    assert error_of(client.get("/v1/accounts/nobody/agents")) == (400, "INVALID_USER")


def test_an_account_holds_at_most_ten_agents(client: TestClient) -> None:
    owner = Trader()
    agents = [Trader() for _ in range(11)]
    for agent in agents[:10]:
        assert client.post("/v1/accounts/agents", json=approval(owner, agent)).status_code == 200
    response = client.post("/v1/accounts/agents", json=approval(owner, agents[10]))
    assert error_of(response) == (422, "LIMIT_EXCEEDED")
    assert "10 agent keys" in response.json()["error"]["message"]
    # Re-approving one already listed replaces it rather than counting twice.
    again = approval(owner, agents[0], scope="CANCEL_ONLY")
    assert client.post("/v1/accounts/agents", json=again).status_code == 200
    listed = client.get(f"/v1/accounts/{owner.address}/agents").json()
    assert len(listed) == 10
    assert {a["scope"] for a in listed if a["agent"] == agents[0].address.lower()} == {
        "CANCEL_ONLY"
    }


def test_info_publishes_the_agent_types(client: TestClient) -> None:
    types = client.get("/v1/info").json()["types"]
    assert [f["name"] for f in types["ApproveAgent"]] == [
        "userId", "agent", "name", "scope", "markets", "expiresAt", "ts"
    ]  # fmt: skip
    assert [f["name"] for f in types["RevokeAgent"]] == ["userId", "agent", "ts"]


def test_an_agent_of_any_scope_arms_the_owners_dead_mans_switch_within_its_markets(
    client: TestClient,
) -> None:
    owner, agent = Trader(), Trader()
    body = approval(owner, agent, scope="CANCEL_ONLY", markets=SPOT)
    assert client.post("/v1/accounts/agents", json=body).status_code == 200
    deadline = now_ms() + 60_000
    armed = signed(agent, "ScheduleCancel", owner, market=SPOT, deadline=deadline)
    response = client.post("/v1/orders/schedule-cancel", json=armed)
    assert response.status_code == 200, response.text
    assert response.json()["deadline"] == deadline
    everywhere = signed(agent, "ScheduleCancel", owner, market="", deadline=deadline)
    assert error_of(client.post("/v1/orders/schedule-cancel", json=everywhere)) == (
        403,
        "FORBIDDEN",
    )
    switches = client.get(f"/v1/orders/schedule-cancel/{owner.address}").json()
    assert [(s["market"], s["deadline"]) for s in switches] == [(SPOT, deadline)]
