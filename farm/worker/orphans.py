"""Jobs whose whole worker died on this host (SIGKILL, the OOM killer) are sent again.

Celery redelivers a job whose pool child dies at once, but when the worker's main process dies
too, the job's message stays unacknowledged in Redis until the visibility timeout: hours (the
job time limit plus one). Meanwhile the job reads RUNNING under a process that is gone. So every
worker, when it starts and then once a minute (or every defer_s, if shorter), looks for such jobs
and queues them again; the claim then counts the attempt (max_attempts still bounds a job that
kills its workers), and a late redelivery of the old message finds the job taken or finished and
does nothing.

The same watch sends again the jobs that a worker put back on the queue to wait for another job's
artifact (`lifecycle.defer`), once they have waited `defer_s`: from the database, so any idle worker
takes them, and a worker that dies meanwhile strands none.

Only owners on this host are judged, by their pid, which is exact. An owner elsewhere is judged
by its heartbeat, written with that host's clock: a scan every minute would turn clock skew or a
database pause into a second run of a live job, so those wait for the redelivery (whose claim
judges them once) or for `farm sweep resume`.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select

from farm import settings
from farm.db.models import Job, utcnow
from farm.db.queries import OVERDUE_S, overdue_scheduled
from farm.db.session import unpooled_session
from farm.db.status import JobStatus
from farm.worker.owners import owner_alive, owner_id, this_host

SCAN_EVERY_S = 60.0
GONE = "its worker died"

log = logging.getLogger("farm.worker")


def _here(owner: str | None) -> bool:
    host, _, pid = (owner or "").rpartition(":")
    return host == this_host() and pid.isdigit()


def orphans() -> list[tuple[int, str]]:
    """(job id, its dead owner) of running jobs whose process on this host is gone."""
    with unpooled_session() as s:
        running = s.execute(select(Job.id, Job.worker).where(Job.status == JobStatus.RUNNING)).all()
    # owner_alive calls this very process's attempts over; a scan must not: they run here. Owners
    # here are judged by pid alone, so no heartbeat is read.
    return [(i, w) for i, w in running if _here(w) and w != owner_id() and not owner_alive(w, None)]


def requeue(job_id: int, owner: str, task_id: str) -> tuple[str, int] | None:
    """Queue the job again under a new task id if it still runs under that dead owner, its
    running stage closed; returns (queue, priority) to send it to, or None: another scanner took
    it, it moved on, or a cancel was waiting for it (then it is cancelled now)."""
    from farm.worker.lifecycle import _close, _close_stages

    with unpooled_session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker != owner:
            return None
        if job.cancel_requested:  # nobody is left to see the flag
            _close(job, JobStatus.CANCELLED, "cancelled (its worker was gone)")
            _close_stages(s, job_id, JobStatus.CANCELLED, GONE)
            job.stage = None
            return None
        _close_stages(s, job_id, JobStatus.FAILED, f"{GONE}; sent again")
        job.status, job.task_id, job.stage, job.message = JobStatus.QUEUED, task_id, None, f"sent again: {GONE}"
        return job.device, job.priority


def _undo(job_id: int, task_id: str) -> None:
    """The message could not be sent: back to running under the dead owner (requeue left
    job.worker as it was), so the next scan (or a submit, or `sweep resume`) finds it again
    instead of a queued job without a message."""
    with unpooled_session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is not None and job.status == JobStatus.QUEUED and job.task_id == task_id:
            job.status = JobStatus.RUNNING


def _send(app, job_id: int, take, undo=None) -> str | None:
    """Send the job under a new task id once `take(task id)` has given its (queue, priority);
    the task id if it went. A failed send is logged (and `undo(task id)` called): a later scan
    tries again."""
    from farm.worker.celery_app import TASK_RUN_JOB, celery_priority, task_id

    tid = task_id(job_id)
    where = take(tid)
    if where is None:
        return None
    queue, priority = where
    try:
        app.send_task(TASK_RUN_JOB, args=[job_id], queue=queue, task_id=tid, priority=celery_priority(priority))
    except Exception:
        log.exception("job %s: could not send it again; a later scan tries again", job_id)
        if undo is not None:
            undo(tid)
        return None
    return tid


def adopt(app) -> list[int]:
    """Queue every orphan again on its own device's queue; returns their ids."""
    sent = []
    for job_id, owner in orphans():
        if _send(app, job_id, lambda tid: requeue(job_id, owner, tid), lambda tid: _undo(job_id, tid)):
            log.warning("job %s: its worker %s is gone; sent again", job_id, owner)
            sent.append(job_id)
    return sent


def due(defer_s: float) -> list[int]:
    """Jobs deferred at least `defer_s` ago, still queued."""
    before = utcnow() - timedelta(seconds=defer_s)
    with unpooled_session() as s:
        return list(s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED, Job.deferred_at.is_not(None),
                                                   Job.deferred_at <= before)))


def take_due(job_id: int, defer_s: float, task_id: str) -> tuple[str, int] | None:
    """Take the re-send of a due deferred job (one scanner of many wins): its deferral restarts
    now, so a send that fails is tried again a round later; returns (queue, priority)."""
    with unpooled_session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        now = utcnow()
        if (job is None or job.status != JobStatus.QUEUED or job.deferred_at is None
                or job.deferred_at > now - timedelta(seconds=defer_s)):
            return None
        job.deferred_at, job.task_id = now, task_id
        return job.device, job.priority


def _sent(job_id: int, task_id: str) -> None:
    """The re-send went: the job is an ordinary queued job with a message from now on, no longer
    due (else every scan until a worker is free sent it again, a message a round). A scanner
    that dies before this sends it once more a defer_s later; the claim runs it once."""
    with unpooled_session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is not None and job.status == JobStatus.QUEUED and job.task_id == task_id:
            job.deferred_at = None


def resend_deferred(app, defer_s: float | None = None) -> list[int]:
    """Send again every deferred job that has waited `defer_s` (settings.defer_s); their ids. A
    send that fails leaves the job deferred, from now: the round after next tries again."""
    defer_s = settings.load().defer_s if defer_s is None else defer_s
    sent = []
    for job_id in due(defer_s):
        if tid := _send(app, job_id, lambda tid: take_due(job_id, defer_s, tid)):
            _sent(job_id, tid)
            log.info("job %s: sent again after waiting for another job's artifact", job_id)
            sent.append(job_id)
    return sent


def take_overdue(job_id: int, task_id: str) -> tuple[str, int] | None:
    """Take the re-send of an overdue scheduled job (one scanner of many wins): queued now,
    under a new task id; its old message, if a live worker still holds it, finds it taken."""
    with unpooled_session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.SCHEDULED or job_id not in overdue_scheduled(s, OVERDUE_S, [job_id]):
            return None
        job.status, job.task_id = JobStatus.QUEUED, task_id
        job.message = "sent again: still scheduled after its start time (its worker died holding it?)"
        return job.device, job.priority


def resend_overdue(app) -> list[int]:
    """Send again the scheduled jobs still waiting OVERDUE_S after their start time: a worker
    killed while it held their delayed messages leaves them to Redis's visibility timeout
    (hours), and every scan before this said nothing."""
    with unpooled_session() as s:
        late = overdue_scheduled(s, OVERDUE_S)
    sent = []
    for job_id in late:
        if _send(app, job_id, lambda tid: take_overdue(job_id, tid)):
            log.warning("job %s: still scheduled %g s after its start time; sent again", job_id, OVERDUE_S)
            sent.append(job_id)
    return sent


class Watch:
    """adopt(), resend_deferred() and resend_overdue() now and every SCAN_EVERY_S (or defer_s,
    if shorter) in a daemon thread of the worker's main process."""

    def __init__(self, app, every: float | None = None):
        every = min(SCAN_EVERY_S, settings.load().defer_s) if every is None else every
        self.app, self.every = app, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="farm-orphans", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                adopt(self.app)
            except Exception:  # a database blip must not end the watch
                log.exception("looking for jobs of dead workers failed")
            try:
                resend_deferred(self.app)
            except Exception:
                log.exception("sending waiting jobs again failed")
            try:
                resend_overdue(self.app)
            except Exception:
                log.exception("sending overdue scheduled jobs again failed")
            if self._stop.wait(self.every):
                return
