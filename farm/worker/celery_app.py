"""The Celery application: JSON only, late acks, one job at a time per GPU.

`celery -A farm.worker.celery_app inspect active` and Flower work on it (task events are on).
The broker comes from settings (FARM_BROKER_URL); limits from the FARM_* variables below.
"""

from __future__ import annotations

import uuid
from functools import cache

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from farm import settings

TASK_RUN_JOB = "farm.run_job"
QUEUES = ("gpu", "cpu")  # a job goes to the queue named by its spec's device


def task_id(job_id: int) -> str:
    """A new message's id: the job's, and a suffix, since a job may be sent more than once."""
    return f"farm-job-{job_id}-{uuid.uuid4().hex[:8]}"


# Hard limit on one job; a job running past it is killed and marked failed (soft limit first).
JOB_TIME_LIMIT_S = settings.load().job_time_limit
SOFT_LIMIT_MARGIN_S = 60  # time between the soft limit (job marked failed) and the hard kill


def soft_time_limit(hard_s: float) -> float:
    """The soft limit: the margin before the hard one, at most a quarter of it, so a short limit
    (a test's few seconds) keeps a positive soft limit (Celery fires a negative one at once)."""
    return hard_s - min(SOFT_LIMIT_MARGIN_S, hard_s / 4)

# Redis redelivers an unacked message after this long. It must exceed the longest job, or a
# running job would be delivered twice; every job is shorter than the hard limit (settings.py).
VISIBILITY_TIMEOUT_S = settings.load().visibility_timeout
PRIORITY_LEVELS = 10  # farm priorities 0..9, higher first


def celery_priority(priority: int) -> int:
    """Redis serves lower numbers first; farm's --priority is higher-first."""
    return PRIORITY_LEVELS - 1 - max(0, min(priority, PRIORITY_LEVELS - 1))


def transport_options() -> dict:
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "priority_steps": list(range(PRIORITY_LEVELS)),
        "sep": ":",
        "queue_order_strategy": "priority",
        # Look for abandoned (unacked, older than the visibility timeout) messages every 10 s;
        # kombu's default throttle would make that every 100 s.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }


def make_app(broker_url: str | None = None) -> Celery:
    broker = broker_url or settings.load().broker_url or "redis://127.0.0.1:6379/0"
    app = Celery("farm", broker=broker, backend=broker, include=["farm.worker.tasks"])
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        result_accept_content=["json"], event_serializer="json",
        task_acks_late=True,  # ack after the job, so a lost worker's job is redelivered
        task_reject_on_worker_lost=True,  # ... including when the pool child is killed
        task_acks_on_failure_or_timeout=True,  # failures are recorded in our DB; do not loop
        worker_prefetch_multiplier=1, worker_concurrency=1,
        task_ignore_result=True,  # results live in farm's database
        task_time_limit=JOB_TIME_LIMIT_S, task_soft_time_limit=soft_time_limit(JOB_TIME_LIMIT_S),
        broker_transport_options=transport_options(),
        result_backend_transport_options=transport_options(),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # Flower and `celery events` see workers and task progress; no "sent" event per message,
        # which would double the cost of submitting a sweep.
        worker_send_task_events=True, task_send_sent_event=False,
        task_default_queue="gpu", task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        task_track_started=True,
    )
    return app


@cache
def app_for(broker_url: str) -> Celery:
    return make_app(broker_url)


@worker_process_init.connect
def _after_fork(**_):
    # Pooled database connections must not cross the fork into pool children. Forgotten, not
    # closed: closing would end the parent's own sessions on the shared sockets (the orphan watch).
    from farm.db.session import dispose_all

    dispose_all(close=False)


_watch = []


@worker_ready.connect
def _watch_orphans(sender=None, **_):
    # Jobs of workers that died whole, and deferred jobs that waited defer_s, are sent again now
    # and every minute, or every defer_s if that is shorter (farm.worker.orphans).
    from farm.worker.orphans import Watch

    _watch.append(Watch(sender.app).start())


@worker_shutdown.connect
def _stop_watch(**_):
    for w in _watch:
        w.stop()


app = make_app()
