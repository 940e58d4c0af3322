"""Fault paths: a cancel for a job whose worker is gone, a submit that died before publishing, a
result write that fails, the hard time limit's bookkeeping (its worker test: test_time_limit.py),
and Celery's soft time limit inside the kernel libraries."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from farm import db
from farm.db.models import Job, Metrics, utcnow
from farm.db.status import JobStatus
from farm.scheduler.control import cancel
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import record
from farm.worker import owners
from farm.worker.runner import run_job

from .conftest import wait_for
from .test_lifecycle import NOOP, _dead_pid, _get, _job



def _spec(seed: int) -> JobSpec:
    return JobSpec(**NOOP, seed=seed).resolve()


def _cancel_running_under_dead_and_live_owners() -> None:
    from datetime import timedelta

    dead = _job(1, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1, stage="noop")
    live = _job(2, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()), attempts=1)
    stale = _job(3, status=JobStatus.RUNNING, worker="elsewhere:1", attempts=1,
                 heartbeat_at=utcnow() - timedelta(seconds=owners.STALE_AFTER_S + 1))
    here = _job(4, status=JobStatus.RUNNING, worker=owners.owner_id(), attempts=1)

    for job_id in (dead, stale):
        result = cancel(job_id)
        assert result.status == JobStatus.CANCELLED, result
        job = _get(job_id)
        assert job.status == JobStatus.CANCELLED and job.finished_at is not None
        assert job.message == "cancelled (its worker was gone)" and job.stage is None
    # A live owner, or this very process, sees the flag at its next epoch or stage.
    for job_id in (live, here):
        assert cancel(job_id).status == JobStatus.RUNNING
        job = _get(job_id)
        assert job.status == JobStatus.RUNNING and job.cancel_requested


def test_cancel_of_a_job_whose_worker_is_gone_closes_it_at_once_sqlite(farm_home):
    _cancel_running_under_dead_and_live_owners()


@pytest.mark.services
def test_cancel_of_a_job_whose_worker_is_gone_closes_it_at_once_postgresql(farm_cluster):
    _cancel_running_under_dead_and_live_owners()  # the row lock path (SELECT .. FOR UPDATE)


@pytest.mark.services
def test_cancel_waits_for_the_row_lock_a_worker_holds(farm_cluster):
    import threading

    job_id = _job(8, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()))
    results = []
    with db.session() as s:  # a worker's finish holds the row while it records success
        s.get(Job, job_id, with_for_update=True).status = JobStatus.SUCCEEDED
        thread = threading.Thread(target=lambda: results.append(cancel(job_id)))
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and not results  # waits for the lock
    thread.join(10)
    # Cancel decided on the committed row; unlocked, it would have read "running" and then
    # overwritten the success with "cancelled".
    assert results and results[0].status == JobStatus.SUCCEEDED
    assert _get(job_id).status == JobStatus.SUCCEEDED


def test_resubmit_of_a_dead_running_job_clears_a_cancel_its_owner_never_saw(farm_home):
    # Cancel flagged while the owner was alive; the owner died before it looked.
    job_id = _job(5, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()),
                  attempts=1, cancel_requested=True)
    with db.session() as s:
        [sub] = record(s, [_spec(5)], status=JobStatus.QUEUED)
    assert sub.requeued
    assert not _get(job_id).cancel_requested
    assert run_job(job_id) == JobStatus.SUCCEEDED  # not "cancelled before it started"
    assert _get(job_id).attempts == 2


def test_a_failed_result_write_fails_the_job_instead_of_leaving_it_running(farm_home, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    from farm.worker import runner

    def boom(*args, **kwargs):
        raise IntegrityError("INSERT INTO metrics ...", {}, Exception("duplicate key value\nDETAIL: x"))

    monkeypatch.setattr(runner, "write_results", boom)
    job_id = _job(6)
    assert run_job(job_id) == JobStatus.FAILED
    job = _get(job_id)
    assert job.status == JobStatus.FAILED and job.finished_at is not None
    assert job.message.startswith("could not record results: ")
    assert "\n" not in job.message and "duplicate key value" in job.message
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics)) == 0


def test_the_hard_time_limit_fails_only_the_attempt_it_killed(farm_home):
    from farm.worker import lifecycle

    job_id = _job(9)
    claim = lifecycle.claim(job_id, owners.owner_id(_dead_pid()))  # the attempt in the killed process
    assert not lifecycle.fail_overrun(job_id, owners.owner_id(os.getppid()), 4)  # not that process's
    assert _get(job_id).status == JobStatus.RUNNING
    assert lifecycle.fail_overrun(job_id, claim.owner, 4)
    job = _get(job_id)
    assert job.status == JobStatus.FAILED and job.message.startswith("hard time limit of 4 s exceeded")
    # Results the killed attempt was writing as it died are refused: no second set of rows.
    add = lambda s, job: s.add(Metrics(job_id=job.id, bits=32, scheme="fp32"))  # noqa: E731
    assert not lifecycle.finish(claim, JobStatus.SUCCEEDED, write=add)
    # An attempt that finished before the kill keeps its outcome and its one result row.
    done = _job(10)
    assert run_job(done) == JobStatus.SUCCEEDED
    assert not lifecycle.fail_overrun(done, _get(done).worker, 4)
    assert _get(done).status == JobStatus.SUCCEEDED
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics)) == 1


@pytest.mark.services
@pytest.mark.slow
def test_a_queued_job_whose_message_was_never_published_is_sent_again(workers, farm_cluster, redis_url):
    import redis

    from datetime import timedelta

    from farm.scheduler.queue import task_ids_in_broker
    from farm.scheduler.submission import PUBLISH_GRACE_S, submit

    first = submit(_spec(7))
    assert first.created and first.status == JobStatus.QUEUED
    # The state a submit leaves when it dies between its commit and its publish: no task id, no message.
    client = redis.Redis.from_url(redis_url)
    for key in client.keys("cpu*"):
        client.delete(key)
    with db.session() as s:
        s.get(Job, first.job_id).task_id = None
    assert task_ids_in_broker(redis_url) == set()
    # Within the grace a submit may still be publishing it (a concurrent submit): not doubled.
    assert submit(_spec(7)).requeued is False
    with db.session() as s:  # the submit died longer ago than that
        job = s.get(Job, first.job_id)
        job.created_at -= timedelta(seconds=PUBLISH_GRACE_S + 1)

    again = submit(_spec(7))
    assert (again.job_id, again.created, again.requeued) == (first.job_id, False, True)
    task_id = _get(first.job_id).task_id
    assert task_id is not None and task_ids_in_broker(redis_url) == {task_id}
    assert submit(_spec(7)).requeued is False  # now it has its message: not doubled

    workers.start(1)
    wait_for(lambda: _get(first.job_id).status.is_finished, timeout=120, what="the job finished")
    job = _get(first.job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics)) == 1


# --- Celery's soft time limit stops kernel tuning and benchmarks (kernels never import celery) ---

def test_soft_time_limit_is_not_swallowed_by_autotune_or_the_cusparse_baseline(monkeypatch):
    import torch
    from celery.exceptions import SoftTimeLimitExceeded

    from farm.kernels import autotune, bench

    def layer(error: Exception):
        def make_plan(*args):
            raise error
        return SimpleNamespace(reference=lambda x, dtype: x.to(dtype), make_plan=make_plan,
                               extra_repr=lambda: "fake")

    stream = SimpleNamespace(wait_stream=lambda other: None, synchronize=lambda: None)
    monkeypatch.setattr(autotune.runtime, "stream", lambda: stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: None)
    configs = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    with pytest.raises(RuntimeError, match="no tile config ran correctly"):  # other errors: rejected
        autotune.tune(layer(ValueError("bad tile")), (1, 1, 4, 4), torch.float32, "cpu", configs)
    with pytest.raises(SoftTimeLimitExceeded):
        autotune.tune(layer(SoftTimeLimitExceeded()), (1, 1, 4, 4), torch.float32, "cpu", configs)

    w, x = torch.randn(2, 1, 3, 3), torch.randn(1, 1, 5, 5)
    params = {"dilation": 1, "padding": 1, "stride": 1}

    def timing(error: Exception):
        def time_eager(*args, **kwargs):
            raise error
        return time_eager

    monkeypatch.setattr(bench, "time_eager", timing(RuntimeError("no cuSPARSE")))
    assert bench._cusparse(w, params, x) == {"cusparse_error": "no cuSPARSE"}
    monkeypatch.setattr(bench, "time_eager", timing(SoftTimeLimitExceeded()))
    with pytest.raises(SoftTimeLimitExceeded):
        bench._cusparse(w, params, x)
