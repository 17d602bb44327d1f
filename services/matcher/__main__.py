"""``python -m services.matcher``: run one consumer thread per owned market."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from common import keys
from common.markets import load_markets
from common.redis_client import connect, wait_for_redis
from common.settings import get_settings
from common.tasks import SETTLE_TASK, task_client
from services.matcher.consumer import MarketConsumer

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


def make_settle_trigger(client: Any) -> Any:
    """Queue one settle task per market at a time; the settler's sweeper covers any loss."""
    celery = task_client()

    def trigger(market: str) -> None:
        if client.set(keys.market_settle_queued(market), "1", nx=True, px=2000):
            celery.send_task(SETTLE_TASK, args=[market])

    return trigger


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    markets = load_markets(settings.markets_file)
    owned = owned_markets(settings.matcher_markets, list(markets.markets))
    client = connect(settings)
    wait_for_redis(client, what="matcher")
    trigger = make_settle_trigger(client)
    stop = threading.Event()
    # One consumer per market (DESIGN.md), so a fixed name lets a restarted matcher pick up
    # the entries its predecessor read but never acknowledged.
    consumer_name = "matcher"

    def run(market: str) -> None:
        consumer = MarketConsumer(client, market, consumer_name, trigger)
        consumer.ensure_group()
        log.info("matcher: consuming %s as %s", market, consumer_name)
        while not stop.is_set():
            try:
                consumer.poll(block_ms=500)
            except Exception:
                log.exception("matcher: %s: batch failed; retrying", market)
                stop.wait(1.0)

    threads = [threading.Thread(target=run, args=(m,), name=m, daemon=True) for m in owned]
    for thread in threads:
        thread.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    for thread in threads:
        thread.join(timeout=5)


if __name__ == "__main__":
    main()
