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
from typing import Any

from common import keys
from common.events import loads
from services.gateway.context import Gateway
from services.gateway.withdrawals import RECORD_FIELD

log = logging.getLogger("services.gateway.outbox")

MIN_AGE_MS = 3_000
INTERVAL_S = 1.0


async def sweep_once(gateway: Gateway, min_age_ms: int = MIN_AGE_MS) -> int:
    """Re-send every stale outbox entry of every registered account; return how many.

    One pipelined probe per page of accounts; only accounts with something to do cost more.
    """
    client = gateway.redis
    sent = 0
    older_than_ms = int(time.time() * 1000) - min_age_ms
    cursor = 0
    while True:
        cursor, users = await client.sscan(keys.outbox_accounts(), cursor=cursor, count=500)
        if users:
            pipe = client.pipeline(transaction=False)
            for user in users:
                pipe.zrangebyscore(keys.outbox(user), "-inf", older_than_ms, start=0, num=500)
                pipe.zcard(keys.outbox(user))
                pipe.hlen(keys.withdrawals_pending(user))
            probe = await pipe.execute()
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
        market, command = await client.hmget(keys.account_order(user, cid), ["market", "cmd"])
        if market is not None and command is not None:
            await client.xadd(keys.market_in(market), {"c": command})
            log.warning("outbox: re-sent order %s of %s to %s", cid, user, market)
            sent += 1
        await client.zrem(keys.outbox(user), cid)
    return sent


async def _resend_withdrawals(gateway: Gateway, user: str, older_than_ms: int) -> int:
    client = gateway.redis
    sent = 0
    pending: dict[str, str] = await client.hgetall(keys.withdrawals_pending(user))
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
    client = gateway.redis
    await client.srem(keys.outbox_accounts(), *users)
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.zcard(keys.outbox(user))
        pipe.hlen(keys.withdrawals_pending(user))
    counts = await pipe.execute()
    back = [u for i, u in enumerate(users) if counts[2 * i] or counts[2 * i + 1]]
    if back:
        await client.sadd(keys.outbox_accounts(), *back)


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


class Clearer:
    """Removes delivered outbox entries in batches, one pipelined round trip per batch."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pending: list[tuple[str, str]] = []
        self._flushing: asyncio.Task[None] | None = None

    def clear(self, user: str, cid: str) -> None:
        self._pending.append((user, cid))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the requests of this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending, []
            pipe = self._client.pipeline(transaction=False)
            for user, cid in batch:
                pipe.zrem(keys.outbox(user), cid)
            try:
                await pipe.execute()
            except Exception as exc:
                log.warning(
                    "outbox: %d entries not cleared (the sweeper will): %s", len(batch), exc
                )

    async def drain(self) -> None:
        if self._flushing is not None:
            await self._flushing


def start(gateway: Gateway) -> Any:
    return asyncio.get_running_loop().create_task(run_sweeper(gateway), name="outbox-sweeper")
