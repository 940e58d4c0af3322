"""Celery tasks: a thin shell around farm.worker.runner.run_job."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker import state as worker_state
from celery.worker.request import Request

from farm.db.status import JobStatus
from farm.worker.celery_app import TASK_RUN_JOB


# A delivery that finds its job running under another live process (a duplicate: the broker gave
# the message out again) looks again this much later instead of being dropped, so the job is not
# lost if that process then dies.
BUSY_RECHECK_S = 60

log = logging.getLogger("farm.worker")


class JobRequest(Request):
    """A delivery as the worker's main process sees it."""

    def on_timeout(self, soft, timeout):
        # On the hard limit billiard kills the pool process that runs the job (a soft limit it
        # did not act on: native code), so nothing of ours runs there to record it. Record it
        # here, before Celery acks the message, or the job stays RUNNING under a dead owner.
        # (A cold shutdown times out its tasks too: those are redelivered, not failed.)
        if not soft and self.worker_pid and not worker_state.should_terminate:
            _record_overrun(int(self.args[0]), self.worker_pid, timeout)
        super().on_timeout(soft, timeout)


def _record_overrun(job_id: int, pid: int, limit_s: float) -> None:
    from farm.db.session import dispose_all
    from farm.worker import lifecycle
    from farm.worker.runner import remove_workdirs

    try:
        if lifecycle.fail_overrun(job_id, lifecycle.owner_id(pid), limit_s):
            log.error("job %s: hard time limit of %s s exceeded; marked failed", job_id, limit_s)
    except Exception:  # the job then waits for a cancel or `sweep resume` to see its dead owner
        log.exception("job %s: could not record the hard time limit", job_id)
    finally:
        dispose_all()  # the next pool process is forked from here: no connection may cross
        remove_workdirs(job_id, pid)  # the killed process could not


class JobTask(Task):
    Request = JobRequest


@shared_task(name=TASK_RUN_JOB, bind=True, max_retries=None, base=JobTask)
def run_job(self, job_id: int) -> str:
    """Run job `job_id`; the database decides whether this delivery is the one that runs."""
    from farm.worker.runner import run_job as run

    try:
        status = run(int(job_id), defer=True)
    except SoftTimeLimitExceeded:
        return str(JobStatus.FAILED)
    if status == JobStatus.RUNNING:
        raise self.retry(countdown=BUSY_RECHECK_S)
    # QUEUED: it gave the worker back to wait for another job's artifact; the workers' watch sends
    # it again (farm.worker.orphans), not a countdown retry, which would wait in this worker's memory
    return str(status)
