"""The settler's Celery application: broker, serialization, queues, beat schedule.

Settlement (``dex.settle``) is routed to the ``settle`` queue; the periodic jobs
(``dex.oracle``, ``dex.funding``, ``dex.expiry``, ``dex.liquidation``, ``dex.sweep``) to
``periodic``; a task sent by name from a client without these routes lands on ``celery``.
``task_queues`` declares all three, and a worker started without ``-Q`` consumes every queue
in ``task_queues``: the plain ``celery -A services.settler worker`` of API.md §1 runs every
job. ``-Q settle`` / ``-Q periodic`` split them over separate workers, so a burst of fills
cannot delay the oracle (docs/operations.md). Every task is idempotent by business id, so
``acks_late`` + ``task_reject_on_worker_lost`` make a task lost with its worker run again.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from common.settings import get_settings
from common.tasks import (
    EXPIRY_TASK,
    FUNDING_TASK,
    LIQUIDATION_TASK,
    ORACLE_TASK,
    SETTLE_QUEUE,
    SWEEP_TASK,
    TASK_ROUTES,
    WORKER_QUEUES,
)

settings = get_settings()
FUNDING_CHECK_S = max(settings.funding_interval_s / 10, 0.5)

app = Celery(
    "services.settler", broker=settings.celery_broker_url, include=["services.settler.tasks"]
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Longer than any task (a settle run is bounded by its batches, ~seconds), so a slow
    # task is never redelivered while it still runs.
    broker_transport_options={"visibility_timeout": 3600},
    task_time_limit=600,
    # Each queue on its own direct exchange, as Celery creates a queue a client names: the
    # matcher, beat and `celery call` reach it whichever of them declared it first.
    task_queues=[Queue(name, Exchange(name), routing_key=name) for name in WORKER_QUEUES],
    task_default_queue=SETTLE_QUEUE,
    task_routes=TASK_ROUTES,
    beat_scheduler="services.settler.beat:LeasedScheduler",
    beat_schedule={
        "sweep": {"task": SWEEP_TASK, "schedule": 2.0},
        "oracle": {"task": ORACLE_TASK, "schedule": 5.0},
        "funding": {"task": FUNDING_TASK, "schedule": FUNDING_CHECK_S},
        "expiry": {"task": EXPIRY_TASK, "schedule": 10.0},
        "liquidation": {"task": LIQUIDATION_TASK, "schedule": 5.0},
    },
)
