"""Signed requests other than orders (Cancel, CancelAll, Withdraw): parse, check, verify.

Each is accepted once: its EIP-712 digest is remembered under the account (``used_signature``)
for longer than the ``ts`` window, so a replay inside the window is a 409 and one outside it
is already STALE_TS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common import keys
from services.gateway import parsing
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode


@dataclass(frozen=True, slots=True)
class SignedRequest:
    primary_type: str
    message: dict[str, Any]
    signature: str
    user: str


def check_ts_and_signature(
    gateway: Gateway, primary_type: str, message: dict[str, Any], sig: str, user: str
) -> SignedRequest:
    """STALE_TS (400), then INVALID_SIGNATURE (401)."""
    parsing.ts_in_window(
        message["ts"], gateway.settings.signature_max_age_ms, int(time.time() * 1000)
    )
    if not gateway.verifier.verify(primary_type, message, sig, user):
        raise ApiError(ErrorCode.INVALID_SIGNATURE, "the signature does not recover to userId")
    return SignedRequest(primary_type, message, sig, user)


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
