"""Celery tasks: thin wrappers that call the ledger; idempotent by business id."""

from __future__ import annotations

import logging
from functools import lru_cache

from common.markets import MarketSet, load_markets
from common.redis_client import connect
from common.settings import get_settings
from common.tasks import SETTLE_TASK, SWEEP_TASK
from services.settler.celery_app import app
from services.settler.ledger import Ledger

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _markets() -> MarketSet:
    return load_markets(get_settings().markets_file)


@lru_cache(maxsize=1)
def _ledger() -> Ledger:
    return Ledger(connect())


@app.task(name=SETTLE_TASK)
def settle(market: str) -> int:
    """Settle every unsettled event of one market."""
    spec = _markets().market(market)
    if spec is None:
        log.error("settle: unknown market %r", market)
        return 0
    return _ledger().settle_market(spec)


@app.task(name=SWEEP_TASK)
def sweep() -> list[str]:
    """Queue a settle task for every market whose events run past its cursor."""
    behind = _ledger().unsettled_markets(list(_markets().markets.values()))
    for market in behind:
        settle.delay(market.symbol)
    return [market.symbol for market in behind]
