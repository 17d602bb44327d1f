"""The settler's Celery application: broker, serialization, queues, beat schedule."""

from __future__ import annotations

from celery import Celery

from common.settings import get_settings
from common.tasks import PERIODIC_QUEUE, SETTLE_QUEUE, SETTLE_TASK, SWEEP_TASK

settings = get_settings()

app = Celery(
    "services.settler", broker=settings.celery_broker_url, include=["services.settler.tasks"]
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # Tasks are idempotent by business id, so a task lost with its worker is simply re-run.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600},
    task_default_queue=SETTLE_QUEUE,
    task_routes={SETTLE_TASK: {"queue": SETTLE_QUEUE}, "dex.*": {"queue": PERIODIC_QUEUE}},
    beat_schedule={
        "sweep": {"task": SWEEP_TASK, "schedule": 2.0},
    },
)
