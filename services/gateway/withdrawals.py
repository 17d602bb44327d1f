"""Signed withdrawals: debit the account and hand the record to the chain relayer.

The debit and the record are one account-slot script; copying the record to the relayer's
stream is a second step whose failure the outbox sweeper repairs (the record stays in the
account's pending hash until copied; the relayer keys on ``withdrawalId``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from common import keys, money
from common.events import dumps, loads
from services.gateway import accounts, funds, ratelimit, shapes, signed
from services.gateway.context import MEMORY_HIGH_MESSAGE, Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

RECORD_FIELD = "w"
ACCOUNT_WITHDRAWALS_KEPT = 1000
"""Newest records an account's withdrawal list keeps (XADD MAXLEN, exact): the most one read
returns (``limit`` caps at 1000). Older ones leave it; the relayer's stream has them all."""
log = logging.getLogger("services.gateway")


async def withdraw(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    message, sig = shapes.WITHDRAW.parse_signed(body, gateway.markets)
    amount = message["amount"]  # atomic units, as signed; the account is debited in quanta
    user = message["userId"].lower()
    asset = message["asset"]
    quanta = accounts.quanta(gateway.markets.assets[asset], amount)
    request = await signed.check_ts_and_signature(gateway, "Withdraw", message, sig, user)
    await ratelimit.check_user(gateway, user)
    if quanta >= money.LIMIT:
        # No balance reaches 2^53 quanta, so the first 422 code that applies is this one.
        raise ApiError(ErrorCode.INSUFFICIENT_BALANCE, f"{user} lacks {amount} {asset}")
    if await gateway.memory_high():
        raise ApiError(ErrorCode.OVERLOADED, MEMORY_HIGH_MESSAGE)
    digest = signed.digest_hex(gateway, request)
    withdrawal_id = "w-" + digest[:32]
    is_margin = asset in funds.margin_assets(gateway.markets)
    adjustment = 0
    if is_margin:
        adjustment, _ = await funds.adjustment_for(gateway, user, asset)
    record = {
        "withdrawalId": withdrawal_id,
        "userId": user,
        "asset": asset,
        "amount": str(amount),
        "status": "PENDING",
        "ts": int(time.time() * 1000),
    }
    encoded = dumps(record)
    script_keys = [
        keys.balances(user),
        keys.used_signature(user, digest),
        keys.account_withdrawals(user),
        keys.withdrawals_pending(user),
    ]
    args = [
        asset,
        quanta,
        adjustment,
        "1" if is_margin else "0",
        withdrawal_id,
        encoded,
        signed.replay_ttl_ms(gateway),
        ACCOUNT_WITHDRAWALS_KEPT,
    ]
    # The account joins the sweeper's registry before its pending hash can hold anything.
    _, verdict = await gateway.transport.execute(
        Commands()
        .sadd(keys.outbox_accounts(), user)
        .script(gateway.transport.scripts["withdraw"], script_keys, args)
    )
    if verdict == "DUPLICATE":
        raise ApiError(ErrorCode.DUPLICATE, "this Withdraw signature was already used")
    if verdict in ("INSUFFICIENT_BALANCE", "INSUFFICIENT_MARGIN"):
        kind = "available balance" if verdict == "INSUFFICIENT_BALANCE" else "free collateral"
        raise ApiError(ErrorCode[verdict], f"{user} lacks {amount} {asset} of {kind}")
    await hand_to_relayer(gateway, user, withdrawal_id, encoded)
    return {k: record[k] for k in ("withdrawalId", "userId", "asset", "amount", "status")}


async def hand_to_relayer(gateway: Gateway, user: str, withdrawal_id: str, record: str) -> None:
    """Copy a pending record to the relayer's stream, then drop it from the pending hash."""
    try:
        await gateway.redis.xadd(keys.withdrawal_requests(), {RECORD_FIELD: record})
        await gateway.redis.hdel(keys.withdrawals_pending(user), withdrawal_id)
    except Exception:
        log.warning(
            "withdrawal %s is debited but not yet handed to the relayer; the sweeper will",
            withdrawal_id,
            exc_info=True,
        )


async def list_withdrawals(gateway: Gateway, user: str, limit: int) -> list[dict[str, Any]]:
    """The account's withdrawals, newest first."""
    entries = cast(
        list[tuple[str, dict[str, str]]],
        await gateway.redis.xrevrange(keys.account_withdrawals(user), count=limit),
    )
    records = [loads(fields[RECORD_FIELD]) for _, fields in entries]
    # The bridge records each step past PENDING in the account's wd-state hash (services/bridge).
    states = (
        await gateway.redis.hmget(
            keys.withdrawal_states(user), [record["withdrawalId"] for record in records]
        )
        if records
        else []
    )
    result = []
    for record, state in zip(records, states, strict=True):
        shown = {k: record[k] for k in ("withdrawalId", "asset", "amount", "status", "ts")}
        if state:
            progress = loads(state)
            shown["status"] = progress["status"]
            if progress.get("txHash"):
                shown["txHash"] = progress["txHash"]
        result.append(shown)
    return result
