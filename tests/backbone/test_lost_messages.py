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
