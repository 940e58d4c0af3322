"""The compare table: one row per job with accuracy, size and whole-model timings side by side.

Whole-model timings exist per batch size; a table row shows one batch for every job (the batch
most jobs were timed at unless one is asked for), so its latency columns compare like with like.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from farm.db import queries
from farm.db.models import Environment, Metrics, ModelTiming, Stage
from farm.db.status import JobStatus
from farm.errors import FarmError

BASELINES = ("fp32", "tf32", "fp16")
OUR_DTYPES = ("fp32", "fp16")  # when a job was timed in several, the row shows the first found


@dataclass(frozen=True)
class CompareRow:
    job_id: int
    status: str
    model: str
    dataset: str
    method: str
    scope: str
    max_drop: float | None  # accuracy points (--max-drop)
    seed: int
    run: int  # 0, or the --force run number
    recipe: str | None  # training setup (queries.spec_fields)
    subset: int | None
    epochs: str | None  # dense + prune/retrain + fine-tune, e.g. "40+60+6"
    batch_size: int | None
    inputs: str | None  # a user's checkpoint, image size, normalisation (queries.own_inputs)
    scheme: str
    bits: int
    target_sparsity: float
    sparsity: float | None  # reached
    accuracy: float | None  # 0..1
    dense_accuracy: float | None
    compressed_bytes: int | None  # the compressed file on disk
    dense_bytes: int | None  # fp32 dense weights
    compression_ratio: float | None
    batch: int | None  # the batch the timings below are for
    gpu: str | None  # the card that timed them
    dtype: str | None  # activations of our sparse model in that timing
    latency_ms: float | None  # our sparse model, whole network
    dense_fp32_ms: float | None  # the fastest dense network measured (worker/results.py)
    dense_tf32_ms: float | None
    dense_fp16_ms: float | None
    speedup_fp32: float | None  # dense_fp32_ms / latency_ms
    speedup_tf32: float | None
    speedup_fp16: float | None
    environment_id: int | None
    note: str | None  # why something is missing

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def scheme_label(self) -> str:
        """'fp32', 'fp16' or e.g. 'kmeans 4-bit': quantized schemes differ by their bits."""
        return self.scheme if self.scheme in ("fp32", "fp16") else f"{self.scheme} {self.bits}-bit"

    def speedup(self, baseline: str) -> float | None:
        return getattr(self, f"speedup_{baseline}")

    @property
    def has_timing(self) -> bool:
        return self.latency_ms is not None


@dataclass(frozen=True)
class Comparison:
    rows: list[CompareRow]
    batch: int | None  # None: no job has whole-model timings
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why

    @property
    def cards(self) -> list[str]:
        return sorted({r.gpu or "unknown card" for r in self.rows if r.has_timing})

    @property
    def finished(self) -> list[CompareRow]:
        """Rows with a result (accuracy) to plot."""
        return [r for r in self.rows if r.accuracy is not None]


Timed = tuple[ModelTiming, str | None]  # a whole-model timing and the card that measured it
METRIC_FIELDS = ("sparsity", "accuracy", "dense_accuracy", "compressed_bytes", "dense_bytes",
                 "compression_ratio")
TIMING_FIELDS = ("dense_fp32_ms", "dense_tf32_ms", "dense_fp16_ms", "speedup_fp32", "speedup_tf32",
                 "speedup_fp16", "environment_id")


def _timings(session: Session, job_ids: Sequence[int]) -> dict[int, list[Timed]]:
    stmt = (select(ModelTiming, Environment.gpu)
            .outerjoin(Environment, ModelTiming.environment_id == Environment.id)
            .where(ModelTiming.job_id.in_(list(job_ids))).order_by(ModelTiming.id))
    out: dict[int, list[Timed]] = {}
    for t, gpu in session.execute(stmt):
        out.setdefault(t.job_id, []).append((t, gpu))
    return out


def benchmark_notes(session: Session, job_ids: Sequence[int]) -> dict[int, str]:
    """The benchmark stage's status and message per job, e.g. 'skipped: no GPU'."""
    stmt = select(Stage).where(Stage.job_id.in_(list(job_ids)), Stage.name == "benchmark")
    return {s.job_id: (s.message or str(s.status)) for s in session.scalars(stmt)}


def _batches(timed: list[Timed]) -> list[int]:
    return sorted({t.batch for t, _ in timed})


def timed_batches(timed: dict[int, list[Timed]]) -> list[int]:
    return sorted({b for rows in timed.values() for b in _batches(rows)})


def choose_batch(timed: dict[int, list[Timed]]) -> int | None:
    """The batch size most jobs were timed at; ties go to the larger batch."""
    counts = Counter(b for rows in timed.values() for b in _batches(rows))
    return max(counts, key=lambda b: (counts[b], b)) if counts else None


def _pick(rows: list[Timed], batch: int | None) -> Timed | tuple[None, None]:
    rank = {d: i for i, d in enumerate(OUR_DTYPES)}
    at = sorted((tg for tg in rows if tg[0].batch == batch),
                key=lambda tg: rank.get((tg[0].extra or {}).get("dtype", "fp32"), len(rank)))
    return at[0] if at else (None, None)


def _note(job: queries.JobRow, metrics: Metrics | None, timed: list[Timed], found: bool,
          batch: int | None, bench: str | None) -> str | None:
    if job.status != str(JobStatus.SUCCEEDED):
        return f"{job.status}" + (f": {job.message}" if job.message else "")
    if metrics is None:
        return "no metrics recorded"
    if not timed:
        return "no benchmark results" + (f"; benchmark {bench}" if bench else "")  # bench has brackets of its own
    if not found:
        return f"not timed at batch {batch} (timed at {', '.join(map(str, _batches(timed)))})"
    return None


def _row(job: queries.JobRow, m: Metrics | None, timed: list[Timed], batch: int | None,
         bench: str | None) -> CompareRow:
    t, gpu = _pick(timed, batch)
    return CompareRow(
        job_id=job.job_id, status=job.status, model=job.model, dataset=job.dataset,
        method=job.method, scope=job.scope, max_drop=job.max_drop, seed=job.seed, run=job.run,
        recipe=job.recipe, subset=job.subset, epochs=job.epochs, batch_size=job.batch_size, inputs=job.inputs,
        scheme=job.scheme, bits=job.bits, target_sparsity=job.sparsity,
        **{f: getattr(m, f, None) for f in METRIC_FIELDS},
        batch=batch if t is not None else None, gpu=gpu, latency_ms=getattr(t, "sparse_ms", None),
        dtype=((t.extra or {}).get("dtype") or "fp32") if t is not None else None,
        **{f: getattr(t, f, None) for f in TIMING_FIELDS},
        note=_note(job, m, timed, t is not None, batch, bench))


def compare_jobs(session: Session, job_ids: Sequence[int], *, batch: int | None = None) -> Comparison:
    """Rows for these jobs, in the order given; NotFound names the first unknown id."""
    ids = list(dict.fromkeys(job_ids))
    for j in ids:
        queries.get_job(session, j)
    jobs = {r.job_id: r for r in queries.jobs(session, job_ids=ids)}
    metrics = {m.job_id: m for m in session.scalars(select(Metrics).where(Metrics.job_id.in_(ids)))}
    timed, bench = _timings(session, ids), benchmark_notes(session, ids)
    if batch is None:
        batch = choose_batch(timed)
    elif batch not in timed_batches(timed):
        raise FarmError(f"none of these jobs was timed at batch {batch} (timed at: "
                        f"{', '.join(map(str, timed_batches(timed))) or 'none'})")
    rows = [_row(jobs[j], metrics.get(j), timed.get(j, []), batch, bench.get(j)) for j in ids]
    return Comparison(rows=rows, batch=batch, notes=_summary_notes(rows))


def compare_sweep(session: Session, sweep_id: int, *, batch: int | None = None) -> Comparison:
    """Every job of the sweep (NotFound if there is no such sweep)."""
    queries.get_sweep(session, sweep_id)
    ids = sorted(r.job_id for r in queries.jobs(session, sweep=sweep_id))
    if not ids:
        return Comparison(rows=[], batch=None, notes=[f"sweep {sweep_id} has no jobs"])
    return compare_jobs(session, ids, batch=batch)


def jobs_named(ids: Sequence[int]) -> str:
    """'jobs 3, 4, 5', or the first six and a count: a title of a hundred ids is unreadable."""
    shown = ", ".join(map(str, ids[:6]))
    return f"jobs {shown}" + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")


def _ids(rows: list[CompareRow]) -> str:
    ids = [str(r.job_id) for r in rows]
    return ", ".join(ids[:12]) + (f" and {len(ids) - 12} more" if len(ids) > 12 else "")


def _summary_notes(rows: list[CompareRow]) -> list[str]:
    notes = []
    unfinished = [r for r in rows if r.status != str(JobStatus.SUCCEEDED)]
    if unfinished:
        counts = Counter(r.status for r in unfinished)
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        notes.append(f"{len(unfinished)} of {len(rows)} jobs have no result yet or failed "
                     f"({states}): jobs {_ids(unfinished)}")
    untimed = [r for r in rows if r.accuracy is not None and not r.has_timing]
    if untimed:
        notes.append(f"{len(untimed)} finished job{'s' if len(untimed) > 1 else ''} without "
                     f"whole-model timings to show: job{'s' if len(untimed) > 1 else ''} {_ids(untimed)} "
                     f"({untimed[0].note})")
    cards = sorted({r.gpu or "unknown card" for r in rows if r.has_timing})
    if len(cards) > 1:
        notes.append(f"timings come from {len(cards)} different cards ({', '.join(cards)}): "
                     f"compare latencies only within one card")
    return notes
