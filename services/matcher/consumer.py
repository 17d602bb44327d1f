"""Consume one market's command stream and run the matching script over each batch.

Crash-only: start-up and recovery are one path. A consumer first takes the market's lease
(one matcher per market; a second one waits and takes over when the lease lapses), claims
every entry a previous owner read but never acknowledged (XAUTOCLAIM, carrying the cursor),
re-reads its own pending entries in id order, then new ones. The script records the last
stream id it applied and refuses to run for a process that lost the lease, so a batch applied
before a crash is skipped when it comes round again; entries are acknowledged only after the
script has run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from common import keys, pubsub
from common.direct import direct_connection, read_stream
from common.lua import ScriptSet
from common.markets import Market

log = logging.getLogger(__name__)

LUA_DIR = Path(__file__).parent / "lua"
TRADES_MAXLEN = 100_000
DEFAULT_LEASE_MS = 5_000
TICK_S = 0.5  # expiry of resting orders and the 24 h statistics window, at least this often
GATHER_S = 0.001
"""On a busy market, how long a call waits after the first new entry for those that follow.
A call has a fixed cost (this process's round trips, the script's per-call work, and a
publication of depth, trades, order changes and settlement events each, which the
broadcaster and the settler each wake for): at 1,000 orders/s a market would otherwise make
a call per order. 1 ms, not 2: 2 ms saved 3-5 % of the exchange's CPU per order, but on a
slower day of a 2-core machine it put the XADD → trade p99 at 2,000 orders/s past the 5 ms
the matcher is held to (4.8-5.8 ms against 3.5-3.9 with 1 ms; docs/performance.md, issue
20's fifth round)."""
BUSY_S = 0.005
"""A market whose previous call ended less than this before its next entry came is busy; an
entry that comes after a quiet spell is matched at once."""


class LeaseLost(RuntimeError):
    """Another matcher holds the market now; this one must stop applying batches."""


def market_cfg_fields(market: Market) -> dict[str, str]:
    """The market constants match.lua reads from ``dex:{m}:cfg``."""
    spec = market.spec
    return {
        "product": str(spec.product.value if hasattr(spec.product, "value") else spec.product),
        "priceScale": str(spec.priceScale),
        "qtyScale": str(spec.qtyScale),
        "mult": str(market.notional_multiplier),
        "baseMult": str(market.base_multiplier),
        "takerFeeBps": str(spec.takerFeeBps),
        "makerFeeBps": str(spec.makerFeeBps),
        "initialMarginBps": str(spec.initialMarginBps or 0),
        "maintenanceMarginBps": str(spec.maintenanceMarginBps or 0),
        "tickSize": str(spec.tickSize),
        "lotSize": str(spec.lotSize),
        "indexPrice": str(spec.indexPrice),
        "priceBandBps": str(market.price_band_bps or 0),
        "selfTradePrevention": str(spec.selfTradePrevention.value),
        "strike": str(spec.strike or 0),
        "optionType": str(spec.optionType.value if spec.optionType else ""),
    }


def write_market_cfg(client: Any, market: Market) -> None:
    client.hset(keys.market_cfg(market.symbol), mapping=market_cfg_fields(market))


def match_keys(market: str) -> list[str]:
    """KEYS of match.lua, in its header's order."""
    return [
        keys.market_state(market),
        keys.book_bids(market),
        keys.book_asks(market),
        keys.levels_bids(market),
        keys.levels_asks(market),
        keys.market_trades(market),
        keys.market_events(market),
        keys.market_cfg(market),
        keys.market_positions(market),
        keys.market_stats(market),
        keys.market_expiries(market),
        keys.market_lease(market),
        keys.market_in(market),
    ]


def match_args(
    market: str,
    now_ms: int,
    token: str,
    read_count: int = 0,
    consumer: str = "",
    sharded: bool = False,
) -> list[Any]:
    """The fixed ARGV head of match.lua; stream id / command pairs follow. ``sharded``:
    SPUBLISH on the market's shard channels (common/pubsub.py), else PUBLISH."""
    return [
        market,
        keys.market_order_prefix(market),
        keys.market_user_open_prefix(market),
        keys.shard_channel_prefix(market) if sharded else keys.channel(""),
        now_ms,
        TRADES_MAXLEN,
        keys.market_prefix(market),
        token,
        read_count,
        keys.MATCHER_GROUP,
        consumer,
        "SPUBLISH" if sharded else "PUBLISH",
    ]


class MarketConsumer:
    """Reads ``dex:{m}:in`` in batches and applies them with ``match.lua``, under a lease."""

    def __init__(
        self,
        client: Any,
        market: str,
        consumer: str,
        on_events: Callable[[str], None],  # a call set the settle-queued flag: queue a task
        batch_size: int = 500,
        lease_ms: int = DEFAULT_LEASE_MS,
        token: str | None = None,
    ) -> None:
        self.client = client
        self.market = market
        self.consumer = consumer
        self.on_events = on_events
        self.batch_size = batch_size
        self.lease_ms = lease_ms
        self.token = token or f"{consumer}:{uuid.uuid4().hex}"
        self.scripts = ScriptSet(client, LUA_DIR)
        self.sharded = pubsub.sharded(client)
        # the batch loop's two commands (the wait and the script) on a held connection
        self.direct = direct_connection(client)
        self._keys = match_keys(market)
        self._pending_drained = False
        self.holding = False
        self._renewed_at = 0.0
        self._ticked_at = 0.0
        self._idle_reads = 0
        self._caught_up = False  # the last call read less than a batch: the stream was drained
        self._last_id = "0"

    # -- group and lease -------------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) once; 'already exists' is fine."""
        try:
            self.client.xgroup_create(
                keys.market_in(self.market), keys.MATCHER_GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _lease(self, op: str) -> bool:
        result = self.scripts["lease"](
            keys=[keys.market_lease(self.market)], args=[op, self.token, self.lease_ms]
        )
        return bool(int(result))

    def acquire(self) -> bool:
        """Take the lease if free; on success claim what a previous owner left pending."""
        if not self._lease("acquire"):
            return False
        self.holding = True
        self._renewed_at = time.monotonic()
        self.claim_pending()
        self._pending_drained = False
        log.info("matcher: %s: lease taken by %s", self.market, self.token)
        return True

    def keep_lease(self) -> bool:
        """Renew the lease when a third of its time has passed; False once it is lost."""
        if not self.holding:
            return False
        if time.monotonic() - self._renewed_at >= self.lease_ms / 3000:
            if not self._lease("renew"):
                self.holding = False
                log.warning("matcher: %s: lease lost", self.market)
                return False
            self._renewed_at = time.monotonic()
        return True

    def release(self) -> None:
        if self.holding:
            self._lease("release")
            self.holding = False
        if self.direct is not None:
            self.direct.close()

    def claim_pending(self) -> int:
        """XAUTOCLAIM every entry other consumers of the group read but never acknowledged.

        Only the lease holder applies batches, so whatever another consumer still has pending
        belongs to a predecessor; it is claimed at once (idle 0) and applied before new entries.
        """
        cursor = "0-0"
        claimed = 0
        while True:
            reply = self.client.xautoclaim(
                keys.market_in(self.market),
                keys.MATCHER_GROUP,
                self.consumer,
                min_idle_time=0,
                start_id=cursor,
                count=1000,
            )
            # [next cursor, claimed entries, deleted ids] (JUSTID would lose the cursor in
            # redis-py's reply parsing)
            cursor = reply[0]
            claimed += len(reply[1])
            if cursor in ("0-0", b"0-0"):
                break
        # predecessors' names, now without pending entries, leave the group
        stream = keys.market_in(self.market)
        for info in self.client.xinfo_consumers(stream, keys.MATCHER_GROUP):
            name = info["name"]
            if name != self.consumer and int(info["pending"]) == 0:
                self.client.xgroup_delconsumer(stream, keys.MATCHER_GROUP, name)
        return claimed

    # -- batches ---------------------------------------------------------------------------
    def poll(self, block_ms: int = 1000) -> int:
        """Apply one batch; return the entries handled.

        Own pending entries first (read before a crash, never acknowledged): read here and
        passed to the script. Then new entries, which the script reads, applies and
        acknowledges itself in one atomic call (no per-order Python work on the hot path).
        With nothing new, wait on the stream (XREAD BLOCK after the last applied id).
        """
        if not self._pending_drained:
            response = self.client.xreadgroup(
                keys.MATCHER_GROUP,
                self.consumer,
                {keys.market_in(self.market): "0"},
                count=self.batch_size,
            )
            entries = [(i, f) for i, f in (response[0][1] if response else []) if f]
            if not entries:
                self._pending_drained = True
                self._ack_deleted(response)
                return 0
            self.apply(entries)
            self.maybe_tick()
            return len(entries)
        if self._caught_up:
            # The last call left nothing unread: wait for a new entry (XREAD BLOCK after the
            # last applied id returns at once if one came meanwhile) instead of calling the
            # script again for nothing; a timeout brings the next call, which also ticks.
            self._caught_up = False
            stream = keys.market_in(self.market)
            woken = read_stream(self.direct, self.client, stream, self._last_id, 1, block_ms)
            if woken and time.monotonic() - self._ticked_at < BUSY_S:
                time.sleep(GATHER_S)
            return 0
        read, last = self._run([], read_count=self.batch_size)
        self._ticked_at = time.monotonic()  # every call also expires orders and ages stats
        self._last_id = last or "0"
        self._caught_up = read < self.batch_size
        if read:
            self._idle_reads = 0
            return read
        self._idle_reads += 1
        if self._idle_reads > 1:
            # woken but nothing to read (entries delivered elsewhere): don't spin
            time.sleep(0.01)
        return 0

    def _ack_deleted(self, response: Any) -> None:
        if response:
            stale = [entry_id for entry_id, fields in response[0][1] if not fields]
            if stale:
                self.client.xack(keys.market_in(self.market), keys.MATCHER_GROUP, *stale)

    def maybe_tick(self) -> None:
        if time.monotonic() - self._ticked_at >= TICK_S:
            self.tick()

    def tick(self) -> None:
        """Run the script with no commands: expires due orders, ages the 24 h statistics."""
        self._ticked_at = time.monotonic()
        self._run([])

    def apply(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        """Run the matching script over ``entries`` read outside it, then acknowledge them."""
        ids = [entry_id for entry_id, _ in entries]
        self._run(entries)
        self.client.xack(keys.market_in(self.market), keys.MATCHER_GROUP, *ids)
        return len(ids)

    def _run(
        self, entries: list[tuple[str, dict[str, str]]], read_count: int = 0
    ) -> tuple[int, str]:
        """One match.lua call; returns (entries it read itself, last applied stream id)."""
        args = match_args(
            self.market,
            int(time.time() * 1000),
            self.token if self.holding else "",
            read_count,
            self.consumer,
            self.sharded,
        )
        for entry_id, fields in entries:
            args.extend((entry_id, fields.get("c", "{}")))
        script = self.scripts["match"]
        try:
            if self.direct is None:
                reply = script(keys=self._keys, args=args)
            else:
                reply = self.direct.run_script(script, self._keys, args)
            _applied, _events, read, last, queue = reply
        except redis.ResponseError as exc:
            if "LEASE_LOST" in str(exc):
                self.holding = False
                raise LeaseLost(self.market) from None
            raise
        if queue:
            self.on_events(self.market)
        return int(read), str(last)
