"""Celery task names and a client to send them, for services that enqueue settler work.

Services never import each other: the matcher and the gateway send tasks by name through a
plain Celery client on the same broker, so only the settler holds the task code.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from common.settings import DexSettings, get_settings

SETTLE_TASK = "dex.settle"
SWEEP_TASK = "dex.sweep"
ORACLE_TASK = "dex.oracle"
FUNDING_TASK = "dex.funding"
EXPIRY_TASK = "dex.expiry"
LIQUIDATION_TASK = "dex.liquidation"

SETTLE_QUEUE = "settle"
PERIODIC_QUEUE = "periodic"
DEFAULT_QUEUE = "celery"
"""Where a client without these routes sends a task by name (Celery's own default queue)."""
WORKER_QUEUES = (SETTLE_QUEUE, PERIODIC_QUEUE, DEFAULT_QUEUE)
"""Every queue a task of the exchange can land on: a worker started without ``-Q`` takes all."""
TASK_ROUTES = {SETTLE_TASK: {"queue": SETTLE_QUEUE}, "dex.*": {"queue": PERIODIC_QUEUE}}
"""Settlement on ``settle``, every periodic job on ``periodic`` (workers may split by ``-Q``)."""


@lru_cache(maxsize=1)
def task_client(settings: DexSettings | None = None) -> Celery:
    """A Celery app that only sends tasks (no task code), on the settler's broker."""
    settings = settings or get_settings()
    app = Celery("dex-client", broker=settings.celery_broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        task_routes=TASK_ROUTES,
    )
    return app
