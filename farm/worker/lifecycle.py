"""A job's state transitions in the database, safe against redelivery and duplicate delivery.

The database, not the broker, decides whether a delivery runs: `claim` starts an attempt only if
the job is waiting, or running under an owner that is gone (its process is dead, or its heartbeat
is stale). It counts attempts and gives up after max_attempts, which bounds redelivery after
worker loss. `finish` writes the outcome only if this attempt still owns the job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from farm import db
from sqlalchemy import select

from farm.db.models import Job, Stage, utcnow
from farm.db.status import JobStatus, StageStatus
from farm.errors import InvalidSpec
from farm.scheduler.spec import JobSpec
from farm.worker import artifacts
from farm.worker.owners import owner_alive, owner_id  # noqa: F401 - owner_id is part of this API

HEARTBEAT_S = 10.0  # a running attempt touches jobs.heartbeat_at (and its stage locks) this often
PROGRESS_EVERY_S = 0.5  # at most this often a progress write (a cancel check reads every event)


@dataclass(frozen=True)
class Claim:
    job_id: int
    spec: JobSpec
    owner: str
    attempt: int
    defer: bool = False  # a worker's attempt: give the worker back while another job builds (Deferred)


def claim(job_id: int, owner: str) -> Claim | str:
    """Start an attempt, or say (as a string) why this delivery does nothing."""
    with db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            return f"job {job_id} is not in the database"
        if job.status.is_finished:
            return f"job {job_id} is already {job.status}"
        if job.cancel_requested:
            _close(job, JobStatus.CANCELLED, "cancelled before it started")
            return f"job {job_id} was cancelled"
        if job.status == JobStatus.RUNNING and owner_alive(job.worker, job.heartbeat_at):
            return f"job {job_id} is running on {job.worker}: duplicate delivery ignored"
        if job.attempts >= job.max_attempts:
            _close(job, JobStatus.FAILED, f"gave up after {job.attempts} attempts "
                                          f"(last on {job.worker}, lost: {job.message or 'worker died'})")
            _close_stages(s, job.id, JobStatus.FAILED, "its worker died")  # else "running" for ever
            job.stage = None
            return f"job {job_id} ran out of attempts"
        try:
            spec = JobSpec.from_dict(job.spec)
        except InvalidSpec as e:  # stored before a check it fails was added: else queued for good
            _close(job, JobStatus.FAILED, f"cannot run: {e}")
            _close_stages(s, job.id, JobStatus.FAILED, f"cannot run: {e}")  # a dead attempt's stage
            job.stage = None
            return f"job {job_id} cannot run: {e}"
        job.attempts += 1
        job.status, job.worker, job.message, job.deferred_at = JobStatus.RUNNING, owner, None, None
        job.started_at = job.heartbeat_at = utcnow()
        return Claim(job.id, spec, owner, job.attempts)


def _close(job: Job, status: JobStatus, message: str | None) -> None:
    job.status, job.message, job.finished_at, job.deferred_at = status, message, utcnow(), None


def finish(claim: Claim, status: JobStatus, message: str | None = None, write=None) -> bool:
    """Record the outcome if this attempt still owns the job; `write(session, job)` adds the result
    rows in the same transaction, so a job has its result rows exactly when it has succeeded."""
    with db.session() as s:
        job = s.get(Job, claim.job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker != claim.owner:
            return False
        if write is not None:
            write(s, job)
        _close(job, status, message)
        if status == JobStatus.SUCCEEDED:
            job.progress = 1.0
        else:
            _close_stages(s, job.id, status, message)
        job.stage = None
        return True


def defer(claim: Claim, message: str) -> JobStatus | None:
    """Put the job back in the queue if this attempt still owns it: the attempt is not counted
    (it waited, it did not fail) and the stage that waited is no longer running (the next attempt
    records it afresh). No message goes to the broker: `deferred_at` has the workers' watch
    (farm.worker.orphans.resend_deferred) send it again, so any idle worker takes it and a worker
    that dies meanwhile strands nothing. A cancel asked for meanwhile ends it now. Returns the
    job's status, or None if this attempt no longer owned it."""
    with db.session() as s:
        job = s.get(Job, claim.job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker != claim.owner:
            return None
        for row in s.scalars(select(Stage).where(Stage.job_id == job.id, Stage.status == StageStatus.RUNNING)):
            s.delete(row)
        job.attempts, job.stage, job.worker = max(0, job.attempts - 1), None, None
        if job.cancel_requested:
            _close(job, JobStatus.CANCELLED, "cancelled while it waited for another job")
            return JobStatus.CANCELLED
        # No message of its own from now on: the watch's re-send (orphans._sent) then clears the
        # new mark only if it was for that send, not one a worker made while the re-send went out
        job.status, job.message, job.deferred_at, job.task_id = JobStatus.QUEUED, message, utcnow(), None
        return JobStatus.QUEUED


def fail_overrun(job_id: int, owner: str, limit_s: float) -> bool:
    """The hard time limit killed `owner`, the process running the job's attempt (no code of
    ours runs there any more): fail the job and its running stage now, unless the attempt ended
    first. Called from the Celery worker's main process."""
    with db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker != owner:
            return False
        message = (f"hard time limit of {limit_s:g} s exceeded in stage {job.stage or '(none)'} "
                   f"(FARM_JOB_TIME_LIMIT); its process was killed")
        _close(job, JobStatus.FAILED, message)
        _close_stages(s, job_id, JobStatus.FAILED, message)
        job.stage = None
        return True


def _close_stages(s, job_id: int, status: JobStatus, message: str | None) -> None:
    """Stage rows still running when their job ends unsuccessfully end with it."""
    now = utcnow()
    ended = StageStatus.CANCELLED if status == JobStatus.CANCELLED else StageStatus.FAILED
    for row in s.scalars(select(Stage).where(Stage.job_id == job_id,
                                             Stage.status == StageStatus.RUNNING)):
        row.status, row.message, row.finished_at = ended, message, now
        row.seconds = (now - row.started_at).total_seconds() if row.started_at else None


UNCHANGED: Any = object()  # report(message=...) left out: the job's message stays as it is


def report(claim: Claim, *, stage: str | None = None, progress: float | None = None,
           message: str | None = UNCHANGED) -> bool:
    """Write progress and heartbeat (and `message`, what a running job is doing: "waiting for job
    4", or None); returns whether cancel was requested."""
    with db.session() as s:
        job = s.get(Job, claim.job_id)
        if job is None:
            return True
        if job.worker == claim.owner:
            job.heartbeat_at = utcnow()
            if stage is not None:
                job.stage = stage
            if progress is not None:
                job.progress = round(min(max(progress, 0.0), 1.0), 4)
            if message is not UNCHANGED:
                job.message = message
        return job.cancel_requested


def cancel_requested(job_id: int) -> bool:
    with db.session() as s:
        job = s.get(Job, job_id)
        return job is None or job.cancel_requested


class Heartbeat:
    """Touches heartbeat_at every HEARTBEAT_S in a thread while an attempt runs."""

    def __init__(self, claim: Claim, every: float = HEARTBEAT_S):
        self.claim, self.every = claim, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                report(self.claim)
                artifacts.touch_locks(self.claim.owner)
            except Exception:  # a missed beat is harmless; the next one retries
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every)
