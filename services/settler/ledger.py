"""Settle a market's event stream into accounts, exactly once, resumably.

Order of writes for one run of events: every account's operations (each call idempotent by
its watermark), then the market's cursor. A crash anywhere only means the next run re-reads
events whose account effects are already applied, and skips them.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from common import keys
from common.events import EVENT_FIELD, dumps, loads
from common.lua import ScriptSet
from common.markets import Market
from services.settler import settlement

log = logging.getLogger(__name__)

LUA_DIR = Path(__file__).parent / "lua"
BATCH = 500
LOCK_TTL_MS = 60_000


class Ledger:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = ScriptSet(client, LUA_DIR)

    def settle_market(self, market: Market, max_batches: int = 100) -> int:
        """Apply every unsettled event of ``market``; return how many events were settled."""
        symbol = market.symbol
        lock_key = keys.market_settle_queued(symbol) + ":lock"
        token = uuid.uuid4().hex
        if not self.client.set(lock_key, token, nx=True, px=LOCK_TTL_MS):
            return 0  # another worker is settling this market right now
        try:
            self.client.delete(keys.market_settle_queued(symbol))
            settled = 0
            for _ in range(max_batches):
                done = self._settle_batch(market)
                settled += done
                if done < BATCH:
                    break
            return settled
        finally:
            if self.client.get(lock_key) == token:
                self.client.delete(lock_key)

    def _settle_batch(self, market: Market) -> int:
        symbol = market.symbol
        cursor = self.client.get(keys.market_settled(symbol)) or "0-0"
        entries = self.client.xrange(keys.market_events(symbol), min=f"({cursor}", count=BATCH)
        if not entries:
            return 0
        events = [loads(fields[EVENT_FIELD]) for _, fields in entries]
        for account, groups in settlement.plan(market, events).items():
            self.scripts["apply_ops"](
                keys=[
                    keys.balances(account),
                    keys.watermarks(account),
                    keys.reservations(account),
                    keys.account_fills(account),
                    keys.positions(account),
                ],
                args=[symbol, dumps([[eseq, ops] for eseq, ops in groups])],
            )
        self.client.set(keys.market_settled(symbol), entries[-1][0])
        return len(entries)

    def unsettled_markets(self, markets: list[Market]) -> list[Market]:
        """Markets whose event stream runs past their settlement cursor."""
        behind = []
        for market in markets:
            last = self.client.xrevrange(keys.market_events(market.symbol), count=1)
            if not last:
                continue
            cursor = self.client.get(keys.market_settled(market.symbol)) or "0-0"
            if _id_key(last[0][0]) > _id_key(cursor):
                behind.append(market)
        return behind


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
