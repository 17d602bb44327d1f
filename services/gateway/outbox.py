"""The outbox sweeper: deliver what an admission reserved but never sent.

Admission reserves and records in the account's slot, then XADDs to the market's stream and
clears the outbox entry. A gateway killed in between leaves the entry behind; this background
task (one per gateway process) re-sends every entry older than ``MIN_AGE_MS`` and clears it.
A command sent twice is harmless: the matcher ignores an order whose record exists, and the
relayer keys withdrawals on their id. Several gateways sweeping at once only duplicate sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from common import keys
from common.events import COMMAND_FIELD, loads
from services.gateway.context import Gateway
from services.gateway.transport import Commands
from services.gateway.withdrawals import RECORD_FIELD

log = logging.getLogger("services.gateway.outbox")

MIN_AGE_MS = 3_000
INTERVAL_S = 1.0


async def sweep_once(gateway: Gateway, min_age_ms: int = MIN_AGE_MS) -> int:
    """Re-send every stale outbox entry of every registered account; return how many.

    One pipelined probe per page of accounts; only accounts with something to do cost more.
    """
    sent = 0
    older_than_ms = int(time.time() * 1000) - min_age_ms
    cursor = 0
    while True:
        cursor, found = await gateway.redis.sscan(keys.outbox_accounts(), cursor=cursor, count=500)
        users = cast(list[str], found)
        if users:
            probes = Commands()
            for user in users:
                probes.zrange_by_score(keys.outbox(user), "-inf", older_than_ms, 500)
                probes.zcard(keys.outbox(user))
                probes.hlen(keys.withdrawals_pending(user))
            probe = await gateway.transport.gather(probes)
            idle = []
            for index, user in enumerate(users):
                stale, waiting, pending = probe[3 * index : 3 * index + 3]
                if stale:
                    sent += await _resend_orders(gateway, user, stale)
                if pending:
                    sent += await _resend_withdrawals(gateway, user, older_than_ms)
                if not waiting and not pending:
                    idle.append(user)
            if idle:
                await _forget_if_idle(gateway, idle)
        if cursor == 0:
            return sent


async def _resend_orders(gateway: Gateway, user: str, cids: list[str]) -> int:
    client = gateway.redis
    sent = 0
    for cid in cids:
        market, command = cast(
            list[str | None], await client.hmget(keys.account_order(user, cid), ["market", "cmd"])
        )
        if market is not None and command is not None:
            await client.xadd(keys.market_in(market), {COMMAND_FIELD: command})
            log.warning("outbox: re-sent order %s of %s to %s", cid, user, market)
            sent += 1
        await client.zrem(keys.outbox(user), cid)
    return sent


async def _resend_withdrawals(gateway: Gateway, user: str, older_than_ms: int) -> int:
    client = gateway.redis
    sent = 0
    pending = cast(dict[str, str], await client.hgetall(keys.withdrawals_pending(user)))
    for withdrawal_id, record_text in pending.items():
        if int(loads(record_text).get("ts", 0)) > older_than_ms:
            continue
        await client.xadd(keys.withdrawal_requests(), {RECORD_FIELD: record_text})
        await client.hdel(keys.withdrawals_pending(user), withdrawal_id)
        log.warning("outbox: re-sent withdrawal %s of %s to the relayer", withdrawal_id, user)
        sent += 1
    return sent


async def _forget_if_idle(gateway: Gateway, users: list[str]) -> None:
    """Drop accounts from the registry when nothing of theirs waits, re-adding any that an
    admission slipped into meanwhile (admission registers the account before it reserves)."""
    await gateway.redis.srem(keys.outbox_accounts(), *users)
    counts = Commands()
    for user in users:
        counts.zcard(keys.outbox(user))
        counts.hlen(keys.withdrawals_pending(user))
    waiting = await gateway.transport.gather(counts)
    back = [u for i, u in enumerate(users) if waiting[2 * i] or waiting[2 * i + 1]]
    if back:
        await gateway.redis.sadd(keys.outbox_accounts(), *back)


async def run_sweeper(gateway: Gateway, interval_s: float = INTERVAL_S) -> None:
    """Sweep forever; a failed round (Redis away) is logged and retried next interval."""
    while True:
        try:
            await sweep_once(gateway)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("outbox sweep failed, retrying in %.0f s: %s", interval_s, exc)
        await asyncio.sleep(interval_s)


def start(gateway: Gateway) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run_sweeper(gateway), name="outbox-sweeper")
