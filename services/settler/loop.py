"""The settle loop: one long-lived thread per settle worker process that holds markets and
settles each as soon as its events are written, without a Celery task per round.

A loop holds a market under the market's settle lock (the one ``Ledger.settle_market``
takes, ``<settle-queued>:lock``) with a lease of ``LEASE_MS`` that it renews every
``RENEW_S`` (settle_lease.lua), and keeps the market's settle-queued flag standing while it
does: the matcher then queues no settle task for it (match.lua sets the flag with ``NX``),
the sweep skips it, and a task that comes anyway meets the lock and returns. Between rounds
the loop blocks on every held market's event stream at once (one ``XREAD BLOCK`` after the
last entry settled in each), and settles the markets that have new entries (``Ledger.drain``,
the holder's rounds of ``settle_market``), no sooner than ``round_gap_s`` after its
previous round started. Exactly-once is the ledger's: every write goes through apply_ops.lua's
eseq watermark, and the cursor after it.

Loops share the markets: each registers under ``dex:lease:settle-loops`` (a zset of loop id
-> lease expiry, ms) and holds at most ``ceil(markets / live loops)``, taking free markets
(in an order of its own, so loops do not race for the same one) and letting go of those above
its share. A loop that dies (kill -9) stops renewing: the flags lapse within 2 s, so the
matcher's next events queue settle tasks, which meet the lock until its lease lapses
(``LEASE_MS``); then a task or another loop settles the market, and a loop takes it over at
its next renewal. A loop that stops (the worker's warm shutdown) lets go of its markets:
it drops the flag, settles what came before, and drops the lock, so the matcher's next
events queue a task.

On a Redis Cluster the markets' streams live in different slots, which one ``XREAD`` cannot
read: there the loop does not run and settlement stays with the settle tasks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from typing import Any

from redis.cluster import RedisCluster

from common import keys
from common.lua import ScriptSet
from common.markets import Market
from services.settler.ledger import LUA_DIR, QUEUED_TTL_MS, Ledger

log = logging.getLogger(__name__)

LEASE_MS = 5000
"""How long a loop's hold on a market lasts without renewal: a dead loop's markets wait at
most this long for another holder."""
RENEW_S = 0.5
"""How often a loop renews its holds, keeps the flags standing and takes or lets go of
markets (below the flag's 2 s lifetime, with room for a slow renewal)."""
REGISTRY = keys.settler_lease("settle-loops")
"""Zset: loop id -> when its registration lapses (ms): the live loops share the markets."""
MAX_BATCHES = 100


class SettleLoop:
    def __init__(
        self, client: Any, ledger: Ledger, markets: list[Market], round_gap_s: float
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.markets = {market.symbol: market for market in markets}
        self.round_gap_s = round_gap_s
        self.id = uuid.uuid4().hex
        self.scripts = ScriptSet(client, LUA_DIR)
        self.held: dict[str, str] = {}  # market -> the entry id settled to (XREAD's start)
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # This loop's order of preference among the markets (the same for every renewal).
        self._order = sorted(
            self.markets, key=lambda s: hashlib.sha1(f"{self.id}:{s}".encode()).digest()
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="settle-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the rounds and let go of every market held."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for symbol in list(self.held):
            self._let_go(symbol)
        self.client.zrem(REGISTRY, self.id)

    def run(self) -> None:
        log.info("settle loop %s: started over %d markets", self.id[:8], len(self.markets))
        next_renewal = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + RENEW_S
                    self.renew()
                    ready = set(self.held)  # a round for each: the safety net of the XREAD
                else:
                    ready = self.wait(next_renewal)
                started = time.monotonic()
                for symbol in sorted(ready):
                    self.settle(symbol)
                pause = started + self.round_gap_s - time.monotonic()
                if pause > 0:
                    self.stopping.wait(pause)
            except Exception:
                log.exception("settle loop %s: round failed; again in %.1f s", self.id[:8], 1.0)
                self.stopping.wait(1.0)

    def wait(self, until: float) -> set[str]:
        """The held markets with an event after the last entry settled: as soon as one is
        written, or none at ``until``."""
        block_ms = int((until - time.monotonic()) * 1000)
        if not self.held:
            if block_ms > 0:
                self.stopping.wait(block_ms / 1000)
            return set()
        streams = {keys.market_events(symbol): after for symbol, after in self.held.items()}
        reply = self.client.xread(streams, count=1, block=max(1, block_ms))
        by_stream = {keys.market_events(symbol): symbol for symbol in self.held}
        return {by_stream[stream] for stream, _ in reply or [] if stream in by_stream}

    def settle(self, symbol: str) -> int:
        """A round of one held market: every event after its cursor."""
        settled = self.ledger.drain(self.markets[symbol], MAX_BATCHES, _lock(symbol))
        self.held[symbol] = self.ledger.settled_to(symbol) or self.held[symbol]
        return settled

    def renew(self) -> None:
        """Renew the holds, keep the flags standing, take free markets up to this loop's
        share and let go of those above it."""
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(REGISTRY, {self.id: now_ms + LEASE_MS})
        pipe.zremrangebyscore(REGISTRY, "-inf", now_ms)
        pipe.zcard(REGISTRY)
        live = max(1, int(pipe.execute()[-1]))
        share = math.ceil(len(self.markets) / live)
        for symbol in list(self.held):
            if not self._hold(symbol):
                log.warning("settle loop %s: lost %s", self.id[:8], symbol)
                del self.held[symbol]
        for symbol in self._order:
            if len(self.held) >= share:
                break
            if symbol not in self.held and self._hold(symbol):
                self._take(symbol)
        for symbol in [s for s in reversed(self._order) if s in self.held]:
            if len(self.held) <= share:
                break
            self._let_go(symbol)

    def _hold(self, symbol: str) -> bool:
        lock = _lock(symbol)
        flag = keys.market_settle_queued(symbol)
        held = self.scripts["settle_lease"](
            keys=[lock, flag], args=[self.id, LEASE_MS, QUEUED_TTL_MS]
        )
        return bool(held)

    def _take(self, symbol: str) -> None:
        log.info("settle loop %s: holds %s", self.id[:8], symbol)
        self.held[symbol] = self.client.get(keys.market_settled(symbol)) or "0-0"
        self.settle(symbol)  # what was written before the hold

    def _let_go(self, symbol: str) -> None:
        """Drop the flag, settle what was written before that (a later event's call sets the
        flag again and queues a task), then drop the lock; if such a task came meanwhile
        (it met the lock), settle once more, as its holder would have."""
        log.info("settle loop %s: lets go of %s", self.id[:8], symbol)
        self.held.pop(symbol, None)
        market, flag = self.markets[symbol], keys.market_settle_queued(symbol)
        self.client.delete(flag)
        try:
            self.ledger.drain(market, MAX_BATCHES, _lock(symbol))
        finally:
            self.scripts["settle_lease"](keys=[_lock(symbol), flag], args=[self.id, 0, 0])
        if self.client.exists(flag):
            self.ledger.settle_market(market, max_seconds=0)


def loops_live(client: Any) -> bool:
    """Whether a settle loop is registered and not lapsed."""
    return bool(client.zcount(REGISTRY, int(time.time() * 1000), "+inf"))


def _lock(symbol: str) -> str:
    return keys.market_settle_queued(symbol) + ":lock"


def runs_on(client: Any) -> bool:
    """Whether the loop can run on ``client``: a single Redis (see the module doc)."""
    return not isinstance(client, RedisCluster)
