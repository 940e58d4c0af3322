"""The hard time limit (FARM_JOB_TIME_LIMIT): a job stuck where the soft limit cannot reach it
(native code) has its pool process killed by Celery; the job is marked failed at once, with its
stage, and runs again when submitted again."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from farm import db
from farm.db.models import Job, Metrics, Stage
from farm.db.status import JobStatus, StageStatus
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import submit

from .conftest import wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

LIMIT_S = 4  # the hard limit of the first worker (soft: 3 s); the stall holds its process 10 s
STALL = JobSpec(model="tiny", dataset="synthetic", device="cpu", stages=("stall",), epochs=10)
WARM_UP = JobSpec(model="tiny", dataset="synthetic", device="cpu", stages=("noop",))


def _job(job_id: int) -> Job:
    with db.session() as s:
        return s.get(Job, job_id)


def _stage(job_id: int) -> Stage:
    with db.session() as s:
        return s.scalars(select(Stage).where(Stage.job_id == job_id)).one()


def _wait_finished(job_id: int, workers, timeout: float) -> Job:
    try:
        wait_for(lambda: _job(job_id).status.is_finished, timeout=timeout, what=f"job {job_id} finished")
    except AssertionError as e:
        raise AssertionError(f"{e}: {_job(job_id).status}\n{workers.logs()}") from None
    return _job(job_id)


def test_a_job_past_the_hard_time_limit_fails_at_once_and_runs_again_when_resubmitted(workers,
                                                                                        farm_cluster):
    from farm.scheduler.queue import task_ids_in_broker

    t0 = time.time()
    [worker] = workers.start(1, extra_env={"FARM_JOB_TIME_LIMIT": str(LIMIT_S)})
    # A first job warms the pool process (imports, database connection), so on a loaded machine
    # the stall still begins well inside the soft limit, which it must outlast.
    warm_id = submit(WARM_UP.resolve()).job_id
    assert _wait_finished(warm_id, workers, timeout=60).status == JobStatus.SUCCEEDED
    job_id = submit(STALL.resolve()).job_id
    # Failed when the limit kills it, not left running until its stall would have ended.
    job = _wait_finished(job_id, workers, timeout=30)
    expected = f"hard time limit of {LIMIT_S} s exceeded in stage stall"
    assert job.status == JobStatus.FAILED and job.message.startswith(expected), job.message
    assert "\n" not in job.message and job.stage is None
    assert (job.finished_at - job.started_at).total_seconds() < STALL.epochs  # at the kill, not after
    stage = _stage(job_id)
    assert stage.status == StageStatus.FAILED and stage.message == job.message
    assert stage.finished_at is not None
    wait_for(lambda: task_ids_in_broker(farm_cluster["FARM_BROKER_URL"]) == set(), timeout=10,
             what="the message acked (not to be delivered again)")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics).where(Metrics.job_id == job_id)) == 0
    assert worker.poll() is None  # the worker lives on (a new pool process)
    left = [d for d in Path(tempfile.gettempdir()).glob(f"farm-job{job_id}-p*") if d.stat().st_mtime >= t0]
    assert not left  # the killed process's scratch folder went too

    # With a longer limit, submitting it again runs it again, once.
    workers.stop_all()
    workers.start(1, extra_env={"FARM_JOB_TIME_LIMIT": "120"})
    again = submit(STALL.resolve())
    assert (again.job_id, again.requeued) == (job_id, True)
    job = _wait_finished(job_id, workers, timeout=90)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1 and job.message is None
    assert _stage(job_id).status == StageStatus.SUCCEEDED
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics).where(Metrics.job_id == job_id)) == 1
