"""The dead-man's switch: a signed ScheduleCancel arms it; at its deadline every open order of
the account (in one market, or in all) is cancelled with the reason DEADMAN.

Switches live in one zset, ``dex:deadman`` (member ``"<userId>|<market>"``, score the deadline
ms), so arming, listing and firing touch one slot only. Every gateway process fires them from
a loop every ``INTERVAL_S``: it XADDs a ``cancel_all`` (reason DEADMAN) to each market stream,
then removes the switch only if its deadline is still the one that fired (deadman_clear.lua).
A process killed between the two leaves the switch armed and any gateway fires it again, and a
cancel_all twice is harmless; nothing is lost, because the deadline is in Redis, not in a
process. The gateway is the firer (not a Celery beat task) because every gateway runs the loop:
killing one leaves the others firing, and a restarted one fires on its first round, whereas a
killed beat holds its lease for ``beat_lease_s`` and then adds a queue hop — past 1 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from common import keys
from common.events import COMMAND_FIELD, CancelAllCommand, dumps
from services.gateway import ratelimit, sessions, shapes, signed, twap
from services.gateway.context import Gateway
from services.gateway.transport import Commands

log = logging.getLogger("services.gateway.deadman")

INTERVAL_S = 0.25
BATCH = 500


async def schedule(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """Arm, renew (a later or earlier deadline) or disarm (deadline 0) one switch.

    Order of checks: the body (shapes.SCHEDULE_CANCEL: userId, market, deadline past or more
    than 24 h ahead), STALE_TS, INVALID_SIGNATURE, the user's rate limit, DUPLICATE.
    """
    message, sig = shapes.SCHEDULE_CANCEL.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    market = message["market"]
    deadline = int(message["deadline"])
    request = await signed.check_ts_and_signature(
        gateway, "ScheduleCancel", message, sig, user, market or None
    )
    await ratelimit.check_user(gateway, user)
    await signed.claim_signature(gateway, request)
    member = keys.deadman_member(user, market)
    if deadline:
        await gateway.redis.zadd(keys.deadman_switches(), {member: deadline})
    else:
        await gateway.redis.zrem(keys.deadman_switches(), member)
    return {"userId": user, "market": market, "deadline": deadline}


async def switches(gateway: Gateway, user: str) -> list[dict[str, Any]]:
    """The account's armed switches, market "" (every market) first."""
    markets = ["", *gateway.markets.markets]
    members = [keys.deadman_member(user, m) for m in markets]
    scores = await gateway.redis.zmscore(keys.deadman_switches(), members)
    return [
        {"userId": user, "market": m, "deadline": int(score)}
        for m, score in zip(markets, scores, strict=True)
        if score is not None
    ]


async def fire_due(gateway: Gateway, now_ms: int | None = None) -> int:
    """Fire every switch whose deadline has passed; return how many fired."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    due = cast(
        list[tuple[str, float]],
        await gateway.redis.zrangebyscore(
            keys.deadman_switches(), "-inf", now_ms, start=0, num=BATCH, withscores=True
        ),
    )
    for member, score in due:
        user, _, market = member.partition("|")
        symbols = [market] if market else list(gateway.markets.markets)
        await twap.end_all(gateway, user, symbols, "DEADMAN")
        sends = Commands()
        for symbol in symbols:
            command = CancelAllCommand(op="cancel_all", user=user, ts=now_ms, reason="DEADMAN")
            sends.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(command)})
        await gateway.transport.gather(sends)
        await gateway.transport.script(
            "deadman_clear", [keys.deadman_switches()], [member, int(score)]
        )
        log.warning("dead-man's switch of %s on %s fired (deadline %d)", user, market or "*", score)
    return len(due)


async def run_firer(gateway: Gateway, interval_s: float = INTERVAL_S) -> None:
    """Fire due switches and lapsed cancel-on-disconnect sessions (sessions.py) forever; a
    failed round (Redis away) is logged and retried."""
    while True:
        try:
            await fire_due(gateway)
            await sessions.fire_lapsed(gateway, also=twap.end_members)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("dead-man's switch round failed, retrying: %s", exc)
        await asyncio.sleep(interval_s)


def start(gateway: Gateway) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run_firer(gateway), name="deadman-firer")
