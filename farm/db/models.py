"""The results database: typed SQLAlchemy 2.0 models.

All times are naive UTC (`utcnow()`), so SQLite and PostgreSQL compare them alike. Column names
are a contract: `farm.db.queries`, the CLI and the reports read them by name.

    sweeps ─< sweep_jobs >─ jobs ─< stages >─ artifacts (─ stage_locks while being built)
                             ├── metrics          (exactly one row per finished job)
                             ├─< layer_timings >── environments
                             └─< model_timings >── environments
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from farm.db.status import JobStatus, StageStatus


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _enum(cls):
    # Stored as plain VARCHAR of the enum's value: portable, and a new status needs no migration.
    return Enum(cls, native_enum=False, create_constraint=False, length=16,
                values_callable=lambda e: [m.value for m in e])


intpk = Annotated[int, mapped_column(primary_key=True)]
created_at = Annotated[datetime, mapped_column(default=utcnow)]
sha256 = Annotated[str, mapped_column(String(64))]
name = Annotated[str, mapped_column(String(128))]
ms = Annotated[float | None, mapped_column()]  # milliseconds, mean of timed runs


class Base(DeclarativeBase):
    # Named constraints, so Alembic batch mode on SQLite can find and alter them.
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(),
        JobStatus: _enum(JobStatus),
        StageStatus: _enum(StageStatus),
    }


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[intpk]
    name: Mapped[name]
    source: Mapped[str] = mapped_column(Text)  # the sweep file as submitted
    grid: Mapped[dict[str, Any]]  # the parsed grid, for `sweep status` and reports
    priority: Mapped[int] = mapped_column(default=0)  # 0..9, higher runs first
    start_at: Mapped[datetime | None]  # --at: jobs are held until then
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created_at]

    jobs: Mapped[list[Job]] = relationship(secondary="sweep_jobs", back_populates="sweeps",
                                           order_by="Job.id")


class SweepJob(Base):
    """A job can belong to several sweeps: a second sweep that asks for it reuses it."""

    __tablename__ = "sweep_jobs"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[intpk]
    spec_hash: Mapped[sha256] = mapped_column(unique=True)  # sha256 of the canonical JobSpec JSON
    spec: Mapped[dict[str, Any]]  # the canonical JobSpec
    # Copied out of the spec so results can be filtered in SQL.
    model: Mapped[name] = mapped_column(index=True)
    dataset: Mapped[name] = mapped_column(index=True)
    sparsity: Mapped[float]  # the target; metrics.sparsity is what was reached
    method: Mapped[str] = mapped_column(String(32))  # pruning schedule: oneshot | gradual
    scheme: Mapped[str] = mapped_column(String(16))  # fp32 | fp16 | linear | log | kmeans
    bits: Mapped[int]
    seed: Mapped[int]
    device: Mapped[str] = mapped_column(String(8))  # gpu | cpu: which worker queue
    priority: Mapped[int] = mapped_column(default=0)

    status: Mapped[JobStatus] = mapped_column(default=JobStatus.PENDING, index=True)
    stage: Mapped[str | None] = mapped_column(String(32))  # the stage running now
    progress: Mapped[float] = mapped_column(default=0.0)  # 0..1 over the whole pipeline
    message: Mapped[str | None] = mapped_column(Text)  # last error or note, one line
    attempts: Mapped[int] = mapped_column(default=0)  # deliveries started; bounded by max_attempts
    max_attempts: Mapped[int] = mapped_column(default=3)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(255))  # "host:pid" of the running attempt
    task_id: Mapped[str | None] = mapped_column(String(64))  # Celery task id

    created_at: Mapped[created_at]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # set while the job waits, queued, for another job's artifact (farm.worker.lifecycle.defer):
    # the workers' watch sends it again from this time on
    deferred_at: Mapped[datetime | None]

    sweeps: Mapped[list[Sweep]] = relationship(secondary="sweep_jobs", back_populates="jobs")
    stages: Mapped[list[Stage]] = relationship(back_populates="job", order_by="Stage.id",
                                               cascade="all, delete-orphan")
    metrics: Mapped[Metrics | None] = relationship(back_populates="job", cascade="all, delete-orphan")
    layer_timings: Mapped[list[LayerTiming]] = relationship(
        back_populates="job", order_by="LayerTiming.id", cascade="all, delete-orphan")
    model_timings: Mapped[list[ModelTiming]] = relationship(
        back_populates="job", order_by="ModelTiming.id", cascade="all, delete-orphan")


class Artifact(Base):
    """A stage's output stored once: `key` hashes the stage's inputs (what to look up before
    computing), `content_hash` the file's bytes (where it lies under settings.artifacts)."""

    __tablename__ = "artifacts"

    id: Mapped[intpk]
    key: Mapped[sha256] = mapped_column(unique=True)
    content_hash: Mapped[sha256] = mapped_column(index=True)
    stage: Mapped[str] = mapped_column(String(32))  # train | prune | quantize
    kind: Mapped[str] = mapped_column(String(32))  # checkpoint | compressed
    path: Mapped[str] = mapped_column(Text)  # relative to settings.artifacts
    bytes: Mapped[int]
    result: Mapped[dict[str, Any]]  # the stage's result, so a reuse needs no recompute
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))  # producer
    created_at: Mapped[created_at]


class StageLock(Base):
    """Who is computing the artifact for a stage key right now, so that jobs needing the same
    artifact (a sweep's dense baseline) wait for it instead of computing it twice."""

    __tablename__ = "stage_locks"

    key: Mapped[sha256] = mapped_column(primary_key=True)  # the Artifact.key being built
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(255))  # "host:pid", as jobs.worker
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[created_at]


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[intpk]
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))  # train | prune | quantize | benchmark
    status: Mapped[StageStatus]
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id", ondelete="SET NULL"))
    result: Mapped[dict[str, Any] | None]
    message: Mapped[str | None] = mapped_column(Text)  # e.g. "skipped: no GPU"
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    seconds: Mapped[float | None]

    job: Mapped[Job] = relationship(back_populates="stages")
    artifact: Mapped[Artifact | None] = relationship()


class Metrics(Base):
    """The result row of a job: exactly one per succeeded job (job_id is unique)."""

    __tablename__ = "metrics"

    id: Mapped[intpk]
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    accuracy: Mapped[float | None]  # final test accuracy, 0..1 (after quantize + fine-tune)
    dense_accuracy: Mapped[float | None]  # the dense baseline's
    pruned_accuracy: Mapped[float | None]  # after prune + retrain, before quantization
    sparsity: Mapped[float | None]  # reached, over all prunable weights
    layer_sparsity: Mapped[dict[str, Any] | None]  # {layer name: sparsity}
    bits: Mapped[int]
    scheme: Mapped[str] = mapped_column(String(16))
    dense_bytes: Mapped[int | None]  # fp32 dense weights
    compressed_bytes: Mapped[int | None]  # the saved compressed file
    compression_ratio: Mapped[float | None]  # dense_bytes / compressed_bytes
    # the machine that ran the job's last attempt (None in rows written before migration 0002)
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    created_at: Mapped[created_at]

    job: Mapped[Job] = relationship(back_populates="metrics")


class Environment(Base):
    """Where a timing was measured; rows are shared by fingerprint (hash of all fields)."""

    __tablename__ = "environments"

    id: Mapped[intpk]
    fingerprint: Mapped[sha256] = mapped_column(unique=True)
    gpu: Mapped[str | None] = mapped_column(String(255))
    driver: Mapped[str | None] = mapped_column(String(64))
    cuda: Mapped[str | None] = mapped_column(String(64))
    cudnn: Mapped[str | None] = mapped_column(String(64))
    torch: Mapped[str | None] = mapped_column(String(64))
    pycuda: Mapped[str | None] = mapped_column(String(64))
    python: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[dict[str, Any] | None]  # whatever else farm.kernels.environment() reports
    created_at: Mapped[created_at]


class LayerTiming(Base):
    """One row of farm.kernels.benchmark_layers: a layer at one batch size and dtype."""

    __tablename__ = "layer_timings"
    __table_args__ = (Index("ix_layer_timings_job_layer", "job_id", "layer", "batch"),)

    id: Mapped[intpk]
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    gpu_index: Mapped[int | None]
    layer: Mapped[name]
    shape: Mapped[list[Any] | None]  # weight shape (Cout, Cin, kh, kw)
    batch: Mapped[int]
    dtype: Mapped[str] = mapped_column(String(16))
    weight_scheme: Mapped[str | None] = mapped_column(String(16))
    sparsity: Mapped[float | None]
    ours_ms: Mapped[ms]
    cudnn_fp32_ms: Mapped[ms]
    cudnn_tf32_ms: Mapped[ms]
    cudnn_fp16_ms: Mapped[ms]
    cusparse_ms: Mapped[ms]
    speedup_fp32: Mapped[float | None]  # cudnn_fp32_ms / ours_ms
    speedup_tf32: Mapped[float | None]
    speedup_fp16: Mapped[float | None]
    speedup_cusparse: Mapped[float | None]
    max_rel_err: Mapped[float | None]  # vs float64 F.conv2d
    floor_ms: Mapped[ms]  # memory-bandwidth floor for this layer
    extra: Mapped[dict[str, Any] | None]

    job: Mapped[Job] = relationship(back_populates="layer_timings")
    environment: Mapped[Environment | None] = relationship()


class ModelTiming(Base):
    """One row of farm.kernels.benchmark_model: the whole network at one batch size."""

    __tablename__ = "model_timings"

    id: Mapped[intpk]
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    gpu_index: Mapped[int | None]
    batch: Mapped[int]
    # the fastest dense model measured at each precision (as given, BN folded, cuDNN-fused,
    # fused channels_last; all of them in `extra`, the as-given ones as dense_as_given_*_ms)
    dense_fp32_ms: Mapped[ms]
    dense_tf32_ms: Mapped[ms]
    dense_fp16_ms: Mapped[ms]
    sparse_ms: Mapped[ms]
    speedup_fp32: Mapped[float | None]  # dense_fp32_ms / sparse_ms
    speedup_tf32: Mapped[float | None]
    speedup_fp16: Mapped[float | None]
    extra: Mapped[dict[str, Any] | None]

    job: Mapped[Job] = relationship(back_populates="model_timings")
    environment: Mapped[Environment | None] = relationship()
