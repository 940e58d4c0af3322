"""Run one job: claim it, run its stages in order (reusing stored artifacts), record the outcome.

The same function runs a job inside a Celery worker and in the CLI's own process (no broker).
Cancel is cooperative: checked between stages and, through the libraries' callback, between
epochs, where `farm.errors.Cancelled` unwinds the stage; not after a training's last epoch, whose
result the stage stores first (the next boundary then cancels; after the last stage the job
finishes with its results).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from farm import db
from farm.db.models import Artifact, Job, Stage, utcnow
from farm.db.status import JobStatus, StageStatus
from farm.errors import Cancelled, Deferred, FarmError, Terminated
from farm.scheduler.spec import FLOAT_BITS, GUARDED_TRIALS
from farm.worker import artifacts, lifecycle
from farm.worker.held import HeldSignals
from farm.worker.results import where_it_ran, write_results
from farm.worker.stages import CACHED, STAGES, StageContext, StageOutput, ensure_known

log = logging.getLogger("farm.worker")

# on_event(kind, data): "stage" {name, index, count}, "epoch" {library event}, "stage_done" {...}
Observer = Callable[[str, dict[str, Any]], None]
INTERRUPTED = "interrupted by the user"  # Ctrl-C: the job and its stage end cancelled, not failed
TERMINATED = "terminated by SIGTERM"  # kill, timeout, a container stopping: likewise


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a job run in this process; it is recorded as cancelled, so submitting it
    again resumes it. A KeyboardInterrupt still, for callers that catch that; str() says which."""


def jsonable(value: Any) -> Any:
    """Stage results as strict JSON (PostgreSQL's JSON rejects NaN): NaN/inf become None."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return clean(json.loads(json.dumps(value, default=str, allow_nan=True)))


def torch_device(spec_device: str) -> str:
    if spec_device == "gpu":
        import torch

        if torch.cuda.is_available():
            return "cuda"
        log.warning("job asks for a GPU but this process sees none: running on CPU")
    return "cpu"


def _workdir_prefix(job_id: int, pid: int) -> str:
    return f"farm-job{job_id}-p{pid}-"


def remove_workdirs(job_id: int, pid: int) -> None:
    """What a killed process (the hard time limit) left of the job's scratch files."""
    for d in Path(tempfile.gettempdir()).glob(_workdir_prefix(job_id, pid) + "*"):
        shutil.rmtree(d, ignore_errors=True)


def run_job(job_id: int, *, owner: str | None = None, on_event: Observer | None = None,
            defer: bool = False) -> JobStatus:
    """Run the job if this delivery should; returns the job's status afterwards. With `defer` (a
    worker's delivery), a job that would wait for another running job's artifact goes back on the
    queue instead (status QUEUED; the workers' watch sends it again, farm.worker.orphans)."""
    with HeldSignals() as held:  # Ctrl-C waits, except while the stages run (held.py)
        claim = lifecycle.claim(job_id, owner or lifecycle.owner_id())
        if isinstance(claim, str):
            log.info(claim)
            return _status(job_id)
        claim = replace(claim, defer=defer)
        log.info("job %s attempt %s: %s", job_id, claim.attempt, claim.spec.label())
        workdir = Path(tempfile.mkdtemp(prefix=_workdir_prefix(job_id, os.getpid())))
        try:
            outcome = _outcome(claim, workdir, on_event or (lambda kind, data: None), held)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        recorded, message = _record_retrying(claim, *outcome)  # a Ctrl-C meanwhile is delivered after it
    _log_outcome(claim, recorded, message)
    return recorded or _status(job_id)  # None: another attempt owns the job now


def _log_outcome(claim: lifecycle.Claim, status: JobStatus | None, message: str | None) -> None:
    """How the attempt ended, in the log (farm.log for jobs run in the CLI, the worker's log on a
    farm), which a failed job's error line points to: the reason, not only "attempt 1" above it.
    A failure is an error record: the CLI prints its own line for it, and this goes to the file."""
    if status is None:
        log.info("job %s attempt %s: ended, but another attempt owns the job now", claim.job_id, claim.attempt)
    elif status == JobStatus.FAILED:
        log.error("job %s attempt %s failed: %s", claim.job_id, claim.attempt, message)
    else:
        log.info("job %s attempt %s: %s%s", claim.job_id, claim.attempt, status, f" ({message})" if message else "")


def _outcome(claim: lifecycle.Claim, workdir: Path, notify: Observer, held: HeldSignals) -> tuple:
    """Run the stages with the signals let through; (status, message, write) of how it ended."""
    try:
        held.release()  # what came since the claim is delivered here, inside the guard
        with lifecycle.Heartbeat(claim):
            results, timings, notes = _run_stages(claim, workdir, notify)
        held.hold()
        spec, env = claim.spec, timings.get("environment") or where_it_ran(claim.spec)
        return (JobStatus.SUCCEEDED, "; ".join(notes) or None,
                lambda s, job: write_results(s, job, spec, results, timings, fresh=claim.attempt == 1,
                                             environment=env))
    except Cancelled:
        held.hold()
        return JobStatus.CANCELLED, "cancelled", None
    except Deferred as e:
        held.hold()
        log.info("job %s: %s stage waits for job %s; back to the queue", claim.job_id, e.stage, e.builder)
        return JobStatus.QUEUED, str(e), None
    except KeyboardInterrupt as e:
        held.hold()
        interrupted = _interrupted(claim, interrupt_reason(e))
        held.release(deliver=False)  # a second Ctrl-C meanwhile asked for what was done
        raise interrupted from None
    except Exception as e:  # noqa: BLE001 - every failure ends the job with one line
        held.hold()
        if not isinstance(e, FarmError):
            log.exception("job %s failed", claim.job_id)
        return JobStatus.FAILED, str(ensure_known(e)), None


# Waits before trying again to record an attempt's outcome in a database that is unreachable or
# locked (a PostgreSQL restart, a long SQLite writer; each try may also wait out SQLite's busy
# timeout): given up, the job would read RUNNING under a live worker process, which no scan takes
# over, until that process exits.
RECORD_RETRIES_S = (1.0, 2.0, 4.0, 8.0, 16.0)

Recorded = tuple[JobStatus | None, str | None]  # the status written (None: not this attempt's), its message


def _record_retrying(claim: lifecycle.Claim, status: JobStatus, message: str | None, write) -> Recorded:
    for wait in (*RECORD_RETRIES_S, None):
        try:
            return _record(claim, status, message, write)
        except OperationalError as e:
            first = (str(e.orig or e).strip().splitlines() or ["?"])[0]
            if wait is None:
                if write is None:
                    raise
                # the result rows may be what the database refuses (a full disk, a schema
                # behind): the job fails with the reason rather than staying RUNNING
                return _record(claim, JobStatus.FAILED, f"could not record results: {first}", None)
            log.warning("job %s: could not record how it ended (%s); trying again in %g s", claim.job_id, first, wait)
            time.sleep(wait)
    return None, None  # not reached: the last round returns or raises


def _record(claim: lifecycle.Claim, status: JobStatus, message: str | None, write) -> Recorded:
    if status == JobStatus.QUEUED:  # it waits for another job: Deferred
        return lifecycle.defer(claim, message), message
    try:
        recorded = lifecycle.finish(claim, status, message, write=write)
    except OperationalError:
        raise  # the database, not the result rows: the outcome is tried again as it is
    except Exception as e:  # noqa: BLE001
        if write is None:
            raise
        # The result rows could not be written (a constraint, a bad value): without this the
        # job stays RUNNING under a live owner and every redelivery is ignored.
        log.exception("job %s: could not record results", claim.job_id)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        status, message = JobStatus.FAILED, f"could not record results: {first}"
        recorded = lifecycle.finish(claim, status, message)
    return (status if recorded else None), message


def interrupt_reason(interrupt: KeyboardInterrupt) -> str:
    return TERMINATED if isinstance(interrupt, Terminated) else INTERRUPTED


def _interrupted(claim: lifecycle.Claim, why: str = INTERRUPTED) -> Interrupted:
    with db.session() as s:
        stage = s.get(Job, claim.job_id).stage
    lifecycle.finish(claim, JobStatus.CANCELLED, why)
    during = f" during {stage}" if stage else ""
    return Interrupted(f"job {claim.job_id} cancelled{during}; run the same command again to resume "
                       f"(finished stages are reused)")


def _status(job_id: int) -> JobStatus:
    with db.session() as s:
        job = s.get(Job, job_id)
        return job.status if job else JobStatus.FAILED


def _run_stages(claim: lifecycle.Claim, workdir: Path, notify: Observer) -> tuple[dict, dict, list[str]]:
    spec, count = claim.spec, len(claim.spec.stages)
    results: dict[str, dict] = {}
    timings: dict[str, Any] = {}
    notes: list[str] = []
    current: Path | None = None
    for index, name in enumerate(spec.stages):
        notify("stage", {"name": name, "index": index, "count": count})
        output, current, reused = _run_stage(claim, name, index, current, workdir, notify)
        results[name] = output.result
        timings = output.timings or timings
        if output.skipped:
            notes.append(f"{name} {output.skipped}")  # the job's message: "benchmark skipped: no GPU ..."
        notify("stage_done", {"name": name, "reused": reused, "skipped": output.skipped,
                              "result": output.result})
    if lifecycle.cancel_requested(claim.job_id):
        # Seen after the last stage's last epoch, when every result is in hand: cancelling now
        # would throw away what is not stored as a stage (the benchmark), so the job ends as
        # it would have, and says why it did not stop.
        notes.append("a cancel came after its last stage; its results are kept")
    return results, timings, notes


# The benchmark stage's weight in a job's progress, as a fraction of the training stages' epochs:
# on an H100 a 90% ResNet-20 job trains 40 + 60 epochs in ~50 s and benchmarks in ~25 s.
BENCH_SHARE = 0.2


def stage_weights(spec) -> list[float]:
    """Each stage's weight in the job's progress: the epochs it trains (a prune's over all its
    steps, fine-tuning only for quantized schemes), the benchmark BENCH_SHARE of those, and at
    least 1 (noop, stall, an fp32 quantize that only saves), so every stage moves the bar. Equal
    shares had a 98% job, whose prune trains 180 epochs, at 46% when four fifths were done."""
    # a guarded prune may retrain up to GUARDED_TRIALS times; its events count over all of them
    # (the benchmark's share is of one trial's training: the trials do not make it longer)
    trials = GUARDED_TRIALS if spec.max_drop is not None else 1
    epochs = {"train": spec.epochs, "prune": sum(n for _, n in spec.prune_steps),
              "quantize": 0 if spec.scheme in FLOAT_BITS else spec.finetune_epochs}
    training = sum(epochs.get(name, 0) for name in spec.stages)
    epochs["prune"] *= trials
    return [max(1.0, BENCH_SHARE * training if name == "benchmark" else epochs.get(name, 0)) for name in spec.stages]


def _progress(spec, index: int, fraction: float) -> float:
    """The job's progress with stage `index` `fraction` done."""
    weights = stage_weights(spec)
    return (sum(weights[:index]) + weights[index] * min(max(fraction, 0.0), 1.0)) / sum(weights)


def _progress_callback(claim: lifecycle.Claim, name: str, index: int, notify: Observer) -> Callable[[dict], None]:
    last = [0.0]

    def callback(event: dict) -> None:
        notify("epoch", event)
        epochs = event.get("epochs") or 0
        fraction = event.get("epoch", 0) / epochs if epochs else 0.0  # epochs count from 1
        now = time.monotonic()
        if now - last[0] >= lifecycle.PROGRESS_EVERY_S:
            last[0] = now
            cancel = lifecycle.report(claim, stage=name, progress=_progress(claim.spec, index, fraction))
        else:
            cancel = lifecycle.cancel_requested(claim.job_id)
        if cancel and event.get("final"):
            # The training this event ends is done, and the stage (or a prune's step) stores it
            # next: raised here, a cancel that lands after the last epoch threw it away, and the
            # job submitted again trained it from scratch. The next epoch, stage or the job's end
            # honours it.
            log.info("job %s: cancel requested after the last epoch of %s; keeping its result first",
                     claim.job_id, name)
        elif cancel:
            raise Cancelled(f"job {claim.job_id} cancelled during {name}")

    return callback


def _run_stage(claim, name: str, index: int, current: Path | None, workdir: Path,
               notify: Observer) -> tuple[StageOutput, Path | None, bool]:
    spec = claim.spec
    key = spec.stage_key(name) if name in CACHED else None
    # A forced re-run (run > 0) recomputes its stages instead of reusing stored ones.
    reuse = key is not None and spec.run == 0
    try:  # the build lock goes however this ends, the wait for it included
        found = _wait_for_artifact(claim, key, name, notify) if reuse else None
        started = utcnow()
        if found is not None:
            if _record_stage(claim.job_id, name, StageStatus.REUSED, started, result=found.result,
                             artifact_id=found.id, claim=claim, progress=_progress(spec, index, 1.0)):
                raise Cancelled(f"job {claim.job_id} cancelled")
            return StageOutput(found.result, artifacts.path_of(found)), artifacts.path_of(found), True
        return _compute_stage(claim, name, index, key, current, workdir, notify, started)
    finally:
        if reuse:
            artifacts.release(key, claim.owner)  # a no-op unless this job holds it


NOT_WAITING = object()  # a wait's state before its first round: nothing said yet


def _wait_for_artifact(claim, key: str, name: str, notify: Observer):
    """The stored artifact, or None once this job holds the build lock and must compute it.
    While another live job builds the same artifact, wait for it rather than build it twice."""
    shown = NOT_WAITING
    while True:
        found = artifacts.lookup(key)
        if found is None and artifacts.acquire(key, job_id=claim.job_id, owner=claim.owner):
            found = artifacts.lookup(key)  # stored by a job that released the lock just now?
            if found is None:
                _waited(claim, shown)
                return None
            artifacts.release(key, claim.owner)
        if found is not None:
            if shown is not NOT_WAITING:
                log.info("job %s: %s artifact built by another job", claim.job_id, name)
            _waited(claim, shown)
            return found
        shown = _wait_once(claim, name, notify, [key], shown)


def _wait_once(claim, name: str, notify: Observer, keys: list[str], shown):
    """One round of waiting for another job that builds one of `keys`; returns the job waited
    for. The progress line and the job's message in `farm status` name it, again whenever it
    changes (the first builder finished and a second one builds the next step). Honours a cancel."""
    builder = next((b for b in map(artifacts.builder, keys) if b not in (None, claim.job_id)), None)
    if claim.defer and builder is not None and _status(builder) == JobStatus.RUNNING:
        # (a lock that looks live under a job that ended is waited out here, as in-process,
        # where the job time limit bounds it, not deferred round after round)
        raise Deferred(builder, name)
    said = lifecycle.UNCHANGED
    if builder != shown:
        notify("waiting", {"name": name, "job_id": builder})
        log.info("job %s: waiting for job %s, which builds what its %s stage needs", claim.job_id, builder, name)
        said = f"waiting for job {builder}" if builder else "waiting for another job"
    if lifecycle.report(claim, stage=name, message=said):
        raise Cancelled(f"job {claim.job_id} cancelled while waiting for {name}")
    time.sleep(artifacts.LOCK_POLL_S)
    return builder


def _waited(claim, shown) -> None:
    if shown is not NOT_WAITING:  # the job's message said whom it waited for
        lifecycle.report(claim, message=None)


def _compute_stage(claim, name: str, index: int, key: str | None, current: Path | None,
                   workdir: Path, notify: Observer, started) -> tuple[StageOutput, Path | None, bool]:
    spec = claim.spec
    if _record_stage(claim.job_id, name, StageStatus.RUNNING, started, claim=claim,
                     progress=_progress(spec, index, 0.0)):
        _record_stage(claim.job_id, name, StageStatus.CANCELLED, started, message="cancelled")
        raise Cancelled(f"job {claim.job_id} cancelled before {name}")
    held: list[str] = []  # build locks of the stage's shared steps this attempt holds
    ctx = StageContext(spec=spec, device=torch_device(spec.device), workdir=workdir,
                       callback=_progress_callback(claim, name, index, notify))
    if spec.run == 0:  # --force recomputes and leaves what other jobs share alone
        ctx.steps = lambda keys: _take_steps(claim, name, notify, keys, held)
        ctx.keep = lambda key, file, result: _keep(claim, name, key, file, result, held)
    try:
        output = STAGES[name](ctx, current)
        output.result = jsonable(output.result)
        output.timings = jsonable(output.timings)
    except Cancelled as e:
        _record_stage(claim.job_id, name, StageStatus.CANCELLED, started, message=str(e))
        raise
    except Deferred:
        raise  # not a failure: lifecycle.defer takes the stage's row back
    except KeyboardInterrupt as e:
        _record_stage(claim.job_id, name, StageStatus.CANCELLED, started, message=interrupt_reason(e))
        raise
    except BaseException as e:
        _record_stage(claim.job_id, name, StageStatus.FAILED, started, message=str(ensure_known(e)))
        raise
    finally:
        _release_all(held, claim.owner)
    artifact = None
    if output.file is not None and key is not None:
        artifact = artifacts.store(output.file, key=_own_key(spec, key), stage=name, kind=output.kind,
                                   result=output.result, job_id=claim.job_id)
        if artifact.job_id != claim.job_id:  # another job stored it meanwhile: the next stage reads theirs
            log.warning("job %s: %s artifact stored by job %s meanwhile; going on from theirs", claim.job_id,
                        name, artifact.job_id)
        current = artifacts.path_of(artifact)
    status = StageStatus.SKIPPED if output.skipped else StageStatus.SUCCEEDED
    _record_stage(claim.job_id, name, status, started, result=output.result,
                  artifact_id=artifact.id if artifact else None, message=output.skipped)
    return output, current, False


def _own_key(spec, key: str) -> str:
    """The key a stage's artifact is stored under: its stage key, or for a forced run (--force) a
    key of its own, so the rerun neither replaces the artifact other jobs took (they would name
    it as their maker) nor is taken by later jobs instead of it."""
    if spec.run == 0:
        return key
    return hashlib.sha256(f"{key}:run{spec.run}".encode()).hexdigest()


def _keep(claim: lifecycle.Claim, stage: str, key: str, file: Path, result: dict, held: list[str]) -> None:
    """Store a stage's intermediate artifact unless one is stored under its key (the job whose
    whole stage it is got there first: same inputs, same meaning), then let the jobs waiting for
    it go on. Storing is only an optimisation: a failure is logged, not raised."""
    try:
        if artifacts.lookup(key) is None:
            artifacts.store(file, key=key, stage=stage, kind="checkpoint", result=jsonable(result),
                            job_id=claim.job_id)
    except Exception:  # noqa: BLE001
        log.warning("job %s: could not keep a %s step for other jobs", claim.job_id, stage, exc_info=True)
    if key in held:
        artifacts.release(key, claim.owner)
        held.remove(key)  # after: a lock that failed to go is still released at the stage's end


def _release_all(held: list[str], owner: str) -> None:
    """The step locks left at the stage's end (steps it did not reach: the jobs waiting for them
    build them), each tried even if one fails."""
    for key in held:
        try:
            artifacts.release(key, owner)
        except Exception:  # noqa: BLE001 - a lock left behind goes with its owner's process
            log.warning("could not release the build lock %s", key, exc_info=True)


def _take_steps(claim: lifecycle.Claim, name: str, notify: Observer, keys: list[str],
                held: list[str]) -> tuple[int, tuple[Path, dict, int | None] | None]:
    """How many of a stage's first steps are stored (`keys`: theirs, shortest first) and the
    furthest one (as `_stored` gives it), once this job holds the build locks of every step after
    it (in `held`, so the stage's end lets them go whatever happens). While another live job
    builds one of those (a 90% job's whole prune is a 98% job's first step), wait for it and
    look again: two jobs of a sweep never train the same step at once. No deadlock: a job waits
    here holding only its stage's lock, for the locks of shorter chains."""
    shown = NOT_WAITING
    while True:
        start = _furthest(keys, claim.job_id)[0]
        if _acquire_all(keys[start:], claim, held):
            now, found = _furthest(keys, claim.job_id)  # stored by a job that let go just now?
            # those are not ours to build; if a stored step's file vanished, start over
            for key in keys[start:now] if now >= start else keys[start:]:
                artifacts.release(key, claim.owner)
                held.remove(key)
            if now >= start:
                _waited(claim, shown)
                return now, found
        else:
            shown = _wait_once(claim, name, notify, keys[start:], shown)


def _furthest(keys: list[str], job_id: int) -> tuple[int, tuple[Path, dict, int | None] | None]:
    for i in range(len(keys), 0, -1):
        found = _stored(keys[i - 1], job_id)
        if found is not None:
            return i, found
    return 0, None


def _acquire_all(keys: list[str], claim: lifecycle.Claim, held: list[str]) -> bool:
    """The build locks of all `keys` added to `held`, or none of them. Longest chain first: a
    job that cannot have it holds none of the shorter ones, which another job may need, even
    for a moment."""
    got: list[str] = []
    try:
        for key in reversed(keys):
            if not artifacts.acquire(key, job_id=claim.job_id, owner=claim.owner):
                break
            got.append(key)
        else:
            held.extend(got)
            return True
    except BaseException:
        _release_all(got, claim.owner)
        raise
    _release_all(got, claim.owner)
    return False


def _stored(key: str, job_id: int) -> tuple[Path, dict, int | None] | None:
    """A stage's intermediate artifact (a stepped prune's first steps) if stored: (file, result,
    the job that made it, None where that is this job: an earlier attempt kept it)."""
    found = artifacts.lookup(key)
    if found is None:
        return None
    return artifacts.path_of(found), found.result, found.job_id if found.job_id != job_id else None


def _record_stage(job_id: int, name: str, status: StageStatus, started, *, result=None,
                  artifact_id: int | None = None, message: str | None = None,
                  claim: lifecycle.Claim | None = None, progress: float | None = None) -> bool:
    """One row per (job, stage), updated in place by later attempts. With `claim`, the same
    transaction moves the job to this stage and returns whether cancel was requested."""
    with db.session() as s:
        row = s.scalars(select(Stage).where(Stage.job_id == job_id, Stage.name == name)).one_or_none()
        if row is None:
            row = Stage(job_id=job_id, name=name)
            s.add(row)
        # An earlier attempt of this job computed the artifact it now reuses (it was interrupted,
        # or deferred): the row keeps saying so, with its seconds, rather than "reused" from itself.
        own = (status == StageStatus.REUSED and row.status == StageStatus.SUCCEEDED
               and row.artifact_id is not None and row.artifact_id == artifact_id
               and s.get(Artifact, artifact_id).job_id == job_id)  # not re-stored since by another job
        if not own:
            row.status, row.result, row.artifact_id, row.message = status, result, artifact_id, message
            row.started_at = started
            done = status != StageStatus.RUNNING
            row.finished_at = utcnow() if done else None
            row.seconds = (row.finished_at - started).total_seconds() if done else None
        if claim is None:
            return False
        job = s.get(Job, job_id)
        if job.worker == claim.owner:
            job.stage, job.heartbeat_at = name, utcnow()
            if progress is not None:
                job.progress = round(progress, 4)
        return job.cancel_requested
