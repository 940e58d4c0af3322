"""Read-side queries over the results database, shared by the CLI, plots and HTML reports.

Every function takes an open Session and returns plain frozen dataclasses (`.to_dict()` gives
JSON-able dicts with the same keys), so callers never depend on ORM objects or lazy loading.

    with farm.db.session() as s:
        rows = queries.results(s, model="resnet", sparsity_min=0.5, scheme="kmeans")
        detail = queries.job_detail(s, rows[0].job_id)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from farm.db.models import (Environment, Job, LayerTiming, Metrics, ModelTiming, Stage, Sweep,
                            SweepJob)
from farm.db.status import JobStatus
from farm.errors import NotFound

SPARSITY_EPS = 1e-9  # filters on float sparsity are inclusive at both ends


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Row:
    def to_dict(self) -> dict[str, Any]:
        """JSON-able: datetimes become ISO strings, nested rows become dicts."""
        return _jsonable(asdict(self))

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class ResultFilter:
    """Which jobs to read. Strings may also be sequences (any of); None means any."""

    model: str | Sequence[str] | None = None
    dataset: str | Sequence[str] | None = None
    sparsity_min: float | None = None  # on the job's target sparsity, inclusive
    sparsity_max: float | None = None
    scheme: str | Sequence[str] | None = None
    bits: int | Sequence[int] | None = None
    sweep: int | None = None  # sweep id
    job_ids: Sequence[int] | None = None
    status: JobStatus | Sequence[JobStatus] | None = None
    method: str | Sequence[str] | None = None
    scope: str | Sequence[str] | None = None  # in the spec JSON, not a column of its own
    seed: int | Sequence[int] | None = None


def _any_of(column, value):
    if isinstance(value, (str, int, float)):
        return column == value
    return column.in_(list(value))


def _where(stmt: Select, f: ResultFilter) -> Select:
    if f.model is not None:
        stmt = stmt.where(_any_of(Job.model, f.model))
    if f.dataset is not None:
        stmt = stmt.where(_any_of(Job.dataset, f.dataset))
    if f.sparsity_min is not None:
        stmt = stmt.where(Job.sparsity >= f.sparsity_min - SPARSITY_EPS)
    if f.sparsity_max is not None:
        stmt = stmt.where(Job.sparsity <= f.sparsity_max + SPARSITY_EPS)
    if f.scheme is not None:
        stmt = stmt.where(_any_of(Job.scheme, f.scheme))
    if f.bits is not None:
        stmt = stmt.where(_any_of(Job.bits, f.bits))
    if f.sweep is not None:
        stmt = stmt.where(Job.id.in_(select(SweepJob.job_id).where(SweepJob.sweep_id == f.sweep)))
    if f.job_ids is not None:
        stmt = stmt.where(Job.id.in_(list(f.job_ids)))
    if f.status is not None:
        stmt = stmt.where(_any_of(Job.status, [f.status] if isinstance(f.status, str) else f.status))
    if f.method is not None:
        stmt = stmt.where(_any_of(Job.method, f.method))
    if f.seed is not None:
        stmt = stmt.where(_any_of(Job.seed, f.seed))
    if f.scope is not None:  # specs from before the field are global (spec_fields)
        stmt = stmt.where(_any_of(func.coalesce(Job.spec["scope"].as_string(), "global"), f.scope))
    return stmt


def _filter(where: ResultFilter | None, kw: dict) -> ResultFilter:
    return where if where is not None else ResultFilter(**kw)


# --- rows -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRow(_Row):
    job_id: int
    status: str
    model: str
    dataset: str
    sparsity: float  # target
    method: str
    scope: str
    max_drop: float | None  # accuracy points, as --max-drop and the spec have it
    scheme: str
    bits: int
    seed: int
    run: int  # 0, or the --force run number
    device: str
    priority: int
    stage: str | None
    progress: float
    attempts: int
    worker: str | None
    message: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    spec_hash: str
    cancel_requested: bool = False
    recipe: str | None = None  # training setup (spec_fields): None in specs older than the field
    subset: int | None = None
    epochs: str | None = None
    batch_size: int | None = None
    inputs: str | None = None  # own_inputs: checkpoint, image size, normalisation

    @classmethod
    def of(cls, j: Job) -> JobRow:
        return cls(job_id=j.id, status=str(j.status), model=j.model, dataset=j.dataset,
                   sparsity=j.sparsity, method=j.method, **spec_fields(j), scheme=j.scheme, bits=j.bits, seed=j.seed,
                   device=j.device, priority=j.priority, stage=j.stage, progress=j.progress,
                   attempts=j.attempts, worker=j.worker, message=j.message,
                   created_at=j.created_at, started_at=j.started_at, finished_at=j.finished_at,
                   heartbeat_at=j.heartbeat_at, spec_hash=j.spec_hash, cancel_requested=bool(j.cancel_requested))


def spec_fields(j: Job) -> dict[str, Any]:
    """What tells apart jobs alike in every column of their own (scope, max_drop, run and the
    training setup live only in the spec): without them a lamp and a global job, two --force
    runs, or a job trained on 1,000 images and one on 4,000, read as one job twice. Defaults for
    specs written before a field existed. `epochs` is dense + retrain + fine-tune as the spec sets
    them, "40+60+6" (a prune above 95% retrains each of its steps, a guarded one each trial), the
    fine-tuning 0 for fp32 and fp16 weights, which are not fine-tuned: a 4-bit job's extra epoch
    shows where it is set beside an fp32 one's accuracy."""
    spec = j.spec
    stages = [spec.get(k) for k in ("epochs", "retrain_epochs", "finetune_epochs")]
    if spec.get("scheme") in ("fp32", "fp16"):
        stages[2] = 0
    return {"scope": spec.get("scope", "global"), "max_drop": spec.get("max_drop"), "run": spec.get("run", 0),
            "recipe": spec.get("recipe"), "subset": spec.get("subset"),
            "epochs": "+".join(map(str, stages)) if None not in stages else None,
            "batch_size": spec.get("batch_size"), "inputs": own_inputs(spec)}


def own_inputs(spec: dict) -> str | None:
    """A user's own inputs beyond model and dataset, short: 'file 3f2a..., data 9c1b..., ckpt
    1a2b3c4d, 28 px, normalise none'. Two jobs of one model file on one folder, from another
    version of the file or of the images, other checkpoints or sizes, read as one job twice
    without it."""
    parts = [f"file {spec['model_file'][:8]}" if spec.get("model_file") else "",
             f"data {spec['data_hash'][:8]}" if spec.get("data_hash") else "",
             f"ckpt {spec['checkpoint'][:8]}" if spec.get("checkpoint") else "",
             f"{spec['image_size']} px" if spec.get("image_size") else "",
             f"normalise {spec['normalise']}" if spec.get("normalise") else ""]
    return ", ".join(p for p in parts if p) or None


@dataclass(frozen=True)
class ResultRow(_Row):
    """One succeeded job and its metrics: the row of `farm results`."""

    job_id: int
    model: str
    dataset: str
    target_sparsity: float
    sparsity: float | None  # reached
    method: str
    scope: str
    max_drop: float | None  # accuracy points (--max-drop); None: plain pruning to the target
    scheme: str
    bits: int
    seed: int
    run: int  # 0, or the --force run number
    accuracy: float | None
    dense_accuracy: float | None
    pruned_accuracy: float | None
    dense_bytes: int | None
    compressed_bytes: int | None
    compression_ratio: float | None
    best_speedup_fp32: float | None  # whole model, best over benchmarked batch sizes
    layer_sparsity: dict[str, Any] | None = field(default=None, compare=False)
    recipe: str | None = None  # training setup: full | quick, as the spec resolved it
    subset: int | None = None  # first n examples; None: the whole dataset
    epochs: str | None = None  # dense + retrain + fine-tune epochs as set, e.g. "40+60+6" (spec_fields)
    batch_size: int | None = None
    inputs: str | None = None  # own_inputs: checkpoint, image size, normalisation


@dataclass(frozen=True)
class StageRow(_Row):
    name: str
    status: str
    reused: bool
    from_job: int | None  # a reused stage: the job that made its artifact
    artifact_key: str | None
    message: str | None
    seconds: float | None
    result: dict[str, Any] | None


@dataclass(frozen=True)
class FileRow(_Row):
    """A stage's stored output on disk: under FARM_ARTIFACTS, named by its content hash (not by
    the artifact key that finds it), shared by every job that reused it."""

    stage: str
    what: str  # dense checkpoint | pruned checkpoint | compressed model
    path: str  # absolute, on this machine
    bytes: int
    exists: bool  # False once the file was deleted from the store


@dataclass(frozen=True)
class PruneStepRow(_Row):
    job_id: int
    sparsity: float  # the level this step pruned to
    epochs: int
    accuracy: float | None  # after this step's retraining
    train_seconds: float | None
    reused: bool  # taken from another job's store, not retrained by this one
    from_job: int | None  # the job that trained it, where reused


@dataclass(frozen=True)
class EnvironmentRow(_Row):
    environment_id: int
    gpu: str | None
    driver: str | None
    cuda: str | None
    cudnn: str | None
    torch: str | None
    pycuda: str | None
    python: str | None
    host: str | None
    extra: dict[str, Any] | None

    @classmethod
    def of(cls, e: Environment) -> EnvironmentRow:
        return cls(environment_id=e.id, gpu=e.gpu, driver=e.driver, cuda=e.cuda, cudnn=e.cudnn,
                   torch=e.torch, pycuda=e.pycuda, python=e.python, host=e.host, extra=e.extra)


@dataclass(frozen=True)
class LayerTimingRow(_Row):
    job_id: int
    model: str
    dataset: str
    layer: str
    shape: list[int] | None
    batch: int
    dtype: str
    weight_scheme: str | None
    sparsity: float | None
    ours_ms: float | None
    cudnn_fp32_ms: float | None
    cudnn_tf32_ms: float | None
    cudnn_fp16_ms: float | None
    cusparse_ms: float | None
    speedup_fp32: float | None
    speedup_tf32: float | None
    speedup_fp16: float | None
    speedup_cusparse: float | None
    max_rel_err: float | None
    floor_ms: float | None
    gpu_index: int | None
    gpu: str | None
    environment_id: int | None

    @classmethod
    def of(cls, t: LayerTiming, j: Job, e: Environment | None) -> LayerTimingRow:
        names = set(cls.columns()) - {"model", "dataset", "gpu"}
        return cls(model=j.model, dataset=j.dataset, gpu=e.gpu if e else None,
                   **{n: getattr(t, n) for n in names})


@dataclass(frozen=True)
class ModelTimingRow(_Row):
    job_id: int
    model: str
    dataset: str
    sparsity: float  # the job's target
    scheme: str
    bits: int
    batch: int
    dense_fp32_ms: float | None
    dense_tf32_ms: float | None
    dense_fp16_ms: float | None
    sparse_ms: float | None
    speedup_fp32: float | None
    speedup_tf32: float | None
    speedup_fp16: float | None
    gpu_index: int | None
    gpu: str | None
    environment_id: int | None

    @classmethod
    def of(cls, t: ModelTiming, j: Job, e: Environment | None) -> ModelTimingRow:
        names = set(cls.columns()) - {"model", "dataset", "sparsity", "scheme", "bits", "gpu"}
        return cls(model=j.model, dataset=j.dataset, sparsity=j.sparsity, scheme=j.scheme,
                   bits=j.bits, gpu=e.gpu if e else None, **{n: getattr(t, n) for n in names})


@dataclass(frozen=True)
class JobDetail(_Row):
    """Everything about one job: `farm show JOB`."""

    job: JobRow
    spec: dict[str, Any]
    stages: list[StageRow]
    metrics: dict[str, Any] | None
    layer_timings: list[LayerTimingRow]
    model_timings: list[ModelTimingRow]
    environments: list[EnvironmentRow]
    sweeps: list[int]
    prune_steps: list[PruneStepRow]  # a prune above 95%: its levels; [] for one-step prunes
    files: list[FileRow]  # where its checkpoints and compressed model lie


@dataclass(frozen=True)
class SweepSummary(_Row):
    sweep_id: int
    name: str
    priority: int
    start_at: datetime | None
    created_at: datetime | None
    cancel_requested: bool
    jobs: int
    counts: dict[str, int]  # status -> number of jobs

    @property
    def finished(self) -> bool:
        return sum(self.counts.get(str(s), 0) for s in
                   (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)) == self.jobs


# --- queries --------------------------------------------------------------------------------

def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def jobs(session: Session, where: ResultFilter | None = None, *, limit: int | None = None,
         **kw) -> list[JobRow]:
    """Jobs of any status, newest first."""
    stmt = _where(select(Job), _filter(where, kw)).order_by(Job.id.desc()).limit(limit)
    return [JobRow.of(j) for j in session.scalars(stmt)]


def _best_speedups(session: Session, job_ids: list[int]) -> dict[int, float]:
    stmt = (select(ModelTiming.job_id, func.max(ModelTiming.speedup_fp32))
            .where(ModelTiming.job_id.in_(job_ids)).group_by(ModelTiming.job_id))
    return {job_id: best for job_id, best in session.execute(stmt)}


def results(session: Session, where: ResultFilter | None = None, **kw) -> list[ResultRow]:
    """Succeeded jobs with their metrics, ordered by model, dataset, sparsity, scheme, bits."""
    stmt = _where(select(Job, Metrics).join(Metrics, Metrics.job_id == Job.id), _filter(where, kw))
    stmt = stmt.order_by(Job.model, Job.dataset, Job.sparsity, Job.scheme, Job.bits, Job.id)
    pairs = session.execute(stmt).all()
    best = _best_speedups(session, [j.id for j, _ in pairs]) if pairs else {}
    return [ResultRow(
        job_id=j.id, model=j.model, dataset=j.dataset, target_sparsity=j.sparsity,
        sparsity=m.sparsity, method=j.method, **spec_fields(j), scheme=m.scheme, bits=m.bits, seed=j.seed,
        accuracy=m.accuracy, dense_accuracy=m.dense_accuracy, pruned_accuracy=m.pruned_accuracy,
        dense_bytes=m.dense_bytes, compressed_bytes=m.compressed_bytes,
        compression_ratio=m.compression_ratio, best_speedup_fp32=best.get(j.id),
        layer_sparsity=m.layer_sparsity) for j, m in pairs]


def layer_timings(session: Session, where: ResultFilter | None = None, **kw) -> list[LayerTimingRow]:
    stmt = (select(LayerTiming, Job, Environment).join(Job, LayerTiming.job_id == Job.id)
            .outerjoin(Environment, LayerTiming.environment_id == Environment.id))
    stmt = _where(stmt, _filter(where, kw)).order_by(Job.id, LayerTiming.id)
    return [LayerTimingRow.of(t, j, e) for t, j, e in session.execute(stmt)]


def model_timings(session: Session, where: ResultFilter | None = None, **kw) -> list[ModelTimingRow]:
    stmt = (select(ModelTiming, Job, Environment).join(Job, ModelTiming.job_id == Job.id)
            .outerjoin(Environment, ModelTiming.environment_id == Environment.id))
    stmt = _where(stmt, _filter(where, kw)).order_by(Job.id, ModelTiming.batch)
    return [ModelTimingRow.of(t, j, e) for t, j, e in session.execute(stmt)]


def _metrics_dict(m: Metrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    keep = ("accuracy", "dense_accuracy", "pruned_accuracy", "sparsity", "layer_sparsity", "bits",
            "scheme", "dense_bytes", "compressed_bytes", "compression_ratio", "environment_id")
    return {k: getattr(m, k) for k in keep}


def job_detail(session: Session, job_id: int) -> JobDetail:
    job = get_job(session, job_id)
    where = ResultFilter(job_ids=[job_id])
    lt, mt = layer_timings(session, where), model_timings(session, where)
    ids = [r.environment_id for r in [*lt, *mt]] + [job.metrics.environment_id if job.metrics else None]
    env_ids = sorted({i for i in ids if i is not None})
    envs = session.scalars(select(Environment).where(Environment.id.in_(env_ids))).all()
    stages = [_stage_row(s) for s in job.stages]
    steps = [row for st in stages if st.name == "prune" for row in step_rows(job_id, st)]
    return JobDetail(job=JobRow.of(job), spec=job.spec, stages=stages,
                     metrics=_metrics_dict(job.metrics), layer_timings=lt, model_timings=mt,
                     environments=[EnvironmentRow.of(e) for e in envs],
                     sweeps=[s.id for s in job.sweeps], prune_steps=steps, files=_files(job))


OVERDUE_S = 120.0  # a scheduled job still waiting this long after its start time is sent again


def overdue_scheduled(session: Session, grace_s: float = OVERDUE_S, job_ids: Sequence[int] | None = None) -> list[int]:
    """Scheduled jobs (of `job_ids`, or all) still waiting `grace_s` after the start time of
    the latest of their --at sweeps (the one whose message they carry): a live worker would have
    started them, so their message is held by a worker that died, which Redis gives back only
    after the visibility timeout (hours), or by one still busy with another job."""
    from datetime import timedelta

    from farm.db.models import utcnow

    query = (select(Job.id, Sweep.start_at).join(SweepJob, SweepJob.job_id == Job.id)
             .join(Sweep, Sweep.id == SweepJob.sweep_id)
             .where(Job.status == JobStatus.SCHEDULED, Sweep.start_at.is_not(None)).order_by(Sweep.id))
    if job_ids is not None:
        query = query.where(Job.id.in_(list(job_ids)))
    latest = {job_id: at for job_id, at in session.execute(query)}  # by sweep id: the latest wins
    cutoff = utcnow() - timedelta(seconds=grace_s)
    return sorted(job_id for job_id, at in latest.items() if at <= cutoff)


STORED = {"train": "dense checkpoint", "prune": "pruned checkpoint", "quantize": "compressed model"}


def _files(job: Job) -> list[FileRow]:
    from farm import settings

    store = settings.load().artifacts  # where the store is on this machine (as artifacts.path_of)
    rows = []
    for s in job.stages:
        if s.artifact is not None:
            path = store / s.artifact.path
            rows.append(FileRow(stage=s.name, what=STORED.get(s.name, f"{s.name} output"), path=str(path),
                                bytes=s.artifact.bytes, exists=path.is_file()))
    return rows


def stored_file(session: Session, job_id: int, stage: str = "quantize") -> FileRow:
    """The file a job's stage stored (its compressed model by default); NotFound says why there
    is none: the job has not got that far, has no such stage, or the file was deleted."""
    job = get_job(session, job_id)
    what = STORED.get(stage, f"{stage} output")
    found = next((f for f in _files(job) if f.stage == stage), None)
    if found is not None and found.exists:
        return found
    if found is not None:
        raise NotFound(f"job {job_id}'s {what} is gone from the artifact store ({found.path}); "
                       f"FARM_ARTIFACTS was cleaned or points elsewhere")
    if stage not in job.spec.get("stages", STORED):
        raise NotFound(f"job {job_id} has no {what}: its stages are {', '.join(job.spec['stages'])}")
    raise NotFound(f"job {job_id} has no {what}: {_not_yet(job)}")


def _not_yet(job: Job) -> str:
    """Why a job has no output of a stage in its pipeline."""
    if job.status == JobStatus.FAILED:
        return f"it failed ({job.message or 'no reason recorded'})"
    if job.status == JobStatus.RUNNING:
        return f"it is still running ({job.stage or 'starting'})"
    return {JobStatus.SUCCEEDED: "none was stored", JobStatus.CANCELLED: "it was cancelled"}.get(
        job.status, f"it is {job.status}, not yet run")


def _stage_row(s: Stage) -> StageRow:
    return StageRow(name=s.name, status=str(s.status), reused=str(s.status) == "reused",
                    from_job=_maker(s), artifact_key=s.artifact.key if s.artifact else None,
                    message=s.message, seconds=s.seconds, result=_as_recorded_now(s.result))


def _as_recorded_now(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stage result written before two fixes, read as one written now: a guarded prune's drop
    as a fraction under `max_drop` (beside the spec's points) is `max_drop_points`, and the
    compressed model's `size.path`, a scratch file deleted with the job's workdir, is gone (the
    stored one is in JobDetail.files)."""
    if not result:
        return result
    out = dict(result)
    if "max_drop" in out:  # only the guarded search's record had it, as a fraction
        out["max_drop_points"] = round(100 * out.pop("max_drop"), 9)
    if isinstance(out.get("size"), dict) and "path" in out["size"]:
        out["size"] = {k: v for k, v in out["size"].items() if k != "path"}
    return out


def step_rows(job_id: int, prune: StageRow) -> list[PruneStepRow]:
    """A stepped prune's steps (jobs above 95%). A stage taken whole from another job reused every
    step, each made by that job unless it had taken the step from a third (named in the step;
    None where that job is gone or a result predates the field)."""
    rows = []
    for step in (prune.result or {}).get("steps") or []:
        taken = "from_job" in step or step.get("reused")  # by the maker, or by this job itself
        maker = step.get("from_job") if taken else prune.from_job
        rows.append(PruneStepRow(job_id=job_id, sparsity=step["sparsity"], epochs=step["epochs"],
                                 accuracy=step.get("accuracy"), train_seconds=step.get("train_seconds"),
                                 reused=prune.reused or bool(step.get("reused")), from_job=maker))
    return rows


def prune_steps(session: Session, job_ids: Sequence[int]) -> list[PruneStepRow]:
    """The steps of the stepped prunes among these jobs, by job."""
    stages = session.scalars(select(Stage).where(Stage.job_id.in_(job_ids), Stage.name == "prune")
                             .order_by(Stage.job_id)).all()
    return [row for s in stages for row in step_rows(s.job_id, _stage_row(s))]


def _maker(stage: Stage) -> int | None:
    """The job whose artifact a reused stage took (None once that job is deleted)."""
    if str(stage.status) != "reused" or stage.artifact is None or stage.artifact.job_id == stage.job_id:
        return None
    return stage.artifact.job_id


def environments(session: Session) -> list[EnvironmentRow]:
    return [EnvironmentRow.of(e) for e in session.scalars(select(Environment).order_by(Environment.id))]


def get_sweep(session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    return sweep


def sweep_summary(session: Session, sweep_id: int) -> SweepSummary:
    sweep = get_sweep(session, sweep_id)
    stmt = (select(Job.status, func.count()).join(SweepJob, SweepJob.job_id == Job.id)
            .where(SweepJob.sweep_id == sweep_id).group_by(Job.status))
    counts = {str(status): n for status, n in session.execute(stmt)}
    return SweepSummary(sweep_id=sweep.id, name=sweep.name, priority=sweep.priority,
                        start_at=sweep.start_at, created_at=sweep.created_at,
                        cancel_requested=sweep.cancel_requested, jobs=sum(counts.values()),
                        counts=counts)


def sweeps(session: Session, *, limit: int | None = None) -> list[SweepSummary]:
    ids = session.scalars(select(Sweep.id).order_by(Sweep.id.desc()).limit(limit)).all()
    return [sweep_summary(session, i) for i in ids]
