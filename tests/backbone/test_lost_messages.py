"""A Redis that loses its queue (restart without its append-only file, a purge) loses no job:
`farm sweep resume` finds queued jobs whose message is gone, sends them again, and a worker then
finishes each exactly once."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from farm import db
from farm.db.models import Job, Metrics
from farm.db.status import JobStatus

from .conftest import run_farm, wait_for
from .test_cluster import SWEEP

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _statuses() -> list[JobStatus]:
    with db.session() as s:
        return list(s.scalars(select(Job.status).order_by(Job.id)))


def test_resume_resends_only_lost_messages_and_each_job_runs_once(workers, farm_cluster, tmp_path,
                                                                   redis_url):
    import redis

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    r = run_farm(["sweep", "submit", str(path), "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr
    sweep_id = json.loads(r.stdout)[0]["sweep_id"]
    client = redis.Redis.from_url(redis_url)
    queue_keys = [k for k in client.keys("cpu*") if client.type(k) == b"list"]
    assert sum(client.llen(k) for k in queue_keys) == 12

    # Nothing lost: resume sends nothing (no doubled messages).
    r = run_farm(["sweep", "resume", str(sweep_id), "--format", "json"], farm_cluster)
    assert json.loads(r.stdout)[0]["sent"] == 0

    # Lose 5 of the 12 messages, as a broker restart without persistence would.
    for _ in range(5):
        client.rpop(queue_keys[0])
    r = run_farm(["sweep", "resume", str(sweep_id), "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["sent"] == 5
    assert sum(client.llen(k) for k in queue_keys) == 12

    workers.start(2)
    wait_for(lambda: all(s.is_finished for s in _statuses()) or None, timeout=240,
             what="all 12 jobs finished")
    assert _statuses() == [JobStatus.SUCCEEDED] * 12
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics)) == 12  # one result row per job
        assert set(s.scalars(select(Job.attempts))) == {1}


# --- a job scheduled for later (sweep --at) whose message is lost -----------------------------

SCHEDULED_SWEEP = """
name: later
grid:
  seed: [1]
fixed: {model: tiny, dataset: synthetic, device: cpu, stages: [noop]}
"""


def _submit_later(tmp_path, minutes: int = 3):
    """A one-job sweep submitted with --at a few minutes from now: the job is SCHEDULED."""
    from datetime import datetime, timedelta

    from farm.scheduler import sweep

    path = tmp_path / "later.yaml"
    path.write_text(SCHEDULED_SWEEP)
    at = (datetime.now() + timedelta(minutes=minutes)).strftime("%H:%M")
    done = sweep.submit(sweep.load(path), at=at)
    [job_id] = done.job_ids
    assert _job(job_id).status == JobStatus.SCHEDULED
    return done, job_id


def _job(job_id: int) -> Job:
    with db.session() as s:
        return s.get(Job, job_id)


def _messages(redis_url) -> list[dict]:
    """The run messages waiting in the cpu queue (every priority level)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [k for k in client.keys("cpu*") if client.type(k) == b"list"]
    return [json.loads(m) for k in keys for m in client.lrange(k, 0, -1)]


def _lose_messages(redis_url) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.keys("cpu*"):
        client.delete(key)
    assert _messages(redis_url) == []


def _eta(message: dict):
    from datetime import UTC, datetime

    return datetime.fromisoformat(message["headers"]["eta"]).astimezone(UTC).replace(tzinfo=None)


def test_resume_resends_a_lost_scheduled_job_once_and_keeps_its_start_time(workers, farm_cluster,
                                                                          tmp_path, redis_url):
    from datetime import timedelta

    from farm.db.models import Sweep, utcnow
    from farm.scheduler import sweep

    done, job_id = _submit_later(tmp_path)
    [message] = _messages(redis_url)
    assert _eta(message) == done.start_at

    _lose_messages(redis_url)
    assert sweep.resume(done.sweep_id).sent == 1
    [message] = _messages(redis_url)
    assert _eta(message) == done.start_at  # still its start time, not now
    assert _job(job_id).status == JobStatus.SCHEDULED
    assert sweep.resume(done.sweep_id).sent == 0  # its message is there again: not doubled
    assert len(_messages(redis_url)) == 1

    # The start time comes closer (a few seconds away) and the message is lost once more.
    start = utcnow() + timedelta(seconds=8)
    with db.session() as s:
        s.get(Sweep, done.sweep_id).start_at = start
    _lose_messages(redis_url)
    assert sweep.resume(done.sweep_id).sent == 1
    [message] = _messages(redis_url)
    assert abs((_eta(message) - start).total_seconds()) < 1e-3

    workers.start(1)
    wait_for(lambda: _job(job_id).status.is_finished, timeout=120, what="the scheduled job finished")
    job = _job(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    assert job.started_at >= start - timedelta(seconds=1)  # not before its start time
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Metrics)) == 1


def test_a_scheduled_job_never_published_is_sent_again_after_the_grace_keeping_its_start_time(
        farm_cluster, tmp_path, redis_url):
    from datetime import timedelta

    from farm.scheduler import sweep
    from farm.scheduler.spec import JobSpec
    from farm.scheduler.submission import PUBLISH_GRACE_S, submit

    done, job_id = _submit_later(tmp_path)
    # The state a submit leaves when it dies between its commit and its publish.
    _lose_messages(redis_url)
    with db.session() as s:
        s.get(Job, job_id).task_id = None
    spec = JobSpec.from_dict(_job(job_id).spec)
    # Within the grace a submit may still be publishing it: neither resume nor a resubmit sends it.
    assert sweep.resume(done.sweep_id).sent == 0
    assert submit(spec).requeued is False
    assert _messages(redis_url) == []
    with db.session() as s:
        s.get(Job, job_id).created_at -= timedelta(seconds=PUBLISH_GRACE_S + 1)

    again = submit(spec)  # the same spec submitted again, without --at
    assert (again.job_id, again.requeued) == (job_id, True)
    [message] = _messages(redis_url)
    assert _eta(message) == done.start_at
    job = _job(job_id)
    assert job.status == JobStatus.SCHEDULED and job.task_id == message["headers"]["id"]
    assert sweep.resume(done.sweep_id).sent == 0 and submit(spec).requeued is False
    assert len(_messages(redis_url)) == 1


def test_resuming_a_cancelled_scheduled_sweep_waits_for_its_start_time(farm_cluster, tmp_path, redis_url):
    from farm.scheduler import sweep

    done, job_id = _submit_later(tmp_path)
    sweep.cancel(done.sweep_id)
    assert _job(job_id).status == JobStatus.CANCELLED
    again = sweep.resume(done.sweep_id)
    assert again.sent == 1 and again.start_at == done.start_at
    job = _job(job_id)
    assert job.status == JobStatus.SCHEDULED  # as `sweep status` shows it: not queued for now
    [message] = [m for m in _messages(redis_url) if m["headers"]["id"] == job.task_id]
    assert _eta(message) == done.start_at


def _second_sweep(tmp_path, at: str | None = None):
    """Another sweep with the scheduled sweep's job (seed 1) and one of its own (seed 2)."""
    from farm.scheduler import sweep

    path = tmp_path / "now.yaml"
    path.write_text(SCHEDULED_SWEEP.replace("name: later", "name: now").replace("seed: [1]", "seed: [1, 2]"))
    return sweep.submit(sweep.load(path), at=at)


def test_a_sweep_for_now_runs_the_job_it_shares_with_a_later_sweep_now(farm_cluster, tmp_path, redis_url):
    """It waited for the other sweep's --at without a word (a new-user walkthrough); now it is
    sent for now too, and the later message finds it done."""
    later, shared = _submit_later(tmp_path)
    now = _second_sweep(tmp_path)
    assert now.sent == 2 and shared in now.job_ids
    job = _job(shared)
    assert job.status == JobStatus.QUEUED
    by_id = {m["headers"]["id"]: m for m in _messages(redis_url)}
    assert len(by_id) == 3 and by_id[job.task_id]["headers"].get("eta") is None
    assert _second_sweep(tmp_path).sent == 0  # submitted again: nothing doubled


def test_cancelling_a_sweep_leaves_the_jobs_another_sweep_wants(farm_cluster, tmp_path, farm_cli):
    later, shared = _submit_later(tmp_path)
    other = _second_sweep(tmp_path)
    own = next(j for j in other.job_ids if j != shared)
    r = farm_cli(["sweep", "cancel", str(later.sweep_id), "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    assert row == {"job_id": shared, "status": "queued", "note": f"kept: sweep {other.sweep_id} wants it too"}
    assert _job(shared).status == JobStatus.QUEUED
    r = farm_cli(["sweep", "cancel", str(other.sweep_id), "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr  # the first sweep is cancelled: nobody else wants them now
    assert {(x["job_id"], x["status"]) for x in json.loads(r.stdout)} == {(shared, "cancelled"), (own, "cancelled")}


def test_an_earlier_sweep_brings_a_shared_job_to_its_own_start_time(farm_cluster, tmp_path, redis_url):
    from datetime import datetime, timedelta

    later, shared = _submit_later(tmp_path, minutes=3)
    sooner = _second_sweep(tmp_path, at=(datetime.now() + timedelta(minutes=1)).strftime("%H:%M"))
    assert sooner.start_at < later.start_at and sooner.sent == 2
    job = _job(shared)
    assert job.status == JobStatus.SCHEDULED
    [message] = [m for m in _messages(redis_url) if m["headers"]["id"] == job.task_id]
    assert _eta(message) == sooner.start_at  # its new message is for the earlier sweep's time


def test_a_shared_job_brought_forward_whose_send_fails_keeps_its_own_time(farm_cluster, tmp_path, redis_url,
                                                                            monkeypatch):
    """Not failed 'could not be re-sent': its message for the later sweep is still there."""
    from farm.scheduler import queue

    later, shared = _submit_later(tmp_path)
    before = _job(shared).task_id

    def refuse(*args, **kwargs):
        raise ConnectionError("broker went away")

    monkeypatch.setattr(queue, "enqueue", refuse)
    with pytest.raises(ConnectionError):
        _second_sweep(tmp_path)
    job = _job(shared)
    assert (job.status, job.task_id, job.message) == (JobStatus.SCHEDULED, before, None)


def test_resume_sends_a_scheduled_job_long_past_its_time_though_its_message_looks_present(
        farm_cluster, tmp_path, redis_url):
    """A worker killed while it held the delayed message leaves it 'unacknowledged' in Redis for
    hours: present to a look at the broker, yet nobody will run it (a new-user walkthrough)."""
    from datetime import timedelta

    from farm.db.models import Sweep, utcnow
    from farm.db.queries import OVERDUE_S
    from farm.scheduler import sweep

    done, job_id = _submit_later(tmp_path)
    assert sweep.resume(done.sweep_id).sent == 0  # before its time: left alone
    with db.session() as s:
        s.get(Sweep, done.sweep_id).start_at = utcnow() - timedelta(seconds=OVERDUE_S + 5)
    assert sweep.resume(done.sweep_id).sent == 1
    job = _job(job_id)
    assert job.status == JobStatus.QUEUED
    [message] = [m for m in _messages(redis_url) if m["headers"]["id"] == job.task_id]
    assert message["headers"].get("eta") is None  # now: its time has passed


def test_resuming_a_sweep_for_now_runs_its_job_a_later_sweep_holds_now(farm_cluster, tmp_path, redis_url):
    """Its failed job, submitted again since by a sweep for later, waited for that hour though
    this sweep was resumed to run it now."""
    from datetime import datetime, timedelta

    from farm.scheduler import sweep

    now = _second_sweep(tmp_path)
    shared = next(j for j in now.job_ids if _job(j).spec["seed"] == 1)
    with db.session() as s:
        s.get(Job, shared).status = JobStatus.FAILED
    path = tmp_path / "later.yaml"
    path.write_text(SCHEDULED_SWEEP)
    sweep.submit(sweep.load(path), at=(datetime.now() + timedelta(minutes=3)).strftime("%H:%M"))
    assert _job(shared).status == JobStatus.SCHEDULED  # reset by the later sweep, for its time
    assert sweep.resume(now.sweep_id).sent == 1
    job = _job(shared)
    assert job.status == JobStatus.QUEUED
    [message] = [m for m in _messages(redis_url) if m["headers"]["id"] == job.task_id]
    assert message["headers"].get("eta") is None
