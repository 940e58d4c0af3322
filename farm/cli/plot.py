"""`farm plot`: Pareto fronts, per-layer speedups and crossover maps as PNG and SVG files.

Each command builds its chart in farm.report.charts, writes STEM.png and STEM.svg, names them on
stderr, and prints the rows the chart shows (the front, the layers, the crossovers) with --format.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from farm.cli import filters, render
from farm.cli.command import Command
from farm.cli.render import Format, err
from farm.report.pareto import XAxis, YAxis

plot_app = typer.Typer(help="Plots of results: Pareto fronts, per-layer speedups, crossover maps.",
                       no_args_is_help=True)
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="rows shown: table, json, csv or markdown")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="file stem: writes STEM.png and STEM.svg")]
BatchOpt = Annotated[int | None, typer.Option(help="batch of the timings (default: the one most jobs have)")]
XOpt = Annotated[XAxis, typer.Option("--x", help="speedup (×), latency (ms) or size (bytes on disk)")]


class Baseline(str, Enum):
    fp32 = "fp32"
    tf32 = "tf32"
    fp16 = "fp16"


class ColorBy(str, Enum):
    scheme = "scheme"
    model = "model"


def _finish(chart, out: Path, fmt: Format, title: str) -> None:
    from farm.report import plots

    for note in chart.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    paths = plots.save(chart.figure, out)
    err.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, markup=False)
    render.rows(chart.rows, fmt, columns=chart.columns if fmt.tabular else None, title=title)


@plot_app.command("pareto", cls=Command)
def pareto(
    jobs: Annotated[list[int] | None, typer.Argument(help="job ids (or --sweep)", metavar="JOB_ID")] = None,
    sweep: Annotated[int | None, typer.Option(help="every job of this sweep")] = None,
    x: Annotated[XAxis | None, typer.Option("--x", help="speedup (×), latency (ms) or size (bytes on disk); "
                                            "default: speedup, or size where no job has timings")] = None,
    y: Annotated[YAxis, typer.Option("--y", help="accuracy")] = YAxis.accuracy,
    baseline: Annotated[Baseline, typer.Option(help="cuDNN precision of the speedup")] = Baseline.fp32,
    batch: BatchOpt = None,
    color_by: Annotated[ColorBy, typer.Option(help="one colour per scheme or per model")] = ColorBy.scheme,
    out: OutOpt = None,
    fmt: FormatOpt = Format.table,
):
    """Accuracy against speed or size, of a sweep's jobs or of the jobs given; non-dominated jobs
    ringed and listed."""
    from farm import db
    from farm.report.charts import pareto_chart

    from farm.report.errors import NothingToShow

    ids = filters.jobs_or_sweep("farm plot pareto", jobs, sweep)
    options = {"baseline": baseline.value, "batch": batch, "color_by": color_by.value, "job_ids": ids}
    with db.session() as s:
        try:
            chart = pareto_chart(s, sweep, x or XAxis.speedup, y, **options)
        except NothingToShow:
            if x is not None:
                raise
            # no --x and no timings (CPU-only jobs): the other front every finished job has
            x = XAxis.size
            chart = pareto_chart(s, sweep, x, y, **options)
            chart.notes.insert(0, f"no job {'in this sweep ' if sweep is not None else 'given '}has whole-model "
                                  "timings (GPU benchmark results): accuracy against size on disk")
    _finish(chart, out or Path(f"{_stem(sweep, ids)}-pareto-{(x or XAxis.speedup).value}"), fmt, "non-dominated jobs")


def _stem(sweep: int | None, ids: list[int]) -> str:
    """sweep3, jobs3-4-5; past six ids a digest of them all, so two sets sharing their first six
    do not overwrite each other's files."""
    if sweep is not None:
        return f"sweep{sweep}"
    if len(ids) <= 6:
        return "jobs" + "-".join(map(str, ids))
    import hashlib

    return f"jobs{ids[0]}-{ids[-1]}-{hashlib.sha1(' '.join(map(str, ids)).encode()).hexdigest()[:8]}"


@plot_app.command("layers", cls=Command)
def layers(
    job: Annotated[int, typer.Argument(help="job id", metavar="JOB_ID")],
    batch: Annotated[list[int] | None, typer.Option(help="only this batch size (repeatable)", metavar="N")] = None,
    dtype: Annotated[str | None, typer.Option(help="only our kernel in this dtype: fp32 or fp16")] = None,
    out: OutOpt = None,
    fmt: FormatOpt = Format.table,
):
    """Per-layer speedup of our kernel over cuDNN fp32 / TF32 / fp16, with each layer's sparsity."""
    from farm import db
    from farm.report.charts import layers_chart

    with db.session() as s:
        chart = layers_chart(s, job, batches=batch or None, dtype=dtype)
    _finish(chart, out or Path(f"job{job}-layers"), fmt, f"job {job}: layer speedups")


@plot_app.command("crossover", cls=Command)
def crossover(
    sweep: Annotated[int | None, typer.Option(help="only this sweep's jobs")] = None,
    model: Annotated[list[str] | None, typer.Option(help="only this model (repeatable)", metavar="NAME")] = None,
    job: Annotated[list[int] | None, typer.Option(help="only this job (repeatable)", metavar="JOB_ID")] = None,
    baseline: Annotated[list[Baseline] | None, typer.Option(help="cuDNN precision (repeatable)",
                                                            metavar="<fp32|tf32|fp16>")] = None,
    out: OutOpt = None,
    fmt: FormatOpt = Format.table,
):
    """Per layer shape, batch and precision: the sparsity from which our kernel beats cuDNN."""
    from farm import db
    from farm.report.charts import crossover_chart
    from farm.report.crossover import BASELINES
    from farm.cli import filters

    models = filters.models(model)
    baselines = [b.value for b in baseline] if baseline else list(BASELINES)
    with db.session() as s:
        chart = crossover_chart(s, sweep=sweep, models=models, job_ids=job, baselines=baselines)
    stem = out or Path(f"sweep{sweep}-crossover" if sweep is not None else "crossover")
    _finish(chart, stem, fmt, "crossover sparsity")
