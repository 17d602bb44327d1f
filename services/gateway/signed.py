"""Signed requests other than orders (Cancel, CancelAll, Withdraw): parse, check, verify.

Each is accepted once: its EIP-712 digest is remembered under the account (``used_signature``)
for longer than the ``ts`` window, so a replay inside the window is a 409 and one outside it
is already STALE_TS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from common import keys
from common.eip712 import SignatureError
from common.events import loads
from services.gateway import parsing
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands


@dataclass(frozen=True, slots=True)
class SignedRequest:
    primary_type: str
    message: dict[str, Any]
    signature: str
    user: str
    agent: str | None = None


async def check_ts_and_signature(
    gateway: Gateway,
    primary_type: str,
    message: dict[str, Any],
    sig: str,
    user: str,
    market: str | None = None,
) -> SignedRequest:
    """STALE_TS (400), then INVALID_SIGNATURE (401), then an agent's FORBIDDEN (403): see
    :func:`authorize`."""
    agent = await authorize(gateway, primary_type, message, sig, user, market)
    return SignedRequest(primary_type, message, sig, user, agent)


def digest_hex(gateway: Gateway, request: SignedRequest) -> str:
    return gateway.verifier.digest(request.primary_type, request.message).hex()


def replay_ttl_ms(gateway: Gateway) -> int:
    """A used signature is remembered for twice the window plus a minute: past that its ts is
    stale anyway."""
    return 2 * gateway.settings.signature_max_age_ms + 60_000


async def signature_used(gateway: Gateway, request: SignedRequest) -> bool:
    key = keys.used_signature(request.user, digest_hex(gateway, request))
    return bool(await gateway.redis.exists(key))


async def claim_signature(gateway: Gateway, request: SignedRequest) -> None:
    """Mark the signature used; 409 DUPLICATE if it already was (SET NX, so races lose)."""
    key = keys.used_signature(request.user, digest_hex(gateway, request))
    claimed = await gateway.redis.set(key, "1", nx=True, px=replay_ttl_ms(gateway))
    if not claimed:
        raise ApiError(
            ErrorCode.DUPLICATE, f"this {request.primary_type} signature was already used"
        )


# -- agent keys (API.md "Agent keys") ---------------------------------------------------------

TRADE = "TRADE"


def check_ts(gateway: Gateway, message: dict[str, Any]) -> None:
    """400 STALE_TS unless ``ts`` is within the window of the server clock."""
    parsing.ts_in_window(
        message["ts"], gateway.settings.signature_max_age_ms, int(time.time() * 1000)
    )


def recover_signer(gateway: Gateway, primary_type: str, message: dict[str, Any], sig: str) -> str:
    """The lower-case address that signed ``message``; 401 INVALID_SIGNATURE if none does."""
    try:
        return gateway.verifier.recover(primary_type, message, sig)
    except SignatureError as exc:
        raise ApiError(ErrorCode.INVALID_SIGNATURE, f"the signature is not valid: {exc}") from None


async def read_agent(gateway: Gateway, user: str, agent: str) -> dict[str, Any] | None:
    """``agent``'s record under ``user`` (read fresh: a revocation holds from the next request)."""
    (raw,) = await gateway.transport.execute(Commands().hget(keys.account_agents(user), agent))
    return None if raw is None else dict(loads(raw))


async def authorize(
    gateway: Gateway,
    primary_type: str,
    message: dict[str, Any],
    sig: str,
    user: str,
    market: str | None,
) -> str | None:
    """Check ``ts`` (400 STALE_TS) and who signed: None for the owner, else the approved agent's
    address, for an order (``Order``/``OrderV2``/``CancelReplace``), an amend, a cancel, a
    dead-man's switch or a ``SetLeverage`` only (an order, an amend or a leverage: a TRADE
    agent's).
    401 INVALID_SIGNATURE names the recovered address when it is neither the owner nor an agent
    of it (or the agent's approval has expired); 403 FORBIDDEN when an agent acts beyond its
    scope or markets (``market`` None: every market)."""
    found = await agent_signer(gateway, primary_type, message, sig, user)
    if found is None:
        return None
    signer, record = found
    places = primary_type in ("Order", "OrderV2", "OrderV3", "OrderV4", "CancelReplace", "Amend")
    places = places or primary_type == "Twap"
    places = places or primary_type == "SetLeverage"  # a TRADE agent's, in its markets
    if not places and primary_type not in ("Cancel", "CancelAll", "ScheduleCancel"):
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{signer} is an agent of {user}: an agent cannot sign a {primary_type}",
        )
    if places:
        check_trade_scope(signer, record, user)
    check_agent_markets(signer, record, user, market)
    return signer


async def authorize_batch(
    gateway: Gateway,
    message: dict[str, Any],
    sig: str,
    user: str,
    markets: list[str],
    places: bool,
) -> str | None:
    """:func:`authorize` for a signed Batch: an agent signs one if its scope is TRADE, or
    CANCEL_ONLY for a batch of cancels only (``places`` False), and only if every market of
    ``markets`` (those the actions name) is among its own."""
    found = await agent_signer(gateway, "Batch", message, sig, user)
    if found is None:
        return None
    signer, record = found
    if places:
        check_trade_scope(signer, record, user)
    for market in markets:
        check_agent_markets(signer, record, user, market)
    return signer


async def agent_signer(
    gateway: Gateway, primary_type: str, message: dict[str, Any], sig: str, user: str
) -> tuple[str, dict[str, Any]] | None:
    """STALE_TS (400), then who signed: None for the owner, else the agent and its record;
    401 INVALID_SIGNATURE when it is neither, or the agent's approval has expired."""
    check_ts(gateway, message)
    signer = recover_signer(gateway, primary_type, message, sig)
    if signer == user:
        return None
    record = await read_agent(gateway, user, signer)
    if record is None:
        raise ApiError(
            ErrorCode.INVALID_SIGNATURE,
            f"the signature recovers {signer}, which is neither {user} nor an approved agent of it",
        )
    expires_at = int(record.get("expiresAt", 0))
    if expires_at and expires_at <= int(time.time() * 1000):
        raise ApiError(
            ErrorCode.INVALID_SIGNATURE,
            f"the signature recovers {signer}, whose approval as an agent of {user} expired at "
            f"{expires_at}",
        )
    return signer, record


def check_trade_scope(signer: str, record: dict[str, Any], user: str) -> None:
    """403 FORBIDDEN unless the agent may place orders (scope TRADE)."""
    if record.get("scope") != TRADE:
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{signer} is a {record.get('scope')} agent of {user}: it cannot place or amend orders",
        )


def check_agent_markets(signer: str, record: dict[str, Any], user: str, market: str | None) -> None:
    """403 FORBIDDEN when the agent's markets leave out ``market`` (None: every market)."""
    allowed = [m for m in str(record.get("markets", "")).split(",") if m]
    if allowed and (market is None or market not in allowed):
        where = f"market {market}" if market else "every market"
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{signer} is an agent of {user} for {','.join(allowed)} only, not {where}",
        )


def agent_record(message: dict[str, Any], now_ms: int) -> bytes:
    """The stored record of an ApproveAgent."""
    return orjson.dumps(
        {
            "name": message["name"],
            "scope": message["scope"],
            "markets": message["markets"],
            "expiresAt": message["expiresAt"],
            "approvedAt": now_ms,
        }
    )
