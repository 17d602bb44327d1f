"""Signed writes sent a million times: the agent endpoints (approve, revoke) and the dead-man's
switch flooded by one address and by one user are refused 429 RATE_LIMITED with Retry-After,
as docs/api.md "Whose budget a write spends" says, and the refused ones change nothing.

The gateway runs in-process on a real Redis (its token buckets are rate_limit.lua there). A
bucket holds twice its rate: with a rate of 1 a flood gets 2 requests through at once, and at
most one more per second after that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from support.gateway import error_of, gateway_client
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

FLOOD = 40
RATE = 1  # tokens per second; the bucket holds 2


def signed(signer: Trader, primary: str, owner: Trader | None = None, **message: Any) -> dict:
    message.setdefault("userId", (owner or signer).address)
    message.setdefault("ts", int(time.time() * 1000))
    return {**message, "sig": sign(signer.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def approval(owner: Trader, agent: Trader, signer: Trader | None = None) -> dict[str, Any]:
    return signed(
        signer or owner, "ApproveAgent", owner, agent=agent.address, name="bot",
        scope="TRADE", markets="", expiresAt=0,
    )  # fmt: skip


def revocation(owner: Trader, agent: Trader) -> dict[str, Any]:
    return signed(owner, "RevokeAgent", agent=agent.address)


def switch(owner: Trader, deadline: int, signer: Trader | None = None) -> dict[str, Any]:
    return signed(signer or owner, "ScheduleCancel", owner, market="", deadline=deadline)


def flood(client: Any, path: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    return [client.post(path, json=body) for body in bodies]


def admitted_then_limited(responses: list[httpx.Response], admitted: int = 200) -> int:
    """The flood's first two pass, at most one more per second of flood, the rest are 429
    RATE_LIMITED with a Retry-After of whole seconds; returns how many passed."""
    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [admitted, admitted], [r.text for r in responses[:3]]
    assert set(statuses) == {admitted, 429}
    for response in responses:
        if response.status_code == 429:
            assert error_of(response) == (429, "RATE_LIMITED")
            assert int(response.headers["retry-after"]) >= 1
    return statuses.count(admitted)


def agents_of(client: Any, owner: Trader) -> list[str]:
    listed = client.get(f"/v1/accounts/{owner.address}/agents")
    assert listed.status_code == 200
    return sorted(a["agent"] for a in listed.json())


def lowered(traders: list[Trader]) -> list[str]:
    return sorted(t.address.lower() for t in traders)


def passed(responses: list[httpx.Response], bodies: list[dict[str, Any]]) -> list[dict]:
    return [b for r, b in zip(responses, bodies, strict=True) if r.status_code == 200]


def test_approvals_flooded_by_one_address_are_429_and_approve_nothing(redis_url: str) -> None:
    """Every approval from one address, each of another owner: the address's bucket decides."""
    with gateway_client(redis_url, rate_limit_ip=RATE) as client:
        pairs = [(Trader(), Trader()) for _ in range(FLOOD)]
        bodies = [approval(owner, agent) for owner, agent in pairs]
        started = time.monotonic()
        responses = flood(client, "/v1/accounts/agents", bodies)
        n = admitted_then_limited(responses)
        assert n <= 2 + int(RATE * (time.monotonic() - started)) + 1
    with gateway_client(redis_url) as reader:  # reads from a fresh budget
        for (owner, agent), response in zip(pairs, responses, strict=True):
            expected = [agent.address.lower()] if response.status_code == 200 else []
            assert agents_of(reader, owner) == expected


def test_revocations_flooded_by_one_user_are_429_and_revoke_nothing(redis_url: str) -> None:
    owner = Trader()
    agents = [Trader() for _ in range(8)]
    with gateway_client(redis_url) as client:
        for agent in agents:
            assert (
                client.post("/v1/accounts/agents", json=approval(owner, agent)).status_code == 200
            )
    with gateway_client(redis_url, rate_limit_user=RATE) as client:
        bodies = [revocation(owner, agent) for agent in agents]
        responses = flood(client, "/v1/accounts/agents/revoke", bodies)
        admitted_then_limited(responses)
        kept = [a for a, r in zip(agents, responses, strict=True) if r.status_code == 429]
        assert agents_of(client, owner) == lowered(kept)
        # another user's bucket is its own
        other, agent = Trader(), Trader()
        assert client.post("/v1/accounts/agents", json=approval(other, agent)).status_code == 200


def test_forged_approvals_in_a_users_name_spend_nothing_of_its_budget(redis_url: str) -> None:
    victim, attacker = Trader(), Trader()
    with gateway_client(redis_url, rate_limit_user=RATE) as client:
        forged = [approval(victim, Trader(), signer=attacker) for _ in range(FLOOD)]
        for response in flood(client, "/v1/accounts/agents", forged):
            assert error_of(response) == (401, "INVALID_SIGNATURE")
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        assert not r.exists(keys.rate_limit_user(victim.address.lower()))
        r.close()
        genuine = [approval(victim, Trader()) for _ in range(2)]
        assert [c.status_code for c in flood(client, "/v1/accounts/agents", genuine)] == [200, 200]


def flood_switches(
    client: Any, owner: Trader, signer: Callable[[int], Trader] | None = None
) -> tuple[list[httpx.Response], list[dict[str, Any]]]:
    """Switches with distinct deadlines (so each body is a fresh signature)."""
    base = int(time.time() * 1000) + 3_600_000
    bodies = [switch(owner, base + i, signer(i) if signer else None) for i in range(FLOOD)]
    return flood(client, "/v1/orders/schedule-cancel", bodies), bodies


def armed(client: Any, owner: Trader) -> list[int]:
    listed = client.get(f"/v1/orders/schedule-cancel/{owner.address}")
    assert listed.status_code == 200
    return [s["deadline"] for s in listed.json()]


def test_switches_flooded_by_one_user_are_429_and_the_last_admitted_deadline_stands(
    redis_url: str,
) -> None:
    """Half the switches signed by the owner's agent: an agent spends its owner's budget."""
    owner, agent = Trader(), Trader()
    with gateway_client(redis_url) as unlimited:
        assert unlimited.post("/v1/accounts/agents", json=approval(owner, agent)).status_code == 200
    with gateway_client(redis_url, rate_limit_user=RATE) as client:
        responses, bodies = flood_switches(client, owner, lambda i: agent if i % 2 else owner)
        admitted_then_limited(responses)
        assert armed(client, owner) == [passed(responses, bodies)[-1]["deadline"]]


def test_switches_flooded_by_one_address_are_429_and_arm_nothing(redis_url: str) -> None:
    """Each switch of another owner, all from one address."""
    with gateway_client(redis_url, rate_limit_ip=RATE) as client:
        owners = [Trader() for _ in range(FLOOD)]
        base = int(time.time() * 1000) + 3_600_000
        bodies = [switch(owner, base) for owner in owners]
        responses = flood(client, "/v1/orders/schedule-cancel", bodies)
        admitted_then_limited(responses)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    armed_members = set(r.zrange(keys.deadman_switches(), 0, -1))
    r.close()
    expected = {
        keys.deadman_member(owner.address.lower(), "")
        for owner, response in zip(owners, responses, strict=True)
        if response.status_code == 200
    }
    assert armed_members == expected


def test_cancel_replaces_flooded_by_one_user_are_429_and_place_nothing(redis_url: str) -> None:
    """An unfunded user: the admitted ones are refused by the account script (422), past the
    limiter; the rest never reach it. No order is recorded either way."""
    trader = Trader()
    with gateway_client(redis_url, rate_limit_user=RATE) as client:
        order = {
            "market": "BTC-USDC", "side": "BUY", "type": "LIMIT", "price": 3_000_000,
            "qty": 1_000, "product": "SPOT", "timeInForce": "GTC", "reduceOnly": False,
            "expiresAt": 0, "cancelClientOrderId": "f-old",
        }  # fmt: skip
        bodies = [
            signed(trader, "CancelReplace", clientOrderId=f"f-{n}", **order) for n in range(FLOOD)
        ]
        responses = flood(client, "/v1/orders/cancel-replace", bodies)
        admitted_then_limited(responses, admitted=422)
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        assert r.hlen(keys.account_cids(trader.address.lower())) == 0
        r.close()


def test_approvals_flooded_by_one_user_are_429_and_approve_nothing(redis_url: str) -> None:
    owner = Trader()
    agents = [Trader() for _ in range(FLOOD)]
    with gateway_client(redis_url, rate_limit_user=RATE) as client:
        responses = flood(client, "/v1/accounts/agents", [approval(owner, a) for a in agents])
        admitted_then_limited(responses)
        approved = [a for a, r in zip(agents, responses, strict=True) if r.status_code == 200]
        assert agents_of(client, owner) == lowered(approved)


def test_revocations_flooded_by_one_address_are_429_and_revoke_nothing(redis_url: str) -> None:
    pairs = [(Trader(), Trader()) for _ in range(FLOOD)]
    with gateway_client(redis_url) as client:
        for owner, agent in pairs:
            assert (
                client.post("/v1/accounts/agents", json=approval(owner, agent)).status_code == 200
            )
    with gateway_client(redis_url, rate_limit_ip=RATE) as client:
        bodies = [revocation(owner, agent) for owner, agent in pairs]
        responses = flood(client, "/v1/accounts/agents/revoke", bodies)
        admitted_then_limited(responses)
    with gateway_client(redis_url) as reader:
        for (owner, agent), response in zip(pairs, responses, strict=True):
            expected = [] if response.status_code == 200 else [agent.address.lower()]
            assert agents_of(reader, owner) == expected
