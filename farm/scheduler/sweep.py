"""Sweeps: a YAML grid expands to jobs, submitted together (deduplicated like single jobs).

    name: fmnist-sparsity          # optional; default: the file's name
    grid:                          # every combination of these (a scalar is one value)
      model: [resnet20, vgg11]
      sparsity: [0.5, 0.7, 0.8, 0.9, 0.95]
      scheme: [fp32, kmeans]
      bits: [4]                    # ignored (collapsed) for fp32/fp16, in grid or fixed
    fixed:                         # the same for every job
      dataset: fashion-mnist
      batches: [1, 32, 128]        # a list of ints is one value; a list of lists is an axis
      stages: [train, prune]       # likewise: a list of names is one value

Without a broker, jobs run in this process, on this machine's device unless the file or --device
names one; unless the file names a recipe, jobs for the CPU get the quick one, as in `farm
submit`. The same file submitted twice is one sweep.

Any JobSpec field may appear in `grid` or `fixed`. The whole file is validated before anything is
written: one bad combination rejects the sweep with a line that names it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from farm import db, settings
from farm.db.models import Job, Sweep, SweepJob, utcnow
from farm.db.queries import OVERDUE_S, SweepSummary, get_sweep, overdue_scheduled, sweep_summary
from farm.db.status import JobStatus
from farm.errors import FarmError, InvalidSpec
from farm.scheduler import control, inputs, queue
from farm.scheduler.spec import DEVICES, FLOAT_BITS, JobSpec
from farm.scheduler.submission import (Submitted, check_data_here, choose_device, keep_start_times,
                                       message_lost, publish, record, start_times, to_send)

log = logging.getLogger(__name__)
TOP_KEYS = {"name", "grid", "fixed"}
LIST_FIELDS = ("batches", "stages")  # each value is itself a list: a list of lists is the axis
MAX_JOBS = 100_000  # a grid this big is almost surely a typo
# Options of the submit commands put in a file, as docs/USAGE.md warns: what to do instead
NOT_JOB_FIELDS = {
    "priority": "pass --priority to farm sweep submit (0..9, higher runs first)",
    "force": "a sweep reuses the jobs that already ran; farm submit --force runs one of them again",
    # set by farm from the files themselves: given by hand they would name content nobody checked
    "model_file": "give the file as the model, model: net.py:build, and farm stores it",
    "data_hash": "give the folder as the dataset, dataset: folder:PATH, and farm lists it",
}


@dataclass(frozen=True)
class SweepPlan:
    name: str
    source: str
    grid: dict[str, Any]  # {"grid": {...}, "fixed": {...}} as parsed
    specs: list[JobSpec]  # resolved, deduplicated, in grid order


@dataclass(frozen=True)
class SweepSubmitted:
    sweep_id: int
    jobs: int  # distinct jobs in the sweep
    new: int  # created by this call
    sent: int  # handed to the broker or run here (new + re-sent failed/cancelled/missing)
    start_at: datetime | None
    job_ids: list[int]
    note: str | None = None  # said once before the jobs run, e.g. why the quick recipe was chosen
    reused: bool = False  # the same name and grid had been submitted before: that sweep, not a new one


def load(path: str | Path) -> SweepPlan:
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")  # YAML's own default, whatever the locale says
    except OSError as e:
        raise InvalidSpec(f"cannot read sweep file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:  # a binary or UTF-16 file: a ValueError, which no layer reported
        raise InvalidSpec(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"a sweep file is YAML text") from None
    return parse(source, name=path.stem, where=str(path), base=path.resolve().parent)


def parse(source: str, *, name: str = "sweep", where: str = "sweep file", base: Path | None = None) -> SweepPlan:
    """A sweep file's text as a plan; relative paths in it (a model file, a checkpoint, an image
    folder) are from `base`, the file's folder, else the current one."""
    try:
        doc = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise InvalidSpec(f"{where} is not valid YAML{_yaml_problem(e, source)}") from None
    if doc is None:
        raise InvalidSpec(f"{where} is empty; it needs a `grid:` mapping of job fields to values")
    if not isinstance(doc, dict):
        raise InvalidSpec(f"{where} must be a mapping with `grid:` (and optional `fixed:`, `name:`)")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise InvalidSpec(f"{where}: unknown key(s) {', '.join(unknown)}; expected grid, fixed, name")
    grid, fixed = doc.get("grid") or {}, doc.get("fixed") or {}
    if not isinstance(grid, dict) or not isinstance(fixed, dict):
        raise InvalidSpec(f"{where}: `grid` and `fixed` must be mappings of job fields to values")
    if not grid:
        raise InvalidSpec(f"{where}: `grid` is empty; give at least one field, e.g. sparsity: [0.5, 0.9]")
    _refuse_options(grid, fixed, where)
    if both := sorted(set(grid) & set(fixed)):  # one would silently override the other
        raise InvalidSpec(f"{where}: {', '.join(both)} in both `grid` and `fixed`; give each field once")
    title = doc.get("name")
    if title is not None and (isinstance(title, bool) or not isinstance(title, (str, int, float))):
        raise InvalidSpec(f"{where}: `name` must be a plain name, not {type(title).__name__} {title!r}")
    base = base or Path.cwd()
    try:
        grid, fixed = inputs.pin(grid, base), inputs.pin(fixed, base)
    except FarmError as e:
        raise InvalidSpec(f"{where}: {e}") from None
    specs = expand(grid, fixed, where)
    return SweepPlan(str(title or name), source, {"grid": grid, "fixed": fixed}, specs)


def _yaml_problem(e: yaml.YAMLError, source: str) -> str:
    """' at line N: what is wrong', one line. A character YAML refuses (a NUL) raises a
    ReaderError, which has no problem_mark and whose str() runs over two lines."""
    if isinstance(e, yaml.reader.ReaderError):
        line = source.count("\n", 0, e.position) + 1
        return f" at line {line}: {e.reason} (character #x{e.character:04x})"
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}" if mark else ""
    return f"{at}: {getattr(e, 'problem', None) or e}"


def _refuse_options(grid: dict[str, Any], fixed: dict[str, Any], where: str) -> None:
    """Said before the jobs are expanded: "unknown job field(s) priority" listed every field but
    did not say where priority goes."""
    for section, fields in (("grid", grid), ("fixed", fixed)):
        if options := [k for k in NOT_JOB_FIELDS if k in fields]:
            raise InvalidSpec(f"{where}: `{section}` has {options[0]}, which is not a job field: "
                              f"{NOT_JOB_FIELDS[options[0]]}")


def _axis(key: str, value: Any, where: str) -> list[Any]:
    if key in LIST_FIELDS:
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return value
        return [value]
    if isinstance(value, list):
        if not value:
            raise InvalidSpec(f"{where}: grid field {key!r} is an empty list")
        return value
    return [value]


def expand(grid: dict[str, Any], fixed: dict[str, Any], where: str = "sweep file") -> list[JobSpec]:
    keys = list(grid)
    axes = [_axis(k, grid[k], where) for k in keys]
    total = 1
    for axis in axes:
        total *= len(axis)
    if total > MAX_JOBS:
        raise InvalidSpec(f"{where}: the grid makes {total} jobs, more than {MAX_JOBS}")
    specs: dict[str, JobSpec] = {}
    inputs.forget()  # each job's files are read once for the whole grid, from here
    for values in itertools.product(*axes):
        fields = {**fixed, **dict(zip(keys, values))}
        if fields.get("scheme", "fp32") in FLOAT_BITS:
            # fp32/fp16 have one width: bits (an axis, or fixed for the quantized schemes beside
            # them) does not apply to them
            fields.pop("bits", None)
        if fields.get("device") == "cpu":  # as `farm submit --device cpu`: not hours of the full recipe
            fields.setdefault("recipe", "quick")
        try:
            spec = inputs.ingest(JobSpec.from_dict(fields, resolve=False), reuse=True)
        except (FarmError, TypeError) as e:  # FarmError: also a user's file that is missing or does not fit
            combo = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
            raise InvalidSpec(f"{where}: job ({combo}): {e}") from None
        specs.setdefault(spec.hash, spec)
    return list(specs.values())


def next_time(hhmm: str, now: datetime | None = None) -> datetime:
    """The next local HH:MM from now, as a naive UTC datetime."""
    try:
        at = datetime.strptime(hhmm, "%H:%M")
    except ValueError:
        raise InvalidSpec(f"--at takes a time of day as HH:MM (24 h), got {hhmm!r}") from None
    now = now or datetime.now().astimezone()
    start = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if start <= now:
        start += timedelta(days=1)
    return start.astimezone(UTC).replace(tzinfo=None)


def _check_priority(priority: int) -> int:
    if not 0 <= priority <= 9:
        raise InvalidSpec(f"--priority must be from 0 to 9 (higher runs first), got {priority}")
    return priority


def submit(plan: SweepPlan, *, at: str | None = None, priority: int = 0, device: str | None = None,
           on_event=None) -> SweepSubmitted:
    """Record the sweep and its jobs in one transaction, then enqueue them (or run them here)."""
    _check_priority(priority)
    conf = settings.load()
    grid = plan.grid
    if device not in (None, "auto", *DEVICES):
        raise InvalidSpec(f"--device {device!r} is not one of auto, {', '.join(DEVICES)}")
    device = None if device == "auto" else device  # as if not given: the file's, else the machine's
    if device:  # kept in the stored grid, so `sweep resume` expands to the same jobs
        grid = {**grid, "fixed": {**grid["fixed"], "device": device}}
    named = bool(device) or "device" in grid["grid"] or "device" in grid["fixed"]
    start_at = next_time(at) if at else None
    if start_at is not None and conf.embedded:
        raise InvalidSpec("--at needs a broker (set FARM_BROKER_URL): without one, jobs run in this "
                          "process now")
    grid, why = _auto_device(grid, named, conf.embedded)
    specs = plan.specs if grid is plan.grid else expand(grid["grid"], grid["fixed"], f"sweep {plan.name}")
    if conf.embedded and named:
        _refuse_gpu_without_one(specs)  # named, not the default: that one follows the machine
    if conf.embedded:
        check_data_here(specs)
    note = _quick_note(plan.grid, specs, why or "device cpu")
    if not conf.embedded:
        queue.check_broker(conf.broker_url)
    status = (JobStatus.PENDING if conf.embedded else
              JobStatus.SCHEDULED if start_at else JobStatus.QUEUED)
    with db.session() as s:
        sweep, reused = _same_sweep(s, plan.name, grid, start_at), True
        if sweep is None:
            sweep, reused = Sweep(name=plan.name, source=plan.source, grid=grid, priority=priority,
                                  start_at=start_at), False
            s.add(sweep)
            s.flush()
        sweep.priority = max(sweep.priority, priority)
        subs = record(s, specs, priority=priority, status=status, sweep_id=sweep.id,
                      embedded=conf.embedded)
        if not conf.embedded:
            subs = _bring_forward(s, subs, sweep.id, start_at, priority)
        sweep_id = sweep.id
    if note and to_send(subs):  # said only where jobs will run
        log.info(note)
        if on_event:  # the progress observer prints a job event's label as one plain line
            on_event("job", {"job_id": "", "label": note})
    return replace(_send(sweep_id, subs, conf, priority, start_at, on_event), note=note, reused=reused)


def _bring_forward(s, subs: list[Submitted], sweep_id: int, start_at: datetime | None,
                   priority: int) -> list[Submitted]:
    """Jobs this sweep shares with a sweep that waits for a later --at run at this sweep's time
    (now, or its earlier --at): they are sent again for it, and their later message then finds
    them done. They had waited for the other sweep's hour without a word. A send that fails puts
    them back as they were (`before`): their own message still runs them then."""
    held = [sub.job_id for sub in subs if sub.status == JobStatus.SCHEDULED and not (sub.created or sub.requeued)]
    if not held:
        return subs
    mine = start_at.replace(tzinfo=UTC) if start_at else None
    early = {job_id for job_id, at in start_times(s, held, besides=sweep_id).items() if mine is None or at > mine}
    status = JobStatus.SCHEDULED if start_at else JobStatus.QUEUED
    for job in s.scalars(select(Job).where(Job.id.in_(early))):
        job.status, job.priority = status, max(job.priority, priority)
    return [replace(sub, requeued=True, status=status, before=JobStatus.SCHEDULED) if sub.job_id in early else sub
            for sub in subs]


def _same_sweep(s, name: str, grid: dict[str, Any], start_at: datetime | None) -> Sweep | None:
    """The newest sweep of this name, grid (after the device choice) and start time that is not
    cancelled: a file submitted twice is one sweep, as its jobs are one set of jobs. Another
    --at, or a cancelled sweep, makes a new one (its jobs are still shared)."""
    for sweep in s.scalars(select(Sweep).where(Sweep.name == name).order_by(Sweep.id.desc())):
        if sweep.grid == grid and sweep.start_at == start_at and not sweep.cancel_requested:
            return sweep
    return None


def _refuse_gpu_without_one(specs) -> None:
    """As `farm submit --device gpu`: a job that asks for the GPU queue but would run in this
    process on a machine without one would run the GPU recipe on the CPU for hours."""
    if any(spec.device == "gpu" for spec in specs):
        import torch

        if not torch.cuda.is_available():
            raise InvalidSpec("device gpu (in the file or with --device), but this machine has no CUDA "
                              "GPU and, without FARM_BROKER_URL, the jobs would run here; use cpu (or "
                              "leave device out), or set FARM_BROKER_URL to queue them for GPU workers")


def _auto_device(grid: dict[str, Any], named: bool, embedded: bool) -> tuple[dict[str, Any], str | None]:
    """Without a broker and unless the file or --device names a device, this machine's device,
    and its recipe unless the file names one, as `farm submit` picks them; the choice is kept in
    the stored grid, so `sweep resume` expands to the same jobs. (A named cpu device gets its
    quick recipe in expand().) A named recipe alone still runs on this machine's device: the jobs
    are then the ones `farm submit --recipe R` makes here, not GPU jobs run on the CPU. The
    second value says why, where it chose the recipe too (for the note)."""
    if named or not embedded:
        return grid, None
    device, recipe = choose_device(embedded=True)
    if device == "gpu":  # the JobSpec default: nothing changes
        return grid, None
    if "recipe" in grid["grid"] or "recipe" in grid["fixed"]:
        return {**grid, "fixed": {**grid["fixed"], "device": device}}, None
    return {**grid, "fixed": {**grid["fixed"], "device": device, "recipe": recipe}}, "No GPU here"


RECIPE_FIELDS = ("epochs", "retrain_epochs", "finetune_epochs", "subset", "batch_size")  # a recipe fills those unset


def _quick_note(file_grid: dict[str, Any], specs: list[JobSpec], why: str) -> str | None:
    """Said when the sweep's CPU jobs get the quick recipe by default (the file names none), with
    the examples and epochs they use: the file's own where it sets them (a `subset: 512` sweep
    was told "4000 examples"), and what the full recipe would use instead."""
    given = set(file_grid["grid"]) | set(file_grid["fixed"])
    quick = [spec for spec in specs if spec.device == "cpu" and spec.recipe == "quick"]
    if "recipe" in given or not quick:
        return None
    full = [replace(spec, recipe="full", **{f: None for f in RECIPE_FIELDS if f not in given}).resolve()
            for spec in quick]
    return (f"{why}: running the sweep's CPU jobs with the quick recipe ({_training(quick)}) instead of "
            f"the full one ({_training(full)}); put recipe: full in the file's fixed: to force it.")


def _training(specs: list[JobSpec]) -> str:
    """'2+2+1 epochs, 512 examples' of these jobs; values that differ between them joined by 'or'
    ('512 or 1024 examples')."""
    # fine-tuning only where weights are quantized, as the results' epochs column counts it
    epochs = " or ".join(dict.fromkeys(f"{s.epochs}+{s.retrain_epochs}+{0 if s.scheme in FLOAT_BITS else s.finetune_epochs}"
                                       for s in specs))
    sizes = sorted({s.subset for s in specs if s.subset is not None})
    data = [f"{' or '.join(map(str, sizes))} examples"] if sizes else []
    if any(s.subset is None for s in specs):
        data.append("whole dataset")
    return f"{epochs} epochs, {' or '.join(data)}"


def _send(sweep_id: int, subs: list[Submitted], conf, priority: int, start_at, on_event) -> SweepSubmitted:
    sending = to_send(subs)
    if conf.embedded:
        from farm.worker.runner import run_job

        for sub in sending:
            if on_event:
                on_event("job", {"job_id": sub.job_id, "label": sub.spec.label()})
            run_job(sub.job_id, on_event=on_event)
    else:
        eta = start_at.replace(tzinfo=UTC) if start_at else None
        try:
            publish(conf.broker_url, subs, priority=priority, eta=eta)
        except Exception:
            with db.session() as s:  # the jobs were undone by publish; drop the empty sweep
                sweep = s.get(Sweep, sweep_id)
                if sweep is not None and not sweep.jobs:
                    s.delete(sweep)
            raise
    job_ids = list(dict.fromkeys(sub.job_id for sub in subs))
    return SweepSubmitted(sweep_id, len(job_ids), sum(sub.created for sub in subs), len(sending),
                          start_at, job_ids)


def resume(sweep_id: int, *, on_event=None) -> SweepSubmitted:
    """Re-send the sweep's failed, cancelled, never-sent or lost (queued or scheduled, but no
    longer in the broker) jobs, and create any missing ones."""
    conf = settings.load()
    if not conf.embedded:
        queue.check_broker(conf.broker_url)
    with db.session() as s:
        sweep = get_sweep(s, sweep_id)
        grid, priority, start_at = sweep.grid, sweep.priority, sweep.start_at
    if conf.embedded or (start_at is not None and start_at <= utcnow()):
        start_at = None  # an --at sweep resumed before its time waits for it again; after it, runs now
    specs = expand(grid.get("grid") or {}, grid.get("fixed") or {}, f"sweep {sweep_id}")
    status = (JobStatus.PENDING if conf.embedded else JobStatus.SCHEDULED if start_at else JobStatus.QUEUED)
    if conf.embedded:
        check_data_here(specs)  # refused: the sweep stays as it was (cancelled, if it was)
    with db.session() as s:
        get_sweep(s, sweep_id).cancel_requested = False
        subs = record(s, specs, priority=priority, sweep_id=sweep_id, embedded=conf.embedded, status=status)
        if not conf.embedded:
            subs = _bring_forward(s, _requeue_lost(s, subs, conf.broker_url), sweep_id, start_at, priority)
    return _send(sweep_id, subs, conf, priority, start_at, on_event)


def _requeue_lost(s, subs: list[Submitted], broker_url: str) -> list[Submitted]:
    """Queued and scheduled jobs whose message the broker no longer holds (Redis restarted without
    its append-only file, a queue purged) are sent again, a scheduled one with its start time. A
    message that is still there is not doubled, nor one a submit may be publishing right now
    (PUBLISH_GRACE_S); if one turns up twice anyway, the worker's claim runs the job once."""
    waiting = {sub.job_id for sub in subs
               if sub.status in (JobStatus.QUEUED, JobStatus.SCHEDULED) and not (sub.created or sub.requeued)}
    if not waiting:
        return subs
    present = queue.task_ids_in_broker(broker_url)
    jobs = {job.id: job for job in s.scalars(select(Job).where(Job.id.in_(waiting)))}
    # a scheduled job long past its start time: its message is with a worker that died (still
    # 'unacknowledged' in Redis for hours), however present it looks
    late = set(overdue_scheduled(s, OVERDUE_S, list(waiting)))
    lost = {job_id for job_id, job in jobs.items()
            if job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED) and (message_lost(job, present) or job_id in late)}
    subs = [replace(sub, requeued=True) if sub.job_id in lost else sub for sub in subs]
    scheduled = {job_id: jobs[job_id] for job_id in lost if jobs[job_id].status == JobStatus.SCHEDULED}
    return keep_start_times(s, scheduled, subs, JobStatus.QUEUED)


def cancel(sweep_id: int) -> list[control.CancelResult]:
    """Cancel the sweep's unfinished jobs, except those another sweep still wants (not cancelled
    itself): those are left to run, and said so (`farm cancel JOB` stops one anyway). A sweep
    whose jobs have all finished is left as it is (not marked cancelled: nothing was)."""
    with db.session() as s:
        sweep = get_sweep(s, sweep_id)
        jobs = list(sweep.jobs)
        wanted = _wanted_elsewhere(s, sweep_id, [j.id for j in jobs if not j.status.is_finished])
        sweep.cancel_requested = any(not j.status.is_finished for j in jobs) or sweep.cancel_requested
        statuses = {j.id: j.status for j in jobs}
    kept = [control.CancelResult(job_id, statuses[job_id], f"kept: sweep {other} wants it too",
                                 changed=False) for job_id, other in sorted(wanted.items())]
    return control.cancel_jobs([j.id for j in jobs if j.id not in wanted]) + kept


def _wanted_elsewhere(s, sweep_id: int, job_ids: list[int]) -> dict[int, int]:
    """{job id: the first other sweep that still wants it} of `job_ids`. A sweep wants its jobs
    while it is not cancelled and goes on: it has an unfinished job of its own (one that the sweep
    being cancelled has not). An old sweep whose jobs had all ended, one of which another sweep
    sent again, does not hold that job against a cancel."""
    rows = s.execute(select(SweepJob.job_id, SweepJob.sweep_id).join(Sweep, Sweep.id == SweepJob.sweep_id)
                     .where(SweepJob.job_id.in_(job_ids), SweepJob.sweep_id != sweep_id,
                            Sweep.cancel_requested.is_(False)).order_by(SweepJob.sweep_id))
    pairs = list(rows)
    mine = select(SweepJob.job_id).where(SweepJob.sweep_id == sweep_id)
    going = set(s.scalars(select(SweepJob.sweep_id).join(Job, Job.id == SweepJob.job_id).where(
        SweepJob.sweep_id.in_({other for _, other in pairs}), SweepJob.job_id.not_in(mine),
        Job.status.not_in([status for status in JobStatus if status.is_finished]))))
    wanted: dict[int, int] = {}
    for job_id, other in pairs:
        if other in going:
            wanted.setdefault(job_id, other)
    return wanted


def status(sweep_id: int) -> SweepSummary:
    with db.session() as s:
        return sweep_summary(s, sweep_id)
