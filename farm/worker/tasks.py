"""Celery tasks: a thin shell around farm.worker.runner.run_job."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from farm.db.status import JobStatus
from farm.worker.celery_app import TASK_RUN_JOB


# A delivery that finds its job running under another live process (a duplicate: the broker gave
# the message out again) looks again this much later instead of being dropped, so the job is not
# lost if that process then dies.
BUSY_RECHECK_S = 60


@shared_task(name=TASK_RUN_JOB, bind=True, max_retries=None)
def run_job(self, job_id: int) -> str:
    """Run job `job_id`; the database decides whether this delivery is the one that runs."""
    from farm.worker.runner import run_job as run

    try:
        status = run(int(job_id))
    except SoftTimeLimitExceeded:
        return str(JobStatus.FAILED)
    if status == JobStatus.RUNNING:
        raise self.retry(countdown=BUSY_RECHECK_S)
    return str(status)
