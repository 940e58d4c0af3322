"""Celery tasks: a thin shell around farm.worker.runner.run_job."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from farm.db.status import JobStatus
from farm.worker.celery_app import TASK_RUN_JOB


@shared_task(name=TASK_RUN_JOB, bind=True)
def run_job(self, job_id: int) -> str:
    """Run job `job_id`; the database decides whether this delivery is the one that runs."""
    from farm.worker.runner import run_job as run

    try:
        return str(run(int(job_id)))
    except SoftTimeLimitExceeded:
        return str(JobStatus.FAILED)
