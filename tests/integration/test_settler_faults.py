"""Fault tests of the settler: workers SIGKILLed mid-settlement, two beats at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from support.exchange import Exchange
from support.market_driver import bulk_fills
from support.redis_server import wait_for

from common import keys
from common.audit import audit
from common.events import events_of
from common.markets import load_markets

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
USERS = [f"0x{i:040x}" for i in range(1, 25)]


def _cursor_events(client: Any, symbol: str) -> int:
    """How many events of the market are behind its settlement cursor: the last eseq of the
    cursor's entry (eseq counts from 1; the settler trims the entries before the cursor)."""
    cursor = client.get(keys.market_settled(symbol))
    if cursor is None:
        return 0
    entries = client.xrange(keys.market_events(symbol), min=cursor, max=cursor)
    return int(events_of(entries[0][1])[-1]["eseq"]) if entries else 0


def test_worker_killed_mid_settlement_settles_every_fill_once(redis_url: str, client: Any) -> None:
    fills = 1_500
    written = {
        symbol: bulk_fills(client, MARKETS.markets[symbol], USERS, fills, 3_000_000, 7)
        for symbol in ("BTC-USDC", "BTC-PERP")
    }
    app = Celery("test-client", broker=redis_url)
    # small rounds: at 300 events a round the kill came after two thirds of them were settled,
    # and in a loaded CI run after all of them (the precondition below)
    with Exchange(redis_url, DEX_SETTLE_BATCH="25") as exchange:
        exchange.start("settler")
        for symbol in written:
            app.send_task("dex.settle", args=[symbol], queue="settle")
        assert wait_for(lambda: any(_cursor_events(client, s) for s in written), 60, 0.01)
        exchange.kill("settler")
        progress = {s: _cursor_events(client, s) for s in written}
        assert sum(progress.values()) < sum(written.values()), "killed too late to matter"
        # The settle messages died with the worker; the beat's sweeper finds the gap.
        exchange.start("settler", "beat")
        assert wait_for(
            lambda: all(_cursor_events(client, s) == n for s, n in written.items()), 120
        ), exchange.log("settler")[-3000:]
    app.close()
    report = audit(client, MARKETS)
    assert report["invariants"]["everyTradeSettledOnce"] == {"ok": True}
    assert report["invariants"]["conservation"] == {"ok": True}
    assert report["ok"], report["invariants"]
    fees = int(report["assets"]["USDC"]["fees"])
    # Each fill: maker 1 bp and taker 5 bp of 3,000,000 × 7 = 21,000,000, rounded up.
    assert fees == 2 * fills * (2_100 + 10_500)


def test_two_beats_one_in_charge(redis_url: str, client: Any) -> None:
    with Exchange(redis_url) as first:
        first.start("beat")
        assert wait_for(lambda: "took the lease" in first.log("beat"), 30), first.log("beat")
        leader = client.get(keys.settler_lease("beat"))
        with Exchange(redis_url) as second:
            second.start("beat")
            time.sleep(3)
            assert "took the lease" not in second.log("beat")
            assert client.get(keys.settler_lease("beat")) == leader  # still the first's
            first.kill("beat")  # the leader dies: the lease lapses and the other takes over
            assert wait_for(lambda: "took the lease" in second.log("beat"), 40), second.log("beat")
