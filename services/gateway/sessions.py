"""Cancel-on-disconnect sessions of the WebSocket order entry: when a session ends, every open
order of the accounts it holds (in the markets they traded on it) is cancelled with the reason
DISCONNECT.

A session lives in Redis, not in the process that holds its connection, so that it still fires
when that process dies: ``dex:{wsentry}:sessions`` is a zset of session ids by deadline (now +
``LEASE_MS``), which the holding gateway renews every ``RENEW_S``; ``dex:{wsentry}:session:<id>``
is the set of ``"<userId>|<market>"`` (``market`` "" = every market) it cancels. A member is
added only once a signed request of that account, in that market, has been accepted on the
connection (session_join.lua), so a session only ever cancels orders its connection could
have cancelled itself.

Ending: the holding gateway fires a closed session at once (:func:`fire_members`) and then
removes it (:func:`close`). A session whose gateway died lapses ``LEASE_MS`` after its last
renewal, and every gateway's dead-man's switch loop (deadman.py, every 0.25 s) fires lapsed
sessions (:func:`fire_lapsed`): the ``cancel_all`` commands first, then session_clear.lua
removes the session only if no renewal came in between. A firer killed between the two leaves
the session to the next round; a ``cancel_all`` twice cancels nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

from common import keys
from common.events import COMMAND_FIELD, CancelAllCommand, dumps
from services.gateway.context import Gateway
from services.gateway.transport import Commands

log = logging.getLogger("services.gateway.sessions")

LEASE_MS = 3_000
RENEW_S = 1.0
BATCH = 500


def member(user: str, market: str) -> str:
    return keys.deadman_member(user, market)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def open_session(gateway: Gateway, session: str, members: Iterable[str]) -> None:
    """Stand the session up (deadline now + ``LEASE_MS``) with the members already known."""
    transport = gateway.transport
    group = Commands()
    group.append(("ZADD", keys.entry_sessions(), _now_ms() + LEASE_MS, session))
    group.script(
        transport.scripts["session_join"],
        [keys.entry_sessions(), keys.entry_session(session)],
        [session, *members],
    )
    await transport.execute(group)


async def join(gateway: Gateway, session: str, members: Iterable[str]) -> bool:
    """Add members to a standing session; False if it has lapsed (and been fired)."""
    joined = await gateway.transport.script(
        "session_join",
        [keys.entry_sessions(), keys.entry_session(session)],
        [session, *members],
    )
    return bool(joined)


async def renew(gateway: Gateway, sessions: list[str]) -> list[bool]:
    """Push each session's deadline to now + ``LEASE_MS``; False for one that has lapsed."""
    if not sessions:
        return []
    deadline = _now_ms() + LEASE_MS
    group = Commands()
    for session in sessions:
        # XX: never stand a lapsed (fired) session up again; GT: never move a deadline back.
        group.append(("ZADD", keys.entry_sessions(), "XX", "GT", "CH", deadline, session))
    changed = await gateway.transport.execute(group)
    return [bool(c) for c in changed]


async def close(gateway: Gateway, session: str) -> None:
    """Remove a session whose cancels its own gateway has sent."""
    await gateway.transport.script(
        "session_clear", [keys.entry_sessions(), keys.entry_session(session)], [session, ""]
    )


async def fire_members(gateway: Gateway, members: Iterable[str], now_ms: int | None = None) -> int:
    """Send a ``cancel_all`` (reason DISCONNECT) for each member to its market (every market
    for ""); return how many commands were sent."""
    now_ms = _now_ms() if now_ms is None else now_ms
    sends = Commands()
    for held in members:
        user, _, market = held.partition("|")
        for symbol in [market] if market else list(gateway.markets.markets):
            command = CancelAllCommand(op="cancel_all", user=user, ts=now_ms, reason="DISCONNECT")
            sends.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(command)})
    if sends:
        await gateway.transport.gather(sends)
    return len(sends)


async def fire_lapsed(
    gateway: Gateway,
    now_ms: int | None = None,
    also: Callable[[Gateway, list[str]], Awaitable[object]] | None = None,
) -> int:
    """Fire every session whose deadline has passed (its gateway is gone); return how many.
    ``also`` is run first on each session's members (the TWAPs they end, twap.end_members)."""
    now_ms = _now_ms() if now_ms is None else now_ms
    due = cast(
        list[tuple[str, float]],
        await gateway.redis.zrangebyscore(
            keys.entry_sessions(), "-inf", now_ms, start=0, num=BATCH, withscores=True
        ),
    )
    for session, score in due:
        held = cast(set[str], await gateway.redis.smembers(keys.entry_session(session)))
        if also is not None:
            await also(gateway, sorted(held))
        await fire_members(gateway, sorted(held), now_ms)
        await gateway.transport.script(
            "session_clear",
            [keys.entry_sessions(), keys.entry_session(session)],
            [session, int(score)],
        )
        log.warning(
            "cancel-on-disconnect session %s lapsed (deadline %d): cancelled %s",
            session,
            score,
            ", ".join(sorted(held)) or "nothing",
        )
    return len(due)
