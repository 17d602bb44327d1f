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
IDLE_FORGET_S = 60


async def sweep_once(gateway: Gateway, min_age_ms: int = MIN_AGE_MS) -> int:
    """Re-send every stale outbox entry of every registered account; return how many."""
    client = gateway.redis
    sent = 0
    now_ms = int(time.time() * 1000)
    cursor = 0
    while True:
        cursor, users = await client.sscan(keys.outbox_accounts(), cursor=cursor, count=500)
        for user in users:
            sent += await _sweep_account(gateway, user, now_ms - min_age_ms)
        if cursor == 0:
            return sent


async def _sweep_account(gateway: Gateway, user: str, older_than_ms: int) -> int:
    client = gateway.redis
    sent = 0
    cids = await client.zrangebyscore(keys.outbox(user), "-inf", older_than_ms, start=0, num=500)
    for cid in cids:
        record = await client.hmget(keys.account_order(user, cid), ["market", "cmd"])
        market, command = record
        if market is not None and command is not None:
            await client.xadd(keys.market_in(market), {"c": command})
            log.warning("outbox: re-sent order %s of %s to %s", cid, user, market)
            sent += 1
        await client.zrem(keys.outbox(user), cid)
    pending: dict[str, str] = await client.hgetall(keys.withdrawals_pending(user))
    for withdrawal_id, record_text in pending.items():
        if int(loads(record_text).get("ts", 0)) > older_than_ms:
            continue
        await client.xadd(keys.withdrawal_requests(), {RECORD_FIELD: record_text})
        await client.hdel(keys.withdrawals_pending(user), withdrawal_id)
        log.warning("outbox: re-sent withdrawal %s of %s to the relayer", withdrawal_id, user)
        sent += 1
    if not cids and not pending:
        await _forget_if_idle(gateway, user)
    return sent


async def _forget_if_idle(gateway: Gateway, user: str) -> None:
    """Drop an account from the registry when nothing of it waits, re-adding it if an
    admission slipped in between (admission registers the account before it reserves)."""
    client = gateway.redis
    await client.srem(keys.outbox_accounts(), user)
    waiting = await client.zcard(keys.outbox(user)) + await client.hlen(
        keys.withdrawals_pending(user)
    )
    if waiting:
        await client.sadd(keys.outbox_accounts(), user)


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
