"""Handing jobs to the broker (Celery on Redis), and checking that it is there first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from farm.errors import ServiceUnavailable

BROKER_CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Delivery:
    job_id: int
    device: str  # the queue
    priority: int  # farm priority 0..9, higher first
    eta: datetime | None = None  # a start time of its own (a re-sent scheduled job), aware UTC


def _app(broker_url: str):
    from farm.worker.celery_app import app_for

    return app_for(broker_url)


def check_broker(broker_url: str) -> None:
    """Fail with one line before anything is written if the broker cannot be reached."""
    try:
        with _app(broker_url).connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=BROKER_CHECK_TIMEOUT_S)
    except Exception as e:  # kombu raises driver-specific errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ServiceUnavailable(f"cannot reach the broker {broker_url}: {reason}") from None


def served_queues(broker_url: str, timeout: float = 1.0) -> set[str] | None:
    """The queues the workers that answer within `timeout` consume (a broadcast to every worker;
    it waits the whole timeout for replies); None when the broker cannot be asked. One try to
    connect: kombu's own retries kept `farm status` 6 s on a broker that was down."""
    app = _app(broker_url)
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    except Exception:  # a status line is not worth an error: no hint then
        return None
    return {q["name"] for queues in replies.values() for q in queues or ()}


def task_id(job_id: int) -> str:
    from farm.worker.celery_app import task_id as new_id

    return new_id(job_id)


def enqueue(broker_url: str, deliveries: Iterable[Delivery], *, eta: datetime | None = None) -> dict[int, str]:
    """Publish one run_job message per delivery over a single connection; returns task ids."""
    from farm.worker.celery_app import TASK_RUN_JOB, celery_priority

    app = _app(broker_url)
    ids: dict[int, str] = {}
    try:
        with app.producer_or_acquire() as producer:
            for d in deliveries:
                ids[d.job_id] = task_id(d.job_id)
                app.send_task(TASK_RUN_JOB, args=[d.job_id], queue=d.device, task_id=ids[d.job_id],
                              priority=celery_priority(d.priority), eta=d.eta or eta, producer=producer)
    except Exception as e:
        raise ServiceUnavailable(f"cannot publish to the broker {broker_url}: {e}") from None
    return ids


def task_ids_in_broker(broker_url: str, queues: Iterable[str] = ("gpu", "cpu")) -> set[str]:
    """Ids of the run messages Redis still holds: waiting in a queue (each priority level is a
    list of its own) or delivered to a worker and not yet acknowledged."""
    import json

    from farm.worker.celery_app import PRIORITY_LEVELS, transport_options

    sep = transport_options()["sep"]
    keys = [q if level == 0 else f"{q}{sep}{level}" for q in queues for level in range(PRIORITY_LEVELS)]
    try:
        with _app(broker_url).connection_for_read() as conn:
            client = conn.default_channel.client
            raw = [m for key in keys for m in client.lrange(key, 0, -1)]
            raw += [json.dumps(json.loads(v)[0]) for v in client.hvals("unacked")]
    except Exception as e:
        raise ServiceUnavailable(f"cannot read the queues of the broker {broker_url}: {e}") from None
    return {json.loads(m).get("headers", {}).get("id") for m in raw} - {None}


def revoke(broker_url: str, task_ids: list[str]) -> None:
    """Best effort: a revoked message is dropped by workers; our DB flag is what really cancels."""
    if task_ids:
        try:
            _app(broker_url).control.revoke(task_ids)
        except Exception:
            pass
