"""The farm for real: Redis broker, PostgreSQL results, `farm worker` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from sqlalchemy import func, select

from farm import db
from farm.db.models import Artifact, Job, LayerTiming, Metrics, Stage
from farm.db.status import JobStatus

from .conftest import TINY, run_farm, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _jobs() -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def _job(job_id: int) -> Job:
    with db.session() as s:
        return s.get(Job, job_id)


def _count(model, **where) -> int:
    with db.session() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return s.scalar(stmt)


def _submit(env, *args) -> int:
    r = run_farm(["submit", "tiny", *TINY, *args, "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["job_id"]


def _all_finished():
    jobs = _jobs()
    return jobs if jobs and all(j.status.is_finished for j in jobs) else None


SWEEP = """
name: twelve
grid:
  sparsity: [0.3, 0.5, 0.7, 0.9]
  scheme: [fp32, kmeans, linear]
  bits: [4]
fixed:
  model: tiny
  dataset: synthetic
  device: cpu
  recipe: quick
  subset: 256
  epochs: 1
  retrain_epochs: 1
  finetune_epochs: 1
"""


def test_sweep_of_twelve_jobs_drained_by_two_workers(workers, farm_cluster, tmp_path):
    workers.start(2)
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    r = run_farm(["sweep", "submit", str(path), "--priority", "5", "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)[0]
    assert sweep["jobs"] == 12 and sweep["new"] == 12

    jobs = wait_for(_all_finished, timeout=240, every=1, what="12 jobs to finish")
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 12, [(j.id, j.message) for j in jobs]
    assert _count(Metrics) == 12
    assert len({j.worker.rsplit(":", 1)[0] for j in jobs}) >= 1
    # One dense baseline for all 12, one pruned model per sparsity, one compressed file per job.
    assert _count(Artifact, stage="train") == 1
    assert _count(Artifact, stage="prune") == 4
    assert _count(Artifact, stage="quantize") == 12
    assert _count(Stage, name="train", status="reused") == 11
    assert db.session  # results are in PostgreSQL:
    assert os.environ["FARM_DB_URL"].startswith("postgresql")

    r = run_farm(["results", "--sweep", str(sweep["sweep_id"]), "--scheme", "kmeans", "--format", "csv"],
                 farm_cluster)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 + 4 and lines[0].startswith("job_id,model,dataset")

    r = run_farm(["sweep", "status", str(sweep["sweep_id"]), "--format", "json"], farm_cluster)
    assert json.loads(r.stdout)[0]["succeeded"] == 12

    # Submitting the same sweep again creates no job and sends nothing.
    r = run_farm(["sweep", "submit", str(path), "--format", "json"], farm_cluster)
    again = json.loads(r.stdout)[0]
    assert (again["jobs"], again["new"], again["sent"]) == (12, 0, 0)
    assert _count(Job) == 12


SLOW = ["--subset", "1024", "--batch-size", "256", "--epochs", "25", "--retrain-epochs", "1", "--finetune-epochs", "0",
        "--scheme", "fp32"]


def _running_in_train(job_id):
    job = _job(job_id)
    return job if job.status == JobStatus.RUNNING and job.stage == "train" and job.progress > 0.02 else None


def test_sigkill_of_pool_child_mid_job_redelivers_and_finishes_once(workers, farm_cluster):
    workers.start(1)
    job_id = _submit(farm_cluster, *SLOW, "--seed", "11")
    job = wait_for(lambda: _running_in_train(job_id), timeout=60, what="the job to be training")
    child = int(job.worker.rsplit(":", 1)[1])
    os.kill(child, signal.SIGKILL)  # the process running the job; the worker's parent survives

    done = wait_for(lambda: _job(job_id).status.is_finished and _job(job_id), timeout=120,
                    what="the redelivered job to finish")
    assert done.status == JobStatus.SUCCEEDED, done.message
    assert done.attempts == 2 and done.worker != job.worker
    assert _count(Metrics, job_id=job_id) == 1
    assert _count(Stage, job_id=job_id) == 4


def test_sigkill_of_whole_worker_is_redelivered_to_another(workers, farm_cluster):
    # A short visibility timeout stands in for hours; Redis gives the unacked job to worker 2.
    fast = {"FARM_VISIBILITY_TIMEOUT": "4"}
    [first] = workers.start(1, extra_env=fast)
    job_id = _submit(farm_cluster, *SLOW, "--seed", "12")
    job = wait_for(lambda: _running_in_train(job_id), timeout=60, what="the job to be training")
    workers.kill(first)
    workers.start(1, extra_env=fast, wait=False)
    try:
        done = wait_for(lambda: _job(job_id).status.is_finished and _job(job_id), timeout=150,
                        every=1, what="the job to finish on the second worker")
    except AssertionError:
        import redis

        client = redis.Redis.from_url(farm_cluster["FARM_BROKER_URL"])
        keys = {k: client.type(k) for k in client.keys("*")}
        j = _job(job_id)
        raise AssertionError(f"job {j.status} attempts={j.attempts} worker={j.worker} msg={j.message}; "
                             f"redis keys {keys}\n{workers.logs()}") from None
    assert done.status == JobStatus.SUCCEEDED, done.message
    assert done.attempts == 2 and done.worker != job.worker
    assert _count(Metrics, job_id=job_id) == 1


def test_two_workers_train_a_step_two_jobs_share_once(workers, farm_cluster):
    """A 97% job submitted while a 90% job prunes, on a second worker: its first step is the
    90% job's whole prune, so it does not train it too. Nor does it hold its worker while that
    prune runs: it goes back on the queue ("waiting for job N", the attempt not counted), and the
    worker runs a third job meanwhile."""
    workers.start(2, extra_env={"FARM_DEFER_S": "2"})
    shared = [*TINY, "--subset", "1024", "--retrain-epochs", "12", "--seed", "13"]
    plain = _submit(farm_cluster, *shared, "--sparsity", "0.9")
    wait_for(lambda: _job(plain).stage == "prune", timeout=60, what="the 90% job to prune")
    stepped = _submit(farm_cluster, *shared, "--sparsity", "0.97")
    def back_on_the_queue():
        j = _job(stepped)
        return j if (j.status, j.message, j.worker) == ("queued", f"waiting for job {plain}", None) else None

    deferred = wait_for(back_on_the_queue, timeout=60, every=0.1, what="the 97% job to go back on the queue")
    assert deferred.attempts == 0 and _job(plain).status == "running"
    other = _submit(farm_cluster, "--seed", "14")  # its own dense model: nothing to wait for
    jobs = wait_for(_all_finished, timeout=240, every=1, what="the three jobs to finish")
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 3, [(j.id, j.message) for j in jobs]
    by_id = {j.id: j for j in jobs}
    assert by_id[stepped].attempts == 1  # the deferred rounds are not attempts
    with db.session() as s:
        prunes = {st.job_id: st for st in s.scalars(select(Stage).where(Stage.name == "prune"))}
    assert prunes[plain].status == "succeeded"
    # the third job ran while the 90% job pruned: the worker was given back
    assert by_id[other].started_at < prunes[plain].finished_at
    first = prunes[stepped].result["steps"][0]  # waited for the 90% job's prune, then took it
    assert (first["reused"], first["from_job"], first["accuracy"]) == (True, plain, prunes[plain].result["accuracy"])
    assert prunes[stepped].finished_at > prunes[plain].finished_at  # then trained its own two steps


def test_concurrent_submits_of_one_spec_make_one_job_and_one_message(farm_cluster, redis_url):
    import redis

    results = []

    def submit():
        results.append(run_farm(["submit", "tiny", *TINY, "--seed", "21", "--format", "json"], farm_cluster))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    ids = {json.loads(r.stdout)[0]["job_id"] for r in results}
    assert len(ids) == 1 and _count(Job) == 1
    assert sum(json.loads(r.stdout)[0]["created"] for r in results) == 1
    client = redis.Redis.from_url(redis_url)
    # No worker yet: exactly one message waits (priority lists are named cpu, cpu:1 .. cpu:9).
    assert sum(client.llen(k) for k in client.keys("cpu*") if client.type(k) == b"list") == 1

    forced = _submit(farm_cluster, "--seed", "21", "--force")
    assert forced not in ids and _count(Job) == 2


def test_cancel_waiting_and_running_jobs(workers, farm_cluster):
    waiting = _submit(farm_cluster, "--seed", "31")
    r = run_farm(["cancel", str(waiting), "--format", "json"], farm_cluster)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["status"] == "cancelled"

    workers.start(1)
    long = [*SLOW[:5], "400", *SLOW[6:]]  # it gets cancelled: long enough never to finish first
    running = _submit(farm_cluster, *long, "--seed", "32")
    wait_for(lambda: _running_in_train(running), timeout=120, what="the job to be training")
    # Celery's own tools see the worker and its job.
    env = {k: v for k, v in os.environ.items()}
    inspect = subprocess.run([sys.executable, "-m", "celery", "-A", "farm.worker.celery_app", "inspect",
                              "active", "--json", "-t", "5"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    active = [t for tasks in json.loads(inspect.stdout.strip().splitlines()[-1]).values() for t in tasks]
    assert [t["name"] for t in active] == ["farm.run_job"] and active[0]["args"] == [running]
    r = run_farm(["cancel", str(running), "--format", "json"], farm_cluster)
    assert json.loads(r.stdout)[0]["note"].startswith("cancel requested")
    done = wait_for(lambda: _job(running).status.is_finished and _job(running), timeout=30,
                    what="the running job to stop")
    assert done.status == JobStatus.CANCELLED
    assert _count(Metrics) == 0
    assert _job(waiting).status == JobStatus.CANCELLED and _job(waiting).attempts == 0  # never ran
    with db.session() as s:
        assert s.scalar(select(Stage.status).where(Stage.job_id == running, Stage.name == "train")) == "cancelled"

    # Submitting a cancelled spec again runs it.
    again = _submit(farm_cluster, "--seed", "31")
    assert again == waiting
    wait_for(lambda: _job(waiting).status == JobStatus.SUCCEEDED, timeout=60, what="the re-run")
    assert _count(LayerTiming) == 0  # CPU: benchmark skipped, recorded as such
    with db.session() as s:
        assert s.scalar(select(Stage.message).where(Stage.job_id == waiting, Stage.name == "benchmark")
                        ).startswith("skipped: no GPU")


def test_sweep_cancel_resume_and_scheduled_start(farm_cluster, tmp_path, redis_url):
    import redis

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    r = run_farm(["sweep", "submit", str(path), "--format", "json"], farm_cluster)
    sweep_id = json.loads(r.stdout)[0]["sweep_id"]
    r = run_farm(["sweep", "cancel", str(sweep_id), "--format", "json"], farm_cluster)
    assert {row["status"] for row in json.loads(r.stdout)} == {"cancelled"}

    r = run_farm(["sweep", "resume", str(sweep_id), "--format", "json"], farm_cluster)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["sent"] == 12
    assert {j.status for j in _jobs()} == {JobStatus.QUEUED}
    r = run_farm(["sweep", "resume", str(sweep_id), "--format", "json"], farm_cluster)
    assert json.loads(r.stdout)[0]["sent"] == 0  # nothing failed or missing: nothing re-sent

    # --at: a second sweep's jobs wait on the broker with an ETA, at the given priority.
    other = tmp_path / "other.yaml"
    other.write_text(SWEEP.replace("seed", "x") + "  seed: 5\n")
    r = run_farm(["sweep", "submit", str(other), "--at", "03:30", "--priority", "7", "--format", "json"],
                 farm_cluster)
    assert r.returncode == 0, r.stderr
    later = json.loads(r.stdout)[0]
    assert later["start_at"] and later["sent"] == 12
    scheduled = [j for j in _jobs() if j.status == JobStatus.SCHEDULED]
    assert len(scheduled) == 12 and all(j.priority == 7 for j in scheduled)
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(m) for k in client.keys("cpu*") if client.type(k) == b"list"
                for m in client.lrange(k, 0, -1)]
    assert sum(1 for m in messages if m["headers"].get("eta")) == 12
    assert client.llen("cpu:2") == 12  # farm priority 7 is Redis priority 2 (lower runs first)


def test_whole_worker_killed_its_job_is_sent_again_by_the_next_worker(workers, farm_cluster):
    # The default visibility timeout (hours) holds the old message back: the new worker finds the
    # job running under a dead process when it starts, and queues it again.
    [first] = workers.start(1)
    job_id = _submit(farm_cluster, *SLOW, "--seed", "13")
    job = wait_for(lambda: _running_in_train(job_id), timeout=60, what="the job to be training")
    workers.kill(first)
    workers.start(1, wait=False)
    done = wait_for(lambda: _job(job_id).status.is_finished and _job(job_id), timeout=150, every=1,
                    what="the job to finish on the second worker")
    assert done.status == JobStatus.SUCCEEDED, done.message
    assert done.attempts == 2 and done.worker != job.worker
    assert _count(Metrics, job_id=job_id) == 1
    assert _count(Stage, job_id=job_id) == 4
    assert "sent again" in workers.logs()
