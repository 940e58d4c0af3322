"""Cancel: flag the job in the database; a waiting job is cancelled at once, a running one stops at
its next epoch or stage boundary (the worker's callback raises farm.errors.Cancelled), except
after a training's last epoch, whose result its stage stores first so that submitting the job
again reuses it (after the last stage, the job finishes with its results). A job recorded as
running under a process that is gone is cancelled at once too."""

from __future__ import annotations

from dataclasses import dataclass, replace

from farm import db, settings
from farm.db.models import Job, utcnow
from farm.db.queries import JobRow, get_job
from farm.db.status import JobStatus
from farm.scheduler import queue
from farm.worker.owners import owner_alive, owner_id


@dataclass(frozen=True)
class CancelResult:
    job_id: int
    status: JobStatus  # after the request
    note: str
    changed: bool = True  # False: the job had finished, nothing was done


def _flag(job: Job) -> CancelResult:
    if job.status.is_finished:
        return CancelResult(job.id, job.status, f"already {job.status}", changed=False)
    job.cancel_requested = True
    if job.status.is_waiting:
        job.status, job.finished_at, job.message = JobStatus.CANCELLED, utcnow(), "cancelled"
        job.deferred_at = None  # else the workers' watch would still find it due once it is queued again
        return CancelResult(job.id, job.status, "cancelled")
    if not _owner_running(job):  # nobody is left to see the flag: it would stay RUNNING forever
        note = "cancelled (its worker was gone)"
        job.status, job.finished_at, job.message, job.stage = JobStatus.CANCELLED, utcnow(), note, None
        return CancelResult(job.id, job.status, note)
    return CancelResult(job.id, job.status, "cancel requested: stops at its next epoch or stage")


def _owner_running(job: Job) -> bool:
    # owner_alive says "gone" for this very process (a redelivery to it means the earlier attempt
    # ended); a cancel from here while the job runs here (a thread, a callback) must flag it only.
    return job.worker == owner_id() or owner_alive(job.worker, job.heartbeat_at)


def cancel_jobs(job_ids: list[int]) -> list[CancelResult]:
    with db.session() as s:
        # Lock the rows (in id order: two cancels never deadlock) so a worker's claim or finish
        # waits for this decision instead of racing it. SQLite ignores FOR UPDATE.
        for i in sorted(set(job_ids)):
            s.get(Job, i, with_for_update=True)
        jobs = [get_job(s, i) for i in job_ids]  # NotFound before anything changes
        out = [_flag(j) for j in jobs]
        task_ids = [j.task_id for j in jobs if j.task_id and j.status == JobStatus.CANCELLED]
    broker = settings.load().broker_url
    if broker:
        queue.revoke(broker, task_ids)
    return out


def cancel(job_id: int) -> CancelResult:
    return cancel_jobs([job_id])[0]


# Still "running" in the database: on a farm a worker on its host sends it again (at its start,
# then every minute), and a host that is gone has none, hence the second way; without a broker
# (a CLI process killed) nothing sends it.
LOST = ("lost: its process is gone; a worker running on its host sends it again within a minute "
        "(start one there), else submit it again (or `farm sweep resume`)")
LOST_HERE = "lost: its process is gone; submit it again (or `farm sweep resume`) to run it"


def with_liveness(rows: list[JobRow]) -> list[JobRow]:
    """What the database cannot say by itself: a running job whose process is gone (killed with
    it, or a worker that died whole; a worker on that host sends those again), a cancel that
    waits for the job's next epoch or stage, and a queued job whose queue no worker reads."""
    conf = settings.load()
    out, lost = [], LOST_HERE if conf.embedded else LOST
    for row in rows:
        if row.status == str(JobStatus.RUNNING):
            if row.worker != owner_id() and not owner_alive(row.worker, row.heartbeat_at):
                row = replace(row, message=lost)
            elif row.cancel_requested and not row.message:
                row = replace(row, message="cancel requested: stops at its next epoch or stage")
        out.append(row)
    return out if conf.embedded else _unserved(out, conf.broker_url)


NO_WORKER = "no worker answers for the {queue} queue: start one ({start})"
START = {"gpu": "`farm worker --gpu N`", "cpu": "`farm worker`"}


def _unserved(rows: list[JobRow], broker_url: str) -> list[JobRow]:
    """Queued jobs whose queue no worker reads say so: a GPU job submitted where only CPU
    workers run waited, queued with no message, for as long as anyone watched. The workers are
    asked only when some job waits (it takes a second)."""
    waiting = {r.job_id for r in rows if r.status == str(JobStatus.QUEUED) and not r.message}
    served = queue.served_queues(broker_url) if waiting else None
    if served is None:
        return rows
    return [replace(r, message=NO_WORKER.format(queue=r.device, start=START.get(r.device, "`farm worker --queues Q`")))
            if r.job_id in waiting and r.device not in served else r for r in rows]
