"""submit(): validate specs, insert them once (the spec hash is UNIQUE), then run or enqueue.

Same spec twice, even at the same moment from two processes: one job, because the insert is
`INSERT .. ON CONFLICT (spec_hash) DO NOTHING` and both then read the one row. A job that failed
or was cancelled is reset and run again when it is submitted again; `force` makes a new run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from farm import db, settings
from farm.db.models import Job, Sweep, SweepJob, utcnow
from farm.db.status import JobStatus
from farm.errors import InvalidSpec
from farm.scheduler import queue
from farm.scheduler.spec import JobSpec

MAX_ATTEMPTS = 3  # deliveries of one job before it is marked failed (worker lost each time)
FORCE_SEARCH = 1000  # --force looks for a free run number up to this
PUBLISH_GRACE_S = 60.0  # a new job still without a task id this long after insert was never sent


@dataclass(frozen=True)
class Submitted:
    job_id: int
    spec: JobSpec
    created: bool  # a new row; False: an existing job was found by hash
    requeued: bool  # an existing failed/cancelled/never-sent job sent again
    status: JobStatus
    eta: datetime | None = None  # a re-sent scheduled job's own start time (aware UTC), if ahead
    before: JobStatus | None = None  # a job sent earlier than it waited for: its status if the send fails


def _insert_ignore(session: Session, rows: list[dict]) -> dict[str, int]:
    """Insert rows whose spec_hash is new; returns {spec_hash: id} of the rows this call inserted."""
    dialect = session.bind.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:  # other databases: rows one by one, a duplicate is skipped
        from sqlalchemy.exc import IntegrityError

        inserted = {}
        for row in rows:
            try:
                with session.begin_nested():
                    job = Job(**row)
                    session.add(job)
                inserted[row["spec_hash"]] = job.id
            except IntegrityError:
                pass
        return inserted
    if not rows:
        return {}
    stmt = (upsert(Job).on_conflict_do_nothing(index_elements=["spec_hash"])
            .returning(Job.spec_hash, Job.id))
    # Core executemany: SQLAlchemy batches it into multi-row INSERT .. RETURNING statements.
    with_returning = session.connection().execute(stmt, rows)
    return {h: i for h, i in with_returning if h is not None}


def _row(spec: JobSpec, status: JobStatus, priority: int) -> dict:
    return dict(spec_hash=spec.hash, spec=spec.to_dict(), model=spec.model, dataset=spec.dataset,
                sparsity=spec.sparsity, method=spec.method, scheme=spec.scheme, bits=spec.bits,
                seed=spec.seed, device=spec.device, priority=priority, status=status,
                max_attempts=MAX_ATTEMPTS, attempts=0, progress=0.0, cancel_requested=False,
                created_at=db.models.utcnow())


def _free_runs(session: Session, specs: Sequence[JobSpec]) -> list[JobSpec]:
    """--force: each spec with the lowest run number not yet in the database."""
    out = []
    for spec in specs:
        candidates = [replace(spec, run=r) for r in range(1, FORCE_SEARCH)]
        taken = set(session.scalars(select(Job.spec_hash).where(
            Job.spec_hash.in_([c.hash for c in candidates[:50]]))))
        out.append(next(c for c in candidates if c.hash not in taken))
    return out


def _resubmit(job: Job, embedded: bool) -> tuple[bool, bool]:
    """What submitting an existing job again does: (send it, reset it first)."""
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return True, True  # run it again from scratch
    if job.status == JobStatus.PENDING:
        return True, True  # never handed over (a submit that died between insert and publish)
    if embedded and job.status == JobStatus.QUEUED and job.deferred_at is not None:
        # Deferred by a worker, for the workers' watch to send again; here no watch runs (the
        # farm may be gone), so it runs here, and if a worker takes it too, the claim runs it once.
        return True, False
    if job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED) and job.task_id is None and _unpublished(job):
        # Committed as queued (or scheduled), then the submitting process died before publishing:
        # no message exists. Sent again (a scheduled one keeps its start time: keep_start_times);
        # if one did go out, the worker's claim runs the job once anyway.
        return True, False
    if job.status == JobStatus.RUNNING:
        from farm.worker.owners import owner_alive

        # Here (embedded) the claim decides; on a farm, only a job whose process is gone is sent
        # again. Not reset: the claim counts the attempt and takes over from the dead owner.
        if owner_alive(job.worker, job.heartbeat_at):
            return embedded, False
        # A cancel its dead owner never saw would end the new attempt "cancelled before it
        # started"; submitting it again means run it.
        job.cancel_requested = False
        return True, False
    return False, False


def _unpublished(job: Job) -> bool:
    # Until its publish returns, a submit in progress leaves its new job queued without a task
    # id too: a concurrent submit of the same spec must not send a second message then.
    return db.models.utcnow() - job.created_at > timedelta(seconds=PUBLISH_GRACE_S)


def message_lost(job: Job, present: set[str]) -> bool:
    """Whether a waiting job's message is gone from the broker (`present`: the ids it holds)."""
    if job.deferred_at is not None:  # it has none on purpose: the workers' watch sends it again
        return False
    if job.task_id is None:
        return _unpublished(job)  # else a submit may be publishing it right now
    return job.task_id not in present


def start_times(s: Session, job_ids: Sequence[int], *, besides: int | None = None) -> dict[int, datetime]:
    """The start time (aware UTC) each job still waits for: that of the latest of its sweeps
    submitted with --at (other than sweep `besides`), where it is still ahead. The lost message
    held it; a re-sent job keeps it."""
    rows = s.execute(select(SweepJob.job_id, Sweep.start_at).join(Sweep, Sweep.id == SweepJob.sweep_id)
                     .where(SweepJob.job_id.in_(list(job_ids)), Sweep.start_at.is_not(None),
                            Sweep.id != (besides if besides is not None else -1))
                     .order_by(Sweep.id))
    latest = {job_id: at for job_id, at in rows}  # ordered by sweep id: the latest sweep's time wins
    now = db.models.utcnow()
    return {job_id: at.replace(tzinfo=UTC) for job_id, at in latest.items() if at > now}


def keep_start_times(s: Session, resent: dict[int, Job], subs: list[Submitted],
                     status: JobStatus) -> list[Submitted]:
    """`resent`: scheduled jobs sent again as they are (not reset). Each goes with its own start
    time while that is ahead; once it has passed, now and in `status` (the caller's)."""
    if not resent:
        return subs
    starts = start_times(s, sorted(resent))
    out = []
    for sub in subs:
        if sub.job_id in starts:
            sub = replace(sub, eta=starts[sub.job_id])
        elif sub.job_id in resent:
            resent[sub.job_id].status = status
            sub = replace(sub, status=status)
        out.append(sub)
    return out


def _reset(job: Job, status: JobStatus) -> None:
    job.status, job.attempts, job.cancel_requested = status, 0, False
    job.message = job.stage = job.worker = job.finished_at = job.deferred_at = None
    job.progress = 0.0


def record(s: Session, specs: Sequence[JobSpec], *, force: bool = False, priority: int = 0,
           status: JobStatus = JobStatus.PENDING, sweep_id: int | None = None,
           embedded: bool = False) -> list[Submitted]:
    """Insert the specs (deduplicated by hash) in the caller's transaction; jobs that must be sent
    or run are left in `status`. Returns one Submitted per input spec, in order."""
    if force:
        specs = _free_runs(s, specs)
    unique = {spec.hash: spec for spec in specs}

    def load(hashes) -> dict[str, Job]:
        found: dict[str, Job] = {}
        hashes = list(hashes)
        for start in range(0, len(hashes), 500):
            found.update((j.spec_hash, j) for j in s.scalars(
                select(Job).where(Job.spec_hash.in_(hashes[start:start + 500]))))
        return found

    existing = load(unique)
    inserted = _insert_ignore(s, [_row(spec, status, priority) for h, spec in unique.items()
                                  if h not in existing])
    existing |= load(h for h in unique if h not in existing and h not in inserted)  # lost a race
    outcome: dict[str, Submitted] = {}
    resent: dict[int, Job] = {}  # scheduled jobs sent again without a reset
    for h, spec in unique.items():
        if h in inserted:
            outcome[h] = Submitted(inserted[h], spec, True, False, status)
            continue
        job = existing[h]
        send, reset = _resubmit(job, embedded)
        if reset:
            _reset(job, status)
        if send:
            job.priority = max(job.priority, priority)
            if not reset and job.status == JobStatus.SCHEDULED:
                resent[job.id] = job
        outcome[h] = Submitted(job.id, spec, False, send, job.status)
    outcome = dict(zip(outcome, keep_start_times(s, resent, list(outcome.values()), status)))
    if sweep_id is not None:
        linked = set(s.scalars(select(SweepJob.job_id).where(SweepJob.sweep_id == sweep_id)))
        fresh = [{"sweep_id": sweep_id, "job_id": o.job_id} for o in outcome.values() if o.job_id not in linked]
        if fresh:
            s.execute(insert(SweepJob), fresh)
    return [outcome[spec.hash] for spec in specs]


def to_send(submitted: Sequence[Submitted]) -> list[Submitted]:
    """The ones to run or publish, each job once."""
    seen, out = set(), []
    for sub in submitted:
        if (sub.created or sub.requeued) and sub.job_id not in seen:
            seen.add(sub.job_id)
            out.append(sub)
    return out


def publish(broker_url: str, submitted: Sequence[Submitted], *, priority: int = 0,
            eta: datetime | None = None) -> None:
    """Send run messages; if publishing fails, undo this submit's rows so nothing is left half-way."""
    sending = to_send(submitted)
    if not sending:
        return
    deliveries = [queue.Delivery(sub.job_id, sub.spec.device, priority, sub.eta) for sub in sending]
    try:
        ids = queue.enqueue(broker_url, deliveries, eta=eta)
    except Exception:
        _undo(sending)
        raise
    with db.session() as s:  # one executemany, not one UPDATE round trip per job
        s.execute(update(Job), [{"id": job_id, "task_id": task} for job_id, task in ids.items()])


def _undo(sending: Sequence[Submitted]) -> None:
    with db.session() as s:
        for sub in sending:
            job = s.get(Job, sub.job_id)
            if job is None or job.status not in (JobStatus.QUEUED, JobStatus.SCHEDULED):
                continue
            if sub.before is not None:  # brought forward: its own message still runs it at its hour
                job.status = sub.before
            elif sub.created:
                s.delete(job)
            else:
                job.status, job.message = JobStatus.FAILED, "could not be re-sent to the broker"


def submit(spec: JobSpec, *, force: bool = False, priority: int = 0, on_event=None) -> Submitted:
    """Submit one job: enqueue it (broker configured) or run it here and now (embedded). A
    user's files that it names (model file, checkpoint, image folder) are read and stored first."""
    from farm.scheduler.inputs import ingest

    spec = ingest(spec)
    conf = settings.load()
    if conf.embedded:
        check_data_here([spec], force=force)
        return _run_here(spec, force=force, priority=priority, on_event=on_event)
    queue.check_broker(conf.broker_url)
    db.get_engine()  # an unreachable database fails here, before anything is published
    with db.session() as s:
        [sub] = record(s, [spec], force=force, priority=priority, status=JobStatus.QUEUED)
    publish(conf.broker_url, [sub], priority=priority)
    return replace(sub, status=job_status(sub.job_id))


def check_data_here(specs: Sequence[JobSpec], *, force: bool = False) -> None:
    """Jobs run here need their datasets on this machine: one error line before anything is
    recorded, not a job that fails in its first stage. A job already succeeded is not run again
    (unless forced), so its data need not be here. (On a farm the workers' machines hold the
    data, so a submit there cannot check.)"""
    from farm.models.files import require_files

    with db.session() as s:
        done = set() if force else set(s.scalars(select(Job.spec_hash).where(
            Job.spec_hash.in_([spec.hash for spec in specs]), Job.status == JobStatus.SUCCEEDED)))
    for name in sorted({spec.dataset for spec in specs if spec.hash not in done}):
        require_files(name)


def _run_here(spec: JobSpec, *, force: bool, priority: int, on_event) -> Submitted:
    """Record the job and run it in this process. A Ctrl-C after the insert but before the
    runner claims the job would leave it queued with nobody to run it (`farm status` showing
    it queued for good): it is held over the insert, and one that comes before the claim
    cancels the job, as a Ctrl-C during its stages does (the same command runs it again)."""
    from farm.worker.held import HeldSignals
    from farm.worker.runner import Interrupted, interrupt_reason, run_job

    held = HeldSignals()
    try:
        with db.session() as s:
            [sub] = record(s, [spec], force=force, priority=priority, embedded=True)
        if not (sub.created or sub.requeued):
            return sub
        try:
            held.release()  # a Ctrl-C during the insert is delivered here, inside the guard
            run_job(sub.job_id, on_event=on_event)
        except Interrupted:
            raise  # the runner had the job: it ended it and says how to resume
        except KeyboardInterrupt as e:
            if _cancel_unclaimed(sub.job_id, f"{interrupt_reason(e)} before it started"):
                raise Interrupted(f"job {sub.job_id} cancelled before it started; run the same command "
                                  f"again to run it") from None
            raise
        return replace(sub, status=job_status(sub.job_id))
    finally:
        held.release()


def _cancel_unclaimed(job_id: int, why: str) -> bool:
    """Cancel the job if no process has claimed it yet (a claimed one the runner ends itself)."""
    waiting = [status for status in JobStatus if status.is_waiting]
    with db.session() as s:
        done = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(waiting))
                         .values(status=JobStatus.CANCELLED, message=why, finished_at=utcnow()))
        return done.rowcount > 0


def job_status(job_id: int) -> JobStatus:
    with db.session() as s:
        return s.get(Job, job_id).status


def choose_device(device: str = "auto", recipe: str = "auto", *, embedded: bool) -> tuple[str, str]:
    """Resolve "auto": in this process, the GPU if there is one; on a farm, the GPU queue. The
    recipe follows the device: the full one on a GPU, the quick one (minutes) on a CPU."""
    from farm.scheduler.spec import DEVICES, RECIPES

    for name, value, known in (("device", device, DEVICES), ("recipe", recipe, tuple(RECIPES))):
        if value != "auto" and value not in known:  # said here, where auto is still a choice
            raise InvalidSpec(f"{name} {value!r} is not one of auto, {', '.join(known)}")
    if device == "auto":
        if embedded:
            import torch

            device = "gpu" if torch.cuda.is_available() else "cpu"
        else:
            device = "gpu"
    elif device == "gpu" and embedded:
        import torch

        if not torch.cuda.is_available():  # else the full recipe would run on the CPU for hours
            raise InvalidSpec("--device gpu: this machine has no CUDA GPU and, without "
                              "FARM_BROKER_URL, the job would run here; use --device cpu (or auto), "
                              "or set FARM_BROKER_URL to queue it for a GPU worker")
    if recipe == "auto":
        recipe = "full" if device == "gpu" else "quick"
    return device, recipe
