"""What the exchange did with the orders sent: trades seen on the WebSocket, fills settled,
where the time went, and the work still waiting in Redis.

Times are wall-clock (``time.time``) so the sender processes and the watcher share one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import websockets

from common import keys
from common.events import events_of
from lib.stats import summary


@dataclass
class Run:
    """One run's observations, keyed by the taker's client order id."""

    accepted_at: dict[str, float] = field(default_factory=dict)  # cid -> scheduled send time
    rejected: dict[str, int] = field(default_factory=dict)  # refusals per error code
    trade_seen_at: dict[str, float] = field(default_factory=dict)  # taker cid -> first trade
    trade_ts: dict[str, int] = field(default_factory=dict)  # taker cid -> the trade's ts (ms)
    taker_of: dict[str, str] = field(default_factory=dict)  # taker cid -> its user
    settled_at: dict[str, float] = field(default_factory=dict)  # sampled taker cid -> settled
    applied_at: dict[str, float] = field(default_factory=dict)  # sampled cid -> fill written
    trades: int = 0
    load_generator_cpu_s: float = 0.0  # the sender processes' own CPU time


async def watch_trades(
    ws_url: str,
    redis_url: str,
    markets: Iterable[str],
    run: Run,
    stop: asyncio.Event,
    sample_every: int,
) -> None:
    """Record every taker's first trade on ``trade:<market>`` until ``stop``; follow every
    ``sample_every``-th trade to its settlement."""
    settle_queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
    async with websockets.connect(ws_url, max_queue=None) as ws:
        for market in markets:
            await ws.send(orjson.dumps({"op": "subscribe", "topic": f"trade:{market}"}).decode())
        settler = asyncio.create_task(watch_settlement(redis_url, settle_queue, run))
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            received = time.time()
            message = orjson.loads(raw)
            if message.get("type") != "update":
                continue
            for trade in message["data"]:
                run.trades += 1
                buy = trade["takerSide"] == "BUY"
                taker_cid = trade["buyOid"] if buy else trade["sellOid"]
                taker = trade["buyer"] if buy else trade["seller"]
                if taker_cid in run.trade_seen_at:
                    continue
                run.trade_seen_at[taker_cid] = received
                run.trade_ts[taker_cid] = int(trade["ts"])
                run.taker_of[taker_cid] = taker
                if run.trades % sample_every == 0:
                    settle_queue.put_nowait((taker, trade["tradeId"], taker_cid))
        settler.cancel()


async def watch_settlement(
    redis_url: str, queue: asyncio.Queue[tuple[str, str, str]], run: Run
) -> None:
    """Sampled: poll every waiting taker's fills (written in the same script as its balances)
    together, every 2 ms, in one pipeline. Each sample is its own: one sample waiting for its
    settlement never delays another's observation (polling them one after the other did, and
    its queue made up most of the measured tail). The fill entry's stream id is Redis's clock
    when ``apply_ops.lua`` wrote it: the "applied" time, free of this poll's own delay."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    waiting: dict[str, tuple[str, str, float]] = {}  # cid -> (user, trade id, give up at)
    try:
        while True:
            while not queue.empty() or not waiting:
                user, trade_id, cid = await queue.get()
                waiting[cid] = (user, trade_id, time.time() + 30)
            pipe = client.pipeline(transaction=False)
            cids = list(waiting)
            for cid in cids:
                pipe.xrevrange(keys.account_fills(waiting[cid][0]), count=50)
            replies = await pipe.execute()
            now = time.time()
            for cid, fills in zip(cids, replies, strict=True):
                user, trade_id, give_up_at = waiting[cid]
                entry = next((i for i, f in fills if trade_id in f.get("f", "")), None)
                if entry is not None:
                    run.settled_at[cid] = now
                    run.applied_at[cid] = int(entry.partition("-")[0]) / 1000
                if entry is not None or now > give_up_at:
                    del waiting[cid]
            await asyncio.sleep(0.002)
    finally:
        await client.aclose()


def settlement_stages_ms(run: Run) -> dict[str, Any]:
    """Where the trade→settled time goes, per sampled taker: the matcher's call that made the
    trade (its ``ts``) to ``apply_ops.lua``'s write of the taker's fill (the settle trigger,
    the task's dispatch, the worker's rounds and the apply pipeline), and that write to this
    client's poll seeing it (≤ 2 ms plus the poll's own queueing)."""
    matched_to_applied, applied_to_seen = [], []
    for cid, applied in run.applied_at.items():
        if cid in run.trade_ts:
            matched_to_applied.append(applied * 1000 - run.trade_ts[cid])
            applied_to_seen.append((run.settled_at[cid] - applied) * 1000)
    return {
        "matched_to_applied": summary(matched_to_applied),
        "applied_to_seen": summary(applied_to_seen),
    }


def latencies_ms(run: Run, seen: dict[str, float]) -> list[float]:
    """Milliseconds from each accepted order's scheduled send to its time in ``seen``."""
    return [
        (at - run.accepted_at[cid]) * 1000 for cid, at in seen.items() if cid in run.accepted_at
    ]


def stages_ms(run: Run, client: redis.Redis, markets: list[str]) -> dict[str, Any]:
    """Where the send→trade time goes, per taker: the client's send to the gateway's
    ``acceptedAt`` (admission), to the matcher's call that made the trade (the trade's ``ts``:
    waiting on the stream), to the trade on the WebSocket (publication, broadcaster, client).
    All clocks are this machine's; the matcher's and gateway's are in whole milliseconds."""
    cids = [cid for cid in run.trade_ts if cid in run.accepted_at]
    # acceptedAt is the order's score in its account's listing (the accepted record is
    # deleted once the order's end is settled)
    pipe = client.pipeline(transaction=False)
    for cid in cids:
        for market in markets:
            pipe.zscore(keys.account_market_orders(run.taker_of[cid], market), cid)
    scores = pipe.execute()
    per = len(markets)
    accepted = {
        cid: next((s for s in scores[i * per : (i + 1) * per] if s is not None), None)
        for i, cid in enumerate(cids)
    }
    admission, queued, delivery = [], [], []
    for cid in cids:
        if accepted[cid] is None:
            continue
        sent, at, traded = run.accepted_at[cid] * 1000, int(accepted[cid]), run.trade_ts[cid]
        admission.append(at - sent)
        queued.append(traded - at)
        delivery.append(run.trade_seen_at[cid] * 1000 - traded)
    return {
        "send_to_accepted": summary(admission),
        "accepted_to_matched": summary(queued),
        "matched_to_websocket": summary(delivery),
    }


def backlog(client: redis.Redis, markets: Iterable[str]) -> dict[str, int]:
    """Entries the matcher has not read yet, and events the settler has not settled."""
    result = {"matcher": 0, "settler": 0}
    for market in markets:
        with contextlib.suppress(redis.ResponseError):
            for group in client.xinfo_groups(keys.market_in(market)):
                result["matcher"] += int(group.get("lag") or 0)
        settled = client.get(keys.market_settled(market)) or "0-0"
        unsettled = client.xrange(keys.market_events(market), min=f"({settled}", count=100_000)
        result["settler"] += sum(len(events_of(fields)) for _, fields in unsettled)
    return result


def events_written(client: redis.Redis, markets: Iterable[str]) -> int:
    """Settlement events the matcher has written in every market (its ``eseq`` counters)."""
    return sum(int(client.hget(keys.market_state(m), "eseq") or 0) for m in markets)
