"""The settle loop: a long-lived thread in each settle worker process that holds markets and
settles each as soon as its events are written, without a Celery task per round.

A loop holds a market under the market's settle lock (the one ``Ledger.settle_market``
takes, ``<settle-queued>:lock``) with a lease of ``LEASE_MS`` that it renews every
``RENEW_S`` (settle_lease.lua), and keeps the market's settle-queued flag standing while it
does: the matcher then queues no settle task for it (match.lua sets the flag with ``NX``),
the sweep skips it, and a task that comes anyway meets the lock and returns. Each held
market's rounds run in a thread of their own (``MarketRounds``): it blocks on the market's
event stream after the last entry settled (``XREAD BLOCK``) and settles as soon as an event
is written (``Ledger.drain``, the rounds of ``settle_market``), no sooner than
``round_gap_s`` after its previous round started; so a market's round never waits for
another market's. Exactly-once is the ledger's: every write goes through apply_ops.lua's
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

The loop runs on a single Redis; on a Redis Cluster settlement stays with the settle tasks
(``runs_on``), whose per-slot calls the cluster tests cover.
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
from common.direct import read_stream
from common.lua import ScriptSet
from common.markets import Market
from services.settler.ledger import FIRST_READ_ENTRIES, LUA_DIR, QUEUED_TTL_MS, Ledger

log = logging.getLogger(__name__)

LEASE_MS = 5000
"""How long a loop's hold on a market lasts without renewal: a dead loop's markets wait at
most this long for another holder (``DEX_SETTLE_LEASE_MS``)."""
RENEW_S = 0.5
"""How often a loop renews its holds, keeps the flags standing and takes or lets go of
markets (below the flag's 2 s lifetime, with room for a slow renewal)."""
REGISTRY = keys.settler_lease("settle-loops")
"""Zset: loop id -> when its registration lapses (ms): the live loops share the markets."""
MAX_BATCHES = 100


class SettleLoop:
    """One settle worker process's loop: its holds, renewed from a thread of its own, and a
    ``MarketRounds`` thread for each market held."""

    def __init__(
        self,
        client: Any,
        ledger: Ledger,
        markets: list[Market],
        round_gap_s: float,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.markets = {market.symbol: market for market in markets}
        self.round_gap_s = round_gap_s
        self.lease_ms = lease_ms
        self.id = uuid.uuid4().hex
        self.scripts = ScriptSet(client, LUA_DIR)
        self.held: dict[str, MarketRounds] = {}
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
        """Renew the holds every ``RENEW_S``; each held market's rounds run in its thread."""
        log.info("settle loop %s: started over %d markets", self.id[:8], len(self.markets))
        while not self.stopping.is_set():
            try:
                self.renew()
            except Exception:
                log.exception("settle loop %s: renewal failed", self.id[:8])
            self.stopping.wait(RENEW_S)

    def renew(self) -> None:
        """Renew the holds, keep the flags standing, take free markets up to this loop's
        share and let go of those above it."""
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(REGISTRY, {self.id: now_ms + self.lease_ms})
        pipe.zremrangebyscore(REGISTRY, "-inf", now_ms)
        pipe.zcard(REGISTRY)
        live = max(1, int(pipe.execute()[-1]))
        share = math.ceil(len(self.markets) / live)
        for symbol in list(self.held):
            if not self._hold(symbol):
                log.warning("settle loop %s: lost %s", self.id[:8], symbol)
                self.held.pop(symbol).stop(timeout=0)  # ends after its current round
        for symbol in self._order:
            if len(self.held) >= share or self.stopping.is_set():
                break
            if symbol not in self.held and self._hold(symbol):
                log.info("settle loop %s: holds %s", self.id[:8], symbol)
                rounds = MarketRounds(self, self.markets[symbol])
                self.held[symbol] = rounds
                rounds.start()
        for symbol in [s for s in reversed(self._order) if s in self.held]:
            if len(self.held) <= share:
                break
            self._let_go(symbol)

    def _hold(self, symbol: str) -> bool:
        held = self.scripts["settle_lease"](
            keys=[_lock(symbol), keys.market_settle_queued(symbol)],
            args=[self.id, self.lease_ms, QUEUED_TTL_MS],
        )
        return bool(held)

    def _let_go(self, symbol: str) -> None:
        """Stop the market's rounds, drop the flag, settle what was written before that (a
        later event's call sets the flag again and queues a task), then drop the lock; if such
        a task came meanwhile (it met the lock), settle once more, as its holder would have."""
        log.info("settle loop %s: lets go of %s", self.id[:8], symbol)
        rounds = self.held.pop(symbol, None)
        if rounds is not None:
            rounds.stop()
        market, flag = self.markets[symbol], keys.market_settle_queued(symbol)
        self.client.delete(flag)
        try:
            self.ledger.drain(market, MAX_BATCHES, _lock(symbol), self.lease_ms)
        finally:
            self.scripts["settle_lease"](keys=[_lock(symbol), flag], args=[self.id, 0, 0])
        if self.client.exists(flag):
            self.ledger.settle_market(market, max_seconds=0)


class MarketRounds:
    """The rounds of one held market, in a thread of their own: a market's round never waits
    for another's, and its Redis round trips overlap theirs."""

    def __init__(self, loop: SettleLoop, market: Market) -> None:
        self.loop = loop
        self.market = market
        self.stopping = threading.Event()
        self._thread = threading.Thread(
            target=self.run, name=f"settle-{market.symbol}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)

    def run(self) -> None:
        """Settle what was written before the hold, then round after round: block on the
        market's stream after the last entry settled (``XREAD BLOCK``) and settle as soon as
        an event is written, no sooner than ``round_gap_s`` after the previous round started;
        every ``RENEW_S`` without one, a round anyway (the safety net of the read)."""
        symbol = self.market.symbol
        stream, lock = keys.market_events(symbol), _lock(symbol)
        ledger, client = self.loop.ledger, self.loop.client
        after: str | None = None
        entries: list[Any] | None = None
        count = min(ledger.batch, FIRST_READ_ENTRIES)
        while not self.stopping.is_set() and not self.loop.stopping.is_set():
            try:
                started = time.monotonic()
                # the entries the wait read are the round's first (the ledger checks the cursor)
                prefetched = entries if after == ledger.settled_to(symbol) else None
                entries = None
                ledger.drain(self.market, MAX_BATCHES, lock, self.loop.lease_ms, prefetched)
                after = ledger.settled_to(symbol) or after
                if after is None:
                    after = client.get(keys.market_settled(symbol)) or "0-0"
                pause = started + self.loop.round_gap_s - time.monotonic()
                if pause > 0 and self.stopping.wait(pause):
                    break
                entries = read_stream(
                    ledger.direct, client, stream, after, count, int(RENEW_S * 1000)
                )
            except Exception:
                entries = None
                log.exception("settle loop: %s: round failed; again in 1 s", symbol)
                self.stopping.wait(1.0)
        ledger.release_direct()


def loops_live(client: Any) -> bool:
    """Whether a settle loop is registered and not lapsed."""
    return bool(client.zcount(REGISTRY, int(time.time() * 1000), "+inf"))


def _lock(symbol: str) -> str:
    return keys.market_settle_queued(symbol) + ":lock"


def runs_on(client: Any) -> bool:
    """Whether the loop can run on ``client``: a single Redis (see the module doc)."""
    return not isinstance(client, RedisCluster)
