"""Jobs whose whole worker died (SIGKILL, the OOM killer, a lost host) are sent again.

Celery redelivers a job whose pool child dies at once, but when the worker's main process dies
too, the job's message stays unacknowledged in Redis until the visibility timeout: hours (the
job time limit plus one). Meanwhile the job reads RUNNING under a process that is gone. So every
worker, when it starts and then once a minute, looks for such jobs and queues them again; the
claim then counts the attempt (max_attempts still bounds a job that kills its workers), and a
late redelivery of the old message finds the job taken or finished and does nothing.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select, update

from farm import db
from farm.db.models import Job
from farm.db.status import JobStatus
from farm.worker.owners import owner_alive, owner_id

SCAN_EVERY_S = 60.0

log = logging.getLogger("farm.worker")


def orphans() -> list[tuple[int, str | None, str, int]]:
    """(job id, its dead owner, device, priority) of running jobs whose process is gone: dead on
    this host, or silent for owners.STALE_AFTER_S elsewhere."""
    with db.session() as s:
        running = s.execute(select(Job.id, Job.worker, Job.heartbeat_at, Job.device, Job.priority)
                            .where(Job.status == JobStatus.RUNNING)).all()
    # owner_alive calls this very process's attempts over; a scan must not: they run here
    return [(i, w, device, priority) for i, w, beat, device, priority in running
            if w != owner_id() and not owner_alive(w, beat)]


def requeue(job_id: int, owner: str | None, task_id: str) -> bool:
    """Mark the job queued under a new task id, if it is still running under that dead owner. One
    scanner wins (the update is conditional), so several workers send one message between them."""
    with db.session() as s:
        done = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING,
                                           Job.worker == owner)
                         .values(status=JobStatus.QUEUED, task_id=task_id, stage=None,
                                 message=f"sent again: {owner} was gone"))
        return done.rowcount == 1


def adopt(app) -> list[int]:
    """Queue every orphan again on its own device's queue; returns their ids."""
    from farm.worker.celery_app import TASK_RUN_JOB, celery_priority, task_id

    sent = []
    for job_id, owner, device, priority in orphans():
        tid = task_id(job_id)
        if not requeue(job_id, owner, tid):
            continue  # another worker took it, or it moved on
        try:
            app.send_task(TASK_RUN_JOB, args=[job_id], queue=device, task_id=tid,
                          priority=celery_priority(priority))
        except Exception:  # queued without a message: `farm sweep resume` or a submit sends it
            log.exception("job %s: could not send it again", job_id)
            continue
        log.warning("job %s: its worker %s is gone; sent again", job_id, owner)
        sent.append(job_id)
    return sent


class Watch:
    """adopt() now and every SCAN_EVERY_S in a daemon thread of the worker's main process."""

    def __init__(self, app, every: float = SCAN_EVERY_S):
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
            if self._stop.wait(self.every):
                return
