"""Celery tasks: thin wrappers that call the ledger and the periodic jobs.

Each is idempotent by business id (event eseq, funding period, market expiry, liquidation
number), never by task id, so a redelivered task is harmless. Each process of a worker that
takes the ``settle`` queue also starts a settle loop here (``worker_process_init``;
services/settler/loop.py), which holds markets so that no settle task is needed for them.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from common import keys
from common.market_reads import read_ticker_sync
from common.markets import MarketSet, load_markets
from common.redis_client import connect
from common.tasks import (
    EXPIRY_TASK,
    FUNDING_TASK,
    LIQUIDATION_TASK,
    ORACLE_TASK,
    SETTLE_QUEUE,
    SETTLE_TASK,
    SWEEP_TASK,
)
from services.settler import expiry, funding, liquidation, oracle
from services.settler import loop as settle_loop
from services.settler.accounts import AccountSteps
from services.settler.celery_app import app
from services.settler.ledger import Ledger
from services.settler.settings import get_settler_settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _markets() -> MarketSet:
    return load_markets(get_settler_settings().markets_file)


@lru_cache(maxsize=1)
def _client() -> Any:
    return connect()


@lru_cache(maxsize=1)
def _ledger() -> Ledger:
    settings = get_settler_settings()
    return Ledger(
        _client(), batch=settings.settle_batch, round_gap_s=settings.settle_round_gap_ms / 1000
    )


@lru_cache(maxsize=1)
def _steps() -> AccountSteps:
    return AccountSteps(_client())


def _now_ms() -> int:
    return int(time.time() * 1000)


@app.task(name=SETTLE_TASK)
def settle(market: str) -> int:
    """Settle every unsettled event of one market."""
    spec = _markets().market(market)
    if spec is None:
        log.error("settle: unknown market %r", market)
        return 0
    if _loop is not None or (settle_loop.runs_on(_client()) and settle_loop.loops_live(_client())):
        # A settle loop takes the market at its next renewal: one round, no hand-over that
        # would keep the market's lock in tasks' hands.
        return _ledger().settle_market(spec, max_seconds=0)
    return _ledger().settle_market(spec, requeue=lambda: settle.delay(market))


_loop: settle_loop.SettleLoop | None = None


@worker_process_init.connect
def start_settle_loop(**_: Any) -> None:
    """In each process of a worker that takes the ``settle`` queue: start its settle loop
    (services/settler/loop.py), unless ``DEX_SETTLE_LOOP=0`` or on a Redis Cluster."""
    global _loop
    settings = get_settler_settings()
    if not settings.settle_loop or SETTLE_QUEUE not in app.amqp.queues.consume_from:
        return
    if not settle_loop.runs_on(_client()):
        return
    ledger = Ledger(_client(), batch=settings.settle_batch)
    _loop = settle_loop.SettleLoop(
        _client(),
        ledger,
        list(_markets().markets.values()),
        settings.settle_round_gap_ms / 1000,
        settings.settle_lease_ms,
    )
    _loop.start()


@worker_process_shutdown.connect
def stop_settle_loop(**_: Any) -> None:
    """Let go of the markets the loop holds, so a task or another loop settles them at once."""
    if _loop is not None:
        _loop.stop()


@app.task(name=SWEEP_TASK)
def sweep() -> list[str]:
    """Queue a settle task for every market whose events run past its cursor, unless its
    settle-queued flag stands (a task is on its way or at work; the flag lapses within 2 s
    of a lost one, and the next sweep then queues it)."""
    behind = _ledger().unsettled_markets(list(_markets().markets.values()))
    if not behind:
        return []
    pipe = _client().pipeline(transaction=False)
    for market in behind:
        pipe.exists(keys.market_settle_queued(market.symbol))
    queued = pipe.execute()
    swept = [market.symbol for market, standing in zip(behind, queued, strict=True) if not standing]
    for symbol in swept:
        settle.delay(symbol)
    return swept


@app.task(name=ORACLE_TASK)
def run_oracle() -> dict[str, list[int]]:
    """Index and mark prices from DEX_ORACLE_SOURCE; premium samples; ticker publications."""
    settings = get_settler_settings()
    prices = oracle.run_oracle(
        _client(),
        _markets(),
        settings.oracle_source,
        _now_ms(),
        settings.funding_interval_s * 1000,
        ticker=read_ticker_sync,
        max_move_bps=settings.oracle_max_move_bps,
    )
    return {symbol: [index, mark] for symbol, (index, mark) in prices.items()}


@app.task(name=FUNDING_TASK)
def run_funding() -> list[list[Any]]:
    """Pay every finished, unpaid funding period of every PERP market."""
    interval_ms = get_settler_settings().funding_interval_s * 1000
    paid = funding.run_funding(_client(), _markets(), _steps(), _now_ms(), interval_ms)
    return [[symbol, period] for symbol, period in paid]


@app.task(name=EXPIRY_TASK)
def run_expiry() -> list[str]:
    """Expire and cash-settle every FUTURE and OPTION market past its expiryTs."""
    return expiry.run_expiry(_client(), _markets(), _ledger(), _steps(), _now_ms())


@app.task(name=LIQUIDATION_TASK)
def run_liquidation() -> list[str]:
    """Liquidate every account whose equity is below its maintenance margin."""
    grace_ms = int(get_settler_settings().liquidation_grace_s * 1000)
    return liquidation.run_liquidation(
        _client(), _markets(), _ledger(), _steps(), _now_ms(), grace_ms
    )
