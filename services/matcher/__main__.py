"""``python -m services.matcher``: run one consumer thread per owned market.

Each thread holds its market's lease while it matches; a second matcher started for the same
market waits on the lease and takes over when it lapses. SIGTERM (or SIGINT) drains: every
thread finishes the batch in hand, releases its lease and the process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

from common import keys
from common.heap import freeze_startup_heap
from common.markets import load_markets
from common.redis_client import connect, wait_for_redis
from common.settings import get_settings
from common.tasks import SETTLE_TASK, task_client
from services.matcher.consumer import (
    DEFAULT_LEASE_MS,
    LeaseLost,
    MarketConsumer,
    write_market_cfg,
)

log = logging.getLogger("matcher")


def owned_markets(selection: str, all_markets: list[str]) -> list[str]:
    """The markets named by ``DEX_MATCHER_MARKETS`` (``*`` = all), refusing unknown names."""
    if selection.strip() == "*":
        return all_markets
    chosen = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in all_markets]
    if unknown:
        raise SystemExit(f"DEX_MATCHER_MARKETS names unknown markets: {', '.join(unknown)}")
    return chosen


def shard_markets(markets: list[str], shards: int, shard: int | None, hostname: str) -> list[str]:
    """This replica's share of ``markets`` when ``shards`` replicas split them.

    The sorted list is dealt round-robin, so every replica gets a near-equal share; the index
    is ``shard`` or, in a StatefulSet, the ordinal that ends the pod's hostname (``matcher-1``).
    The per-market lease still guards each market while a pod is being replaced.
    """
    if shards <= 1:
        return markets
    if shard is None:
        _, _, ordinal = hostname.rpartition("-")
        if not ordinal.isdigit():
            raise SystemExit(
                f"DEX_MATCHER_SHARDS={shards} needs DEX_MATCHER_SHARD or a hostname ending in "
                f"-<ordinal> (a StatefulSet pod), got hostname {hostname!r}"
            )
        shard = int(ordinal)
    if not 0 <= shard < shards:
        raise SystemExit(f"matcher shard {shard} is outside 0..{shards - 1}")
    return [market for i, market in enumerate(sorted(markets)) if i % shards == shard]


def make_settle_trigger(client: Any, stop: threading.Event) -> Any:
    """Send the settle task of a market whose match.lua call set its settle-queued flag, from a
    thread of its own, so a slow broker never holds up matching; a task that could not be sent
    drops the flag again, and the settler's sweeper covers any message lost here."""
    celery = task_client()
    wanted: set[str] = set()
    lock = threading.Lock()
    wake = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            wake.wait(0.5)
            wake.clear()
            with lock:
                markets = sorted(wanted)
                wanted.clear()
            for market in markets:
                try:
                    celery.send_task(SETTLE_TASK, args=[market])
                except Exception:
                    client.delete(keys.market_settle_queued(market))
                    log.exception("matcher: %s: could not queue settlement", market)

    threading.Thread(target=sender, name="settle-trigger", daemon=True).start()

    def trigger(market: str) -> None:
        with lock:
            wanted.add(market)
        wake.set()

    return trigger


def run_market(
    client: Any,
    market: str,
    consumer_name: str,
    trigger: Any,
    stop: threading.Event,
    lease_ms: int,
    batch_size: int = 100,
) -> None:
    """Wait for the lease, then match until told to stop or the lease is lost."""
    consumer = MarketConsumer(
        client, market, consumer_name, trigger, lease_ms=lease_ms, batch_size=batch_size
    )
    consumer.ensure_group()
    waiting_logged = False
    while not stop.is_set():
        try:
            if not consumer.holding:
                if not consumer.acquire():
                    if not waiting_logged:
                        log.info("matcher: %s: another matcher holds the lease; waiting", market)
                        waiting_logged = True
                    stop.wait(min(1.0, lease_ms / 5000))
                    continue
                waiting_logged = False
                log.info("matcher: consuming %s as %s", market, consumer_name)
            if not consumer.keep_lease():
                continue
            consumer.poll(block_ms=200)
        except LeaseLost:
            log.warning("matcher: %s: lease lost while applying a batch; waiting", market)
        except Exception:
            log.exception("matcher: %s: batch failed; retrying", market)
            stop.wait(1.0)
    try:
        consumer.release()
    except Exception:
        log.exception("matcher: %s: could not release the lease", market)
    log.info("matcher: %s: stopped", market)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    markets = load_markets(settings.markets_file)
    owned = shard_markets(
        owned_markets(settings.matcher_markets, list(markets.markets)),
        settings.matcher_shards,
        settings.matcher_shard,
        socket.gethostname(),
    )
    lease_ms = int(os.environ.get("DEX_MATCHER_LEASE_MS", DEFAULT_LEASE_MS))
    client = connect(settings)
    wait_for_redis(client, what="matcher")
    for name in owned:
        write_market_cfg(client, markets.markets[name])
    stop = threading.Event()
    freeze_startup_heap()
    trigger = make_settle_trigger(client, stop)
    # A name per process: a successor claims what this one left pending (XAUTOCLAIM).
    consumer_name = f"{socket.gethostname()}:{os.getpid()}"
    threads = [
        threading.Thread(
            target=run_market,
            args=(client, m, consumer_name, trigger, stop, lease_ms, settings.matcher_batch),
            name=m,
            daemon=True,
        )
        for m in owned
    ]
    for thread in threads:
        thread.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
