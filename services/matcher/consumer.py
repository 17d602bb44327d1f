"""Consume one market's command stream and run the matching script over each batch.

Crash-only: start-up and recovery are one path. The consumer first re-reads its own pending
entries (read before a crash, never acknowledged), then new ones. The script records the last
stream id it applied, so a batch applied before a crash is skipped when it comes round again,
and the entries are acknowledged only after the script has run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from common import keys
from common.lua import ScriptSet

log = logging.getLogger(__name__)

LUA_DIR = Path(__file__).parent / "lua"
TRADES_MAXLEN = 100_000


class MarketConsumer:
    """Reads ``dex:{m}:in`` in batches and applies them with ``match.lua``."""

    def __init__(
        self,
        client: Any,
        market: str,
        consumer: str,
        on_events: Callable[[str], None],
        batch_size: int = 200,
    ) -> None:
        self.client = client
        self.market = market
        self.consumer = consumer
        self.on_events = on_events
        self.batch_size = batch_size
        self.scripts = ScriptSet(client, LUA_DIR)
        self._pending_drained = False

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) once; 'already exists' is fine."""
        try:
            self.client.xgroup_create(
                keys.market_in(self.market), keys.MATCHER_GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll(self, block_ms: int = 1000) -> int:
        """Read one batch (own pending entries first) and apply it; return entries handled."""
        start_id = "0" if not self._pending_drained else ">"
        response = self.client.xreadgroup(
            keys.MATCHER_GROUP,
            self.consumer,
            {keys.market_in(self.market): start_id},
            count=self.batch_size,
            block=None if start_id == "0" else block_ms,
        )
        entries = response[0][1] if response else []
        if not entries:
            if start_id == "0":
                self._pending_drained = True
            return 0
        self.apply(entries)
        return len(entries)

    def apply(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        """Run the matching script over ``entries`` and acknowledge them."""
        args: list[Any] = [
            self.market,
            keys.market_order_prefix(self.market),
            keys.market_user_open_prefix(self.market),
            keys.channel(""),
            int(time.time() * 1000),
            TRADES_MAXLEN,
        ]
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            args.extend((entry_id, fields.get("c", "{}")))
        m = self.market
        applied = self.scripts["match"](
            keys=[
                keys.market_state(m),
                keys.book_bids(m),
                keys.book_asks(m),
                keys.levels_bids(m),
                keys.levels_asks(m),
                keys.market_trades(m),
                keys.market_events(m),
            ],
            args=args,
        )
        self.client.xack(keys.market_in(m), keys.MATCHER_GROUP, *ids)
        if applied:
            self.on_events(m)
        return int(applied)
