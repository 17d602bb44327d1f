"""Agent keys: the owner of an account approves another address to sign its orders and cancels
(API.md "Agent keys"), lists them, and revokes them.

Only the owner's own signature approves or revokes; an agent's is refused (403 FORBIDDEN). An
approval is accepted once (its digest is claimed like a Cancel's) and an account holds at most
``MAX_AGENTS`` unexpired ones. Every signed request reads the agent's record afresh
(``signed.authorize``), so a revocation holds from the next request on; revoking also ends the
TWAPs the agent signed (reason AGENT_REVOKED), and a TWAP slice is never sent for an agent
whose approval no longer covers it (twap.py, accept_slice.lua).
"""

from __future__ import annotations

import time
from typing import Any

from common import keys
from common.events import loads
from services.gateway import ratelimit, shapes, signed, twap
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

MAX_AGENTS = 10
"""Unexpired agent keys an account may hold at once."""


async def owner_request(
    gateway: Gateway, primary_type: str, message: dict[str, Any], sig: str
) -> signed.SignedRequest:
    """STALE_TS (400), then the owner's signature: 401 naming the address recovered, or 403
    when that address is one of the account's agents."""
    user = message["userId"].lower()
    request = signed.SignedRequest(primary_type, message, sig, user)
    signed.check_ts(gateway, message)
    signer = signed.recover_signer(gateway, primary_type, message, sig)
    if signer == user:
        return request
    if await signed.read_agent(gateway, user, signer) is not None:
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"the signature recovers {signer}, an agent of {user}: only {user} itself may sign "
            f"a {primary_type}",
        )
    raise ApiError(
        ErrorCode.INVALID_SIGNATURE,
        f"the signature recovers {signer}, not {user}: only {user} itself may sign a "
        f"{primary_type}",
    )


async def approve(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    message, sig = shapes.APPROVE_AGENT.parse_signed(body, gateway.markets)
    request = await owner_request(gateway, "ApproveAgent", message, sig)
    user, agent = request.user, message["agent"].lower()
    await ratelimit.check_user(gateway, user)
    now_ms = int(time.time() * 1000)
    verdict = await gateway.transport.script(
        "approve_agent",
        [keys.account_agents(user), keys.used_signature(user, signed.digest_hex(gateway, request))],
        [
            agent,
            signed.agent_record(message, now_ms).decode(),
            MAX_AGENTS,
            signed.replay_ttl_ms(gateway),
            now_ms,
        ],
    )
    if verdict == "DUPLICATE":
        raise ApiError(ErrorCode.DUPLICATE, "this ApproveAgent signature was already used")
    if verdict == "TOO_MANY_AGENTS":
        raise ApiError(
            ErrorCode.LIMIT_EXCEEDED,
            f"{user} already has {MAX_AGENTS} agent keys, the most allowed; revoke one first",
        )
    return agent_view(agent, loads(signed.agent_record(message, now_ms)))


async def revoke(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    message, sig = shapes.REVOKE_AGENT.parse_signed(body, gateway.markets)
    request = await owner_request(gateway, "RevokeAgent", message, sig)
    user, agent = request.user, message["agent"].lower()
    await ratelimit.check_user(gateway, user)
    await signed.claim_signature(gateway, request)
    (removed,) = await gateway.transport.execute(Commands().hdel(keys.account_agents(user), agent))
    if not removed:
        raise ApiError(ErrorCode.NOT_FOUND, f"{agent} is not an agent of {user}")
    await twap.end_agent(gateway, user, agent, "AGENT_REVOKED")
    return {"agent": agent, "revoked": True}


def agent_view(agent: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent": agent,
        "name": record["name"],
        "scope": record["scope"],
        "markets": record["markets"],
        "expiresAt": int(record["expiresAt"]),
        "approvedAt": int(record["approvedAt"]),
    }


async def list_agents(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    """The account's unexpired agent keys, oldest approval first."""
    raw = await gateway.redis.hgetall(keys.account_agents(user))
    now_ms = int(time.time() * 1000)
    views = [agent_view(str(agent), loads(record)) for agent, record in raw.items()]
    live = [v for v in views if not v["expiresAt"] or v["expiresAt"] > now_ms]
    return sorted(live, key=lambda v: (v["approvedAt"], v["agent"]))
