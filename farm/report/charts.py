"""Each plot command's work, from the database to a figure and the rows it shows: the CLI only
saves and renders. NotFound for unknown ids; NothingToShow where the ids exist but hold none of
the results a chart needs (the message says what is missing and what would help)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from farm.db import queries
from farm.report import plots
from farm.report.compare import benchmark_notes, compare_jobs, compare_sweep, jobs_named
from farm.report.crossover import BASELINES, crossovers
from farm.report.errors import NothingToShow
from farm.report.pareto import XAxis, YAxis, panels

FRONT_COLUMNS = ["job_id", "model", "dataset", "scheme", "bits", "target_sparsity", "accuracy", "x",
                 "gpu"]
LAYER_COLUMNS = ["layer", "batch", "dtype", "sparsity", "ours_ms", "cudnn_fp32_ms", "cudnn_tf32_ms",
                 "cudnn_fp16_ms", "speedup_fp32", "speedup_tf32", "speedup_fp16", "gpu"]
CROSSOVER_COLUMNS = ["gpu", "layer_shape", "batch", "dtype", "weight_scheme", "baseline", "crossover",
                     "bound", "min_sparsity", "max_sparsity", "points"]


@dataclass
class Chart:
    figure: Any  # matplotlib Figure
    rows: list[dict[str, Any]]  # what the chart shows, for --format
    columns: list[str]
    notes: list[str] = field(default_factory=list)  # what was left out, and why


def pareto_chart(session: Session, sweep_id: int | None, x: XAxis = XAxis.speedup,
                 y: YAxis = YAxis.accuracy, *, baseline: str = "fp32", batch: int | None = None,
                 color_by: str = "scheme", job_ids: Sequence[int] | None = None) -> Chart:
    """The front of a sweep's jobs, or of the jobs given (sweep_id None): jobs run one at a time
    have a front too."""
    if sweep_id is None:
        comp = compare_jobs(session, job_ids or [], batch=batch)
        what_jobs = jobs_named(job_ids or [])
    else:
        comp = compare_sweep(session, sweep_id, batch=batch)
        what_jobs = f"sweep {sweep_id} ({queries.get_sweep(session, sweep_id).name})"
    ps = panels(comp.rows, x, baseline)
    if not ps:
        what = ("whole-model timings (benchmark results)" if x.is_timing else "a compressed size")
        hint = "; `--x size` needs no timing" if x.is_timing and panels(comp.rows, XAxis.size) else ""
        raise NothingToShow(f"{what_jobs}: no finished job with accuracy and {what} to plot"
                            f"{hint} ({'; '.join(comp.notes) or 'no jobs'})")
    fig = plots.pareto_figure(ps, x, baseline=baseline, batch=comp.batch, color_by=color_by,
                              title=f"{what_jobs}: {y.value} vs {x.value}")
    # the x column named for what it holds ("x" read as nothing; 2242 was a size in bytes)
    axis = {"size": "size_bytes", "latency": "latency_ms", "speedup": "speedup"}[x.value]
    rows = [{**p.row.to_dict(), axis: p.x, "panel": p.row.gpu} for pn in ps for p in pn.front]
    notes = list(comp.notes)
    if len(datasets := sorted({r.dataset for r in comp.rows})) > 1:  # ids picked by hand may mix them
        notes.append(f"jobs of {len(datasets)} datasets on one front ({', '.join(datasets)}): their accuracies "
                     f"do not compare")
    return Chart(fig, rows, [axis if c == "x" else c for c in FRONT_COLUMNS], notes)


def layers_chart(session: Session, job_id: int, *, batches: Sequence[int] | None = None,
                 dtype: str | None = None) -> Chart:
    job = queries.get_job(session, job_id)
    rows = queries.layer_timings(session, job_ids=[job_id])
    if not rows:
        bench = benchmark_notes(session, [job_id]).get(job_id)
        why = f"benchmark {bench}" if bench else f"job is {job.status}"
        raise NothingToShow(f"job {job_id} has no per-layer benchmark results ({why})")
    kept = [r for r in rows if (not batches or r.batch in batches) and (dtype is None or r.dtype == dtype)]
    if not kept:
        have = sorted({(r.batch, r.dtype) for r in rows})
        raise NothingToShow(f"job {job_id} has no layer timings at the batch/dtype asked for "
                            f"(it has: {', '.join(f'batch {b} {d}' for b, d in have)})")
    title = f"job {job_id}: {job.model} {job.scheme} at {job.sparsity:g} target sparsity"
    return Chart(plots.layers_figure(kept, title=title), [r.to_dict() for r in kept], LAYER_COLUMNS)


def crossover_chart(session: Session, *, sweep: int | None = None, models: Sequence[str] | None = None,
                    job_ids: Sequence[int] | None = None, baselines: Sequence[str] = BASELINES) -> Chart:
    if sweep is not None:
        queries.get_sweep(session, sweep)
    for j in job_ids or ():
        queries.get_job(session, j)
    rows = queries.layer_timings(session, sweep=sweep, model=list(models) if models else None,
                                 job_ids=list(job_ids) if job_ids else None)
    items = crossovers(rows, baselines)
    if not items:
        raise NothingToShow("no per-layer benchmark results for these jobs: a crossover map needs "
                            "layer timings at several sparsities")
    single = [c for c in items if c.points < 2]
    notes = [f"{len(single)} of {len(items)} cells have timings at one sparsity only: their "
             f"crossover is a bound, not a value"] if single else []
    out = [{**c.to_dict(), "layer_shape": plots.shape_label(c.shape), "crossover": c.label} for c in items]
    return Chart(plots.crossover_figure(items), out, CROSSOVER_COLUMNS, notes)
