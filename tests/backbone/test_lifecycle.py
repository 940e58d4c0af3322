"""The database's word on whether a delivery runs: claims, attempt bounds, duplicates, cancel."""

import os
import subprocess
import sys

from farm import db
from farm.db.models import Job, Metrics, Stage, utcnow
from farm.db.status import JobStatus, StageStatus
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import record
from farm.worker import owners
from farm.worker.runner import run_job

NOOP = dict(model="tiny", dataset="synthetic", device="cpu", stages=("noop",))


def _job(seed: int, **state) -> int:
    with db.session() as s:
        [sub] = record(s, [JobSpec(**NOOP, seed=seed).resolve()], status=JobStatus.QUEUED)
        job = s.get(Job, sub.job_id)
        for key, value in state.items():
            setattr(job, key, value)
        return sub.job_id


def _get(job_id: int) -> Job:
    with db.session() as s:
        return s.get(Job, job_id)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_queued_job_runs_once_and_a_second_delivery_is_a_no_op(farm_home):
    job_id = _job(1)
    assert run_job(job_id) == JobStatus.SUCCEEDED
    assert run_job(job_id) == JobStatus.SUCCEEDED
    job = _get(job_id)
    assert job.attempts == 1 and job.progress == 1.0
    with db.session() as s:
        assert s.query(Metrics).filter_by(job_id=job_id).count() == 1


def test_running_under_a_live_process_is_left_alone(farm_home):
    job_id = _job(2, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()), attempts=1)
    assert run_job(job_id) == JobStatus.RUNNING  # the Celery task re-checks later
    assert _get(job_id).attempts == 1


def test_running_under_a_dead_process_is_taken_over(farm_home):
    job_id = _job(3, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1)
    assert run_job(job_id) == JobStatus.SUCCEEDED
    assert _get(job_id).attempts == 2


def test_redelivery_is_bounded_by_attempts_in_the_database(farm_home):
    job_id = _job(4, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()),
                  attempts=3, max_attempts=3)
    with db.session() as s:  # the dead attempt's stage, as it left it
        s.add(Stage(job_id=job_id, name="train", status=StageStatus.RUNNING))
    assert run_job(job_id) == JobStatus.FAILED
    assert "gave up after 3 attempts" in _get(job_id).message
    with db.session() as s:
        [stage] = s.query(Stage).filter_by(job_id=job_id).all()
        assert (stage.status, stage.message) == (StageStatus.FAILED, "its worker died")


def test_other_host_is_judged_by_its_heartbeat(farm_home):
    from datetime import timedelta

    from farm.db.models import utcnow

    fresh = _job(5, status=JobStatus.RUNNING, worker="elsewhere:1", heartbeat_at=utcnow(), attempts=1)
    stale = _job(6, status=JobStatus.RUNNING, worker="elsewhere:1", attempts=1,
                 heartbeat_at=utcnow() - timedelta(seconds=owners.STALE_AFTER_S + 1))
    assert run_job(fresh) == JobStatus.RUNNING
    assert run_job(stale) == JobStatus.SUCCEEDED


def test_cancel_before_start_means_it_never_runs(farm_home):
    job_id = _job(7, cancel_requested=True)
    assert run_job(job_id) == JobStatus.CANCELLED
    assert _get(job_id).attempts == 0


def test_resubmitting_a_running_job_never_resets_it(farm_home):
    from farm.scheduler.submission import record as resubmit

    alive = _job(8, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()), attempts=1)
    dead = _job(9, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1)
    with db.session() as s:
        subs = resubmit(s, [JobSpec(**NOOP, seed=8).resolve(), JobSpec(**NOOP, seed=9).resolve()],
                        status=JobStatus.QUEUED)
    assert [(x.job_id, x.requeued) for x in subs] == [(alive, False), (dead, True)]
    assert _get(alive).status == _get(dead).status == JobStatus.RUNNING  # the claim takes over
    assert run_job(dead) == JobStatus.SUCCEEDED and _get(dead).attempts == 2


def test_orphans_are_running_jobs_whose_process_here_is_gone_and_one_scanner_requeues_each(farm_home):
    from datetime import timedelta

    from farm.db.models import utcnow
    from farm.worker import orphans

    dead = _job(20, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1, stage="train")
    with db.session() as s:  # the dead attempt's stage, as it left it
        s.add(Stage(job_id=dead, name="train", status=StageStatus.RUNNING))
    # elsewhere, a heartbeat is judged by that host's clock: left to the redelivery's claim
    _job(21, status=JobStatus.RUNNING, worker="elsewhere:7", attempts=1,
         heartbeat_at=utcnow() - timedelta(seconds=owners.STALE_AFTER_S + 1))
    _job(22, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()), attempts=1)  # alive
    _job(23, status=JobStatus.RUNNING, worker=owners.owner_id(), attempts=1)  # this very process
    _job(24, status=JobStatus.QUEUED)
    cancelled = _job(25, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1,
                     cancel_requested=True)
    found = dict(orphans.orphans())
    assert set(found) == {dead, cancelled}

    # two workers scanning at once: one of them sends the message
    assert orphans.requeue(dead, found[dead], "farm-job-a") == ("cpu", 0)
    assert orphans.requeue(dead, found[dead], "farm-job-b") is None
    job = _get(dead)
    assert (job.status, job.task_id, job.stage) == (JobStatus.QUEUED, "farm-job-a", None)
    with db.session() as s:
        [stage] = s.query(Stage).filter_by(job_id=dead).all()
        assert stage.status == StageStatus.FAILED and "sent again" in stage.message
    # the next delivery claims it as a new attempt, bounded by max_attempts as any redelivery
    assert run_job(dead) == JobStatus.SUCCEEDED
    assert _get(dead).attempts == 2
    # a cancel that was waiting for the dead attempt ends the job instead
    assert orphans.requeue(cancelled, found[cancelled], "farm-job-c") is None
    assert _get(cancelled).status == JobStatus.CANCELLED


def test_an_orphan_whose_message_cannot_be_sent_stays_an_orphan(farm_home):
    from farm.worker import orphans
    from farm.worker.celery_app import make_app

    dead = _job(26, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1)
    no_broker = make_app("redis://127.0.0.1:1/0")  # nothing listens on port 1
    no_broker.conf.update(task_publish_retry=False, broker_connection_retry=False, broker_connection_max_retries=1)
    assert orphans.adopt(no_broker) == []
    assert _get(dead).status == JobStatus.RUNNING and dict(orphans.orphans()).keys() == {dead}


def test_status_says_a_running_job_is_lost_or_waits_for_its_cancel(farm_home, farm_env, farm_cli):
    import json

    from farm.scheduler.control import LOST, LOST_HERE

    lost = _job(30, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1)
    stopping = _job(31, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()), attempts=1,
                    cancel_requested=True)
    running = _job(32, status=JobStatus.RUNNING, worker=owners.owner_id(os.getppid()), attempts=1)
    r = farm_cli(["status", str(lost), str(stopping), str(running), "--format", "json"], farm_env)
    assert r.returncode == 0, r.stderr
    said = {row["job_id"]: row["message"] for row in json.loads(r.stdout)}
    # no broker here: nothing will send it again, so the message does not say a worker will
    assert said == {lost: LOST_HERE, stopping: "cancel requested: stops at its next epoch or stage", running: None}
    assert "worker" not in LOST_HERE and "a worker running on its host sends it again" in LOST


def test_an_owner_of_another_pid_namespace_on_this_hostname_is_judged_by_its_heartbeat(farm_home):
    # A restarted container keeps its hostname, and its new processes reuse the old pids: the
    # pid of a live process here must not keep a dead container's job "running" for ever.
    import socket

    from farm.db.models import utcnow

    assert owners.this_host().startswith(socket.gethostname() + "/")
    old_container = f"{socket.gethostname()}/4026500000:{os.getppid()}"  # that pid is alive here
    assert not owners.owner_alive(old_container, None)
    assert owners.owner_alive(old_container, utcnow())  # a fresh heartbeat: still running there
    job_id = _job(40, status=JobStatus.RUNNING, worker=old_container, attempts=1)
    assert run_job(job_id) == JobStatus.SUCCEEDED and _get(job_id).attempts == 2


def test_progress_weighs_stages_by_their_epochs():
    from farm.scheduler.spec import JobSpec
    from farm.worker.runner import _progress, stage_weights

    plain = JobSpec(model="resnet", sparsity=0.9, recipe="full").resolve()
    assert stage_weights(plain) == [40, 60, 1, 20]  # fp32: quantizing only saves; benchmark a fifth of 100
    stepped = JobSpec(model="resnet", sparsity=0.98, recipe="full").resolve()
    assert stage_weights(stepped) == [40, 180, 1, 44]  # the prune's three steps
    assert _progress(stepped, 1, 0.0) == 40 / 265 and _progress(stepped, 1, 0.5) == 130 / 265
    assert _progress(stepped, 3, 1.0) == 1.0
    quantized = JobSpec(model="resnet", sparsity=0.9, scheme="kmeans", bits=4, recipe="full").resolve()
    assert stage_weights(quantized)[2] == 6
    guarded = JobSpec(model="resnet", sparsity=0.95, max_drop=0.3, recipe="full").resolve()
    assert stage_weights(guarded) == [40, 180, 1, 20]  # up to three retrainings of 60; the benchmark as one
    noop = JobSpec(model="tiny", dataset="synthetic", device="cpu", stages=("noop",)).resolve()
    assert stage_weights(noop) == [1.0] and _progress(noop, 0, 0.5) == 0.5


def test_cancelling_only_finished_jobs_is_a_one_line_error(farm_home, farm_env, farm_cli):
    done, failed, waiting = (_job(40, status=JobStatus.SUCCEEDED), _job(41, status=JobStatus.FAILED),
                             _job(42, status=JobStatus.QUEUED))
    r = farm_cli(["cancel", str(done), str(failed)], farm_env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == (f"farm: error: nothing to cancel: job {done} already succeeded, "
                                f"job {failed} already failed")
    r = farm_cli(["cancel", str(done), str(waiting), "--format", "csv"], farm_env)  # one to cancel: a table
    assert r.returncode == 0 and f"{waiting},cancelled,cancelled" in r.stdout and "already succeeded" in r.stdout


def test_a_deferred_attempt_goes_back_on_the_queue_uncounted(farm_home):
    """A worker's attempt that would wait for another job's artifact ends as queued: its
    attempt is not counted, its waiting stage is no longer running, and the next delivery runs
    it. An attempt that no longer owns the job cannot defer it; a cancel asked for meanwhile
    ends it instead."""
    from farm.db.models import utcnow
    from farm.worker import lifecycle

    job_id = _job(40)
    claim = lifecycle.claim(job_id, owners.owner_id())
    with db.session() as s:
        s.add(Stage(job_id=job_id, name="prune", status=StageStatus.RUNNING, started_at=utcnow()))
    assert lifecycle.defer(claim, "waiting for job 7") == JobStatus.QUEUED
    job = _get(job_id)
    assert (job.status, job.attempts, job.worker, job.message, job.stage) == (
        JobStatus.QUEUED, 0, None, "waiting for job 7", None)
    assert job.deferred_at is not None
    with db.session() as s:
        assert s.query(Stage).filter_by(job_id=job_id).count() == 0
    assert lifecycle.defer(claim, "waiting for job 8") is None  # not its attempt any more
    assert run_job(job_id) == JobStatus.SUCCEEDED
    assert (_get(job_id).attempts, _get(job_id).deferred_at) == (1, None)

    cancelled = _job(41)
    claim = lifecycle.claim(cancelled, owners.owner_id())
    with db.session() as s:
        s.get(Job, cancelled).cancel_requested = True
    assert lifecycle.defer(claim, "waiting for job 7") == JobStatus.CANCELLED
    assert (_get(cancelled).status, _get(cancelled).deferred_at) == (JobStatus.CANCELLED, None)


def test_a_deferred_job_cancelled_and_submitted_again_is_not_due(farm_home):
    """A cancel ends the deferral: submitted again, the job is an ordinary queued one, which the
    workers' watch does not send a second message for (nor sweep resume take as not lost)."""
    from farm.scheduler import control
    from farm.scheduler.submission import record
    from farm.worker import lifecycle, orphans

    job_id = _job(45)
    lifecycle.defer(lifecycle.claim(job_id, owners.owner_id()), "waiting for job 7")
    assert control.cancel(job_id).status == JobStatus.CANCELLED
    assert _get(job_id).deferred_at is None
    with db.session() as s:
        s.get(Job, job_id).deferred_at = utcnow()  # as an earlier version left it
        [sub] = record(s, [JobSpec(**NOOP, seed=45).resolve()], status=JobStatus.QUEUED)
    assert sub.job_id == job_id and _get(job_id).status == JobStatus.QUEUED
    assert _get(job_id).deferred_at is None and orphans.due(0) == []


class _Broker:
    """Records what would be sent (the real send is the cluster test's); `fail` refuses it."""

    def __init__(self, fail: bool = False):
        self.sent, self.fail = [], fail

    def send_task(self, name, args, queue, task_id, priority):
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((args[0], queue, task_id))


def test_deferred_jobs_are_sent_again_once_after_their_wait(farm_home):
    """The workers' watch sends a deferred job again once it has waited defer_s: one scanner of
    several, with a new task id; not before; a send that fails is tried again a round later, and
    a job claimed meanwhile is left alone. Its message was not lost meanwhile (sweep resume)."""
    from datetime import timedelta

    from farm.db.models import utcnow
    from farm.scheduler.submission import message_lost
    from farm.worker import lifecycle, orphans

    job_id = _job(42)
    lifecycle.defer(lifecycle.claim(job_id, owners.owner_id()), "waiting for job 7")
    assert not message_lost(_get(job_id), present=set())
    broker = _Broker()
    assert orphans.resend_deferred(broker, defer_s=60) == []  # not yet
    with db.session() as s:
        s.get(Job, job_id).deferred_at = utcnow() - timedelta(seconds=61)
    down = _Broker(fail=True)
    assert orphans.resend_deferred(down, defer_s=60) == []  # the broker refused: still deferred
    with db.session() as s:
        s.get(Job, job_id).deferred_at = utcnow() - timedelta(seconds=61)
    assert orphans.resend_deferred(broker, defer_s=60) == [job_id]
    assert orphans.resend_deferred(_Broker(), defer_s=60) == []  # another scanner: taken already
    # sent: an ordinary queued job now, not sent again by every scan until a worker is free
    assert _get(job_id).deferred_at is None
    assert orphans.resend_deferred(broker, defer_s=0) == []
    [(sent, queue, task_id)] = broker.sent
    assert (sent, queue, _get(job_id).task_id) == (job_id, "cpu", task_id)

    # A worker takes that message and defers the job again before the scanner marks the send
    # done: the new deferral stands (else no scan would send it again, and it sat queued for good).
    again = _job(48)
    lifecycle.defer(lifecycle.claim(again, owners.owner_id()), "waiting for job 7")
    with db.session() as s:
        s.get(Job, again).deferred_at = utcnow() - timedelta(seconds=61)
    assert orphans.take_due(again, 60, "task-1") is not None
    lifecycle.defer(lifecycle.claim(again, owners.owner_id()), "waiting for job 7")  # the worker, meanwhile
    orphans._sent(again, "task-1")
    assert _get(again).deferred_at is not None and orphans.due(0) == [again]
    assert run_job(job_id) == JobStatus.SUCCEEDED
    with db.session() as s:
        s.get(Job, job_id).deferred_at = utcnow() - timedelta(seconds=61)  # a stale mark on a finished job
    assert orphans.resend_deferred(broker, defer_s=60) == []


def test_a_deferred_job_submitted_again_here_runs_here(farm_home):
    """Without a broker no watch sends a deferred job again (its workers may be gone for good):
    submitting it here, alone or by its sweep's resume, runs it here, once."""
    from farm.scheduler.submission import submit
    from farm.worker import lifecycle

    job_id = _job(44)
    lifecycle.defer(lifecycle.claim(job_id, owners.owner_id()), "waiting for job 7")
    sub = submit(JobSpec(**NOOP, seed=44))
    assert (sub.job_id, sub.status) == (job_id, JobStatus.SUCCEEDED)
    job = _get(job_id)
    assert (job.attempts, job.deferred_at) == (1, None)
    assert submit(JobSpec(**NOOP, seed=44)).status == JobStatus.SUCCEEDED and _get(job_id).attempts == 1


def test_a_stored_spec_that_no_longer_validates_fails_the_job_in_one_line(farm_home):
    """A job queued before a check it fails was added (inception_v3 on 16 px images, refused at
    submit since): its delivery raised in the claim, Celery dropped it, and the job stayed queued
    with no message for good."""
    job_id = _job(43)
    with db.session() as s:
        job = s.get(Job, job_id)
        job.spec = {**job.spec, "model": "inception_v3"}
    assert run_job(job_id) == JobStatus.FAILED
    job = _get(job_id)
    assert job.attempts == 0 and job.message.startswith("cannot run: model inception_v3 needs images")

    lost = _job(46, status=JobStatus.RUNNING, worker=owners.owner_id(_dead_pid()), attempts=1, stage="noop")
    with db.session() as s:  # its worker died in a stage, and farm was upgraded meanwhile
        s.add(Stage(job_id=lost, name="noop", status=StageStatus.RUNNING, started_at=utcnow()))
        job = s.get(Job, lost)
        job.spec = {**job.spec, "model": "inception_v3"}
    assert run_job(lost) == JobStatus.FAILED
    assert _get(lost).stage is None
    with db.session() as s:
        [stage] = s.query(Stage).filter_by(job_id=lost).all()
        assert stage.status == StageStatus.FAILED and stage.message.startswith("cannot run: ")


def test_an_outcome_waits_out_a_locked_database(farm_home, monkeypatch):
    """A database that cannot take the outcome for a moment (locked here; a PostgreSQL restart on
    a farm): the attempt tries again and the job ends as it did, not running for good under a
    live worker nor failed for a blip."""
    import importlib
    import sqlite3
    import threading

    from farm.worker import lifecycle, runner

    session = importlib.import_module("farm.db.session")  # the module; farm.db.session is its function

    monkeypatch.setattr(session, "SQLITE_BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(runner, "RECORD_RETRIES_S", (0.3,) * 10)
    session.dispose_all()  # engines made from here wait 0.1 s for a lock
    job_id = _job(47)
    claim = lifecycle.claim(job_id, owners.owner_id())
    blocker = sqlite3.connect(farm_home / "farm.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database for a second
    release = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        assert runner._record_retrying(claim, JobStatus.SUCCEEDED, None, None) == (JobStatus.SUCCEEDED, None)
    finally:
        release.join()
        blocker.close()
    assert _get(job_id).status == JobStatus.SUCCEEDED
    session.dispose_all()


def test_result_rows_the_database_keeps_refusing_fail_the_job_with_the_reason(farm_home, monkeypatch):
    """An OperationalError that is not a blip (a schema behind the code, a full disk): after the
    tries the job fails saying why, not left running under a live worker for good."""
    from sqlalchemy import text

    from farm.worker import lifecycle, runner

    monkeypatch.setattr(runner, "RECORD_RETRIES_S", (0.01, 0.01))
    job_id = _job(49)
    claim = lifecycle.claim(job_id, owners.owner_id())
    write = lambda s, job: s.execute(text("insert into no_such_table values (1)"))  # noqa: E731
    status, message = runner._record_retrying(claim, JobStatus.SUCCEEDED, None, write)
    assert (status, message) == (JobStatus.FAILED, "could not record results: no such table: no_such_table")
    job = _get(job_id)
    assert (job.status, job.message) == (JobStatus.FAILED, message)


def test_a_stage_row_keeps_succeeded_only_for_its_own_artifact(farm_home):
    """An earlier attempt's own stage reads succeeded when found again; one whose artifact another
    job stored since (the file was gone, that job made it again) reads reused, from that job."""
    from farm.db.models import Artifact
    from farm.db.status import StageStatus
    from farm.worker.runner import _record_stage

    mine, other = _job(51), _job(52)
    with db.session() as s:
        art = Artifact(key="k" * 64, content_hash="c" * 64, stage="train", kind="checkpoint", path="x.pt",
                       bytes=1, result={"accuracy": 0.5}, job_id=mine)
        s.add(art)
        s.flush()
        art_id = art.id
    _record_stage(mine, "train", StageStatus.SUCCEEDED, utcnow(), result={"accuracy": 0.5}, artifact_id=art_id)
    _record_stage(mine, "train", StageStatus.REUSED, utcnow(), result={"accuracy": 0.5}, artifact_id=art_id)
    with db.session() as s:
        assert s.query(Stage).filter_by(job_id=mine).one().status == StageStatus.SUCCEEDED
        s.get(Artifact, art_id).job_id, s.get(Artifact, art_id).result = other, {"accuracy": 0.9}
    _record_stage(mine, "train", StageStatus.REUSED, utcnow(), result={"accuracy": 0.9}, artifact_id=art_id)
    with db.session() as s:
        row = s.query(Stage).filter_by(job_id=mine).one()
        assert (row.status, row.result) == (StageStatus.REUSED, {"accuracy": 0.9})


def test_the_watch_sends_a_scheduled_job_long_past_its_time_again(farm_home):
    """Its delayed message went down with a worker (Redis holds it, unacknowledged, for hours)."""
    from datetime import timedelta

    from farm.db.models import Sweep, SweepJob
    from farm.db.queries import OVERDUE_S
    from farm.worker import orphans

    late, ahead = _job(53, status=JobStatus.SCHEDULED), _job(54, status=JobStatus.SCHEDULED)
    with db.session() as s:
        for job_id, start in ((late, utcnow() - timedelta(seconds=OVERDUE_S + 5)),
                              (ahead, utcnow() + timedelta(hours=1))):
            sweep = Sweep(name=f"at-{job_id}", source="", grid={}, priority=0, start_at=start)
            s.add(sweep)
            s.flush()
            s.add(SweepJob(sweep_id=sweep.id, job_id=job_id))
    broker = _Broker()
    assert orphans.resend_overdue(broker) == [late]
    assert orphans.resend_overdue(broker) == []  # taken: queued now, with the message just sent
    [(sent, _, task_id)] = broker.sent
    job = _get(late)
    assert (sent, job.status, job.task_id) == (late, JobStatus.QUEUED, task_id)
    assert _get(ahead).status == JobStatus.SCHEDULED
    assert run_job(late) == JobStatus.SUCCEEDED


def test_sweep_cancel_keeps_a_job_only_for_a_sweep_that_goes_on(farm_home):
    """An old sweep whose jobs had all ended, one of which a newer sweep sent again, does not
    stop the newer sweep's cancel (a new-user walkthrough); a sweep with work of its own left
    does keep the job it shares."""
    from farm.db.models import Sweep, SweepJob
    from farm.scheduler import sweep

    shared, ended, own = _job(55), _job(56, status=JobStatus.FAILED), _job(57)

    def make(name, job_ids):
        with db.session() as s:
            row = Sweep(name=name, source="", grid={}, priority=0)
            s.add(row)
            s.flush()
            s.add_all([SweepJob(sweep_id=row.id, job_id=j) for j in job_ids])
            return row.id

    make("old", [shared, ended])
    newer = make("newer", [shared])
    [result] = sweep.cancel(newer)
    assert (result.job_id, result.status) == (shared, JobStatus.CANCELLED)

    again = _job(58)
    going, newest = make("going", [again, own]), make("newest", [again])
    [kept] = sweep.cancel(newest)
    assert (kept.job_id, kept.note, kept.changed) == (again, f"kept: sweep {going} wants it too", False)
    assert _get(again).status == JobStatus.QUEUED
