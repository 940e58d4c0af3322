"""`farm compare` and `farm report`: jobs side by side, and a sweep's self-contained HTML report."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from farm.cli import filters, render
from farm.cli.render import Format, err
from farm.errors import FarmError

SIDE_BY_SIDE_MAX = 6  # up to this many jobs the table puts them in columns, side by side
BatchOpt = Annotated[int | None, typer.Option(help="batch of the timings (default: the one most jobs have)")]


class CompareFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


CompareFormatOpt = Annotated[CompareFormat, typer.Option("--format", "-f", help="table, json, csv or markdown")]


class ImageFormat(str, Enum):
    svg = "svg"
    png = "png"


def _notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


# Left out first, in this order, when one row a job is wider than the terminal
COMPARE_OPTIONAL = ("dense_fp16_ms", "dense_tf32_ms", "dense_fp32_ms", "gpu", "dtype", "batch", "status",
                    "compressed_bytes", "dense_accuracy", "target_sparsity", "dataset", "speedup_fp32", "note",
                    "speedup_tf32")


def compare(
    jobs: Annotated[list[int] | None, typer.Argument(help="job ids (or --sweep)", metavar="JOB_ID")] = None,
    sweep: Annotated[int | None, typer.Option(help="every job of this sweep")] = None,
    batch: BatchOpt = None,
    fmt: CompareFormatOpt = CompareFormat.table,
):
    """Jobs side by side: accuracy, sparsity, bits, size on disk, compression, whole-model latency
    and speedup over cuDNN fp32 / TF32 / fp16."""
    from farm import db
    from farm.report.compare import CompareRow, compare_jobs, compare_sweep
    from farm.report.tables import cell, compare_columns, markdown, transpose

    jobs = filters.jobs_or_sweep("farm compare", jobs, sweep)
    with db.session() as s:
        comp = (compare_sweep(s, sweep, batch=batch) if sweep is not None
                else compare_jobs(s, jobs, batch=batch))
    _notes(comp.notes)
    if fmt in (CompareFormat.json, CompareFormat.csv):
        render.rows(comp.rows, Format(fmt.value), columns=CompareRow.columns())
        return
    fields = compare_columns(comp.rows)  # JSON and CSV keep every field
    if len(comp.rows) <= SIDE_BY_SIDE_MAX:
        rows, columns = transpose(comp.rows, fields)
    else:
        rows = [{c: cell(getattr(r, c), c) for c in fields} for r in comp.rows]
        columns = fields
    if fmt == CompareFormat.markdown:
        sys.stdout.write(markdown(rows, columns, raw=True))
    else:
        title = f"compare (timings at batch {comp.batch})" if comp.batch is not None else "compare"
        # one row a job: a narrow terminal drops the least needed columns, as farm results does
        # (13 of them at 100 columns broke every header into syllables, a note over 25 lines)
        wide = len(comp.rows) > SIDE_BY_SIDE_MAX
        render.rows(rows, Format.table, columns=columns, title=title,
                    optional=COMPARE_OPTIONAL if wide else (), clip=("note",) if wide else ())


def report(
    jobs: Annotated[list[int] | None, typer.Argument(help="job ids (or --sweep)", metavar="JOB_ID")] = None,
    sweep: Annotated[int | None, typer.Option(help="every job of this sweep")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")] = Path("report.html"),
    batch: BatchOpt = None,
    max_layer_charts: Annotated[int, typer.Option(help="per-layer charts at most (front jobs first)")] = 6,
    images: Annotated[ImageFormat, typer.Option(help="inline images as svg or png")] = ImageFormat.svg,
):
    """One self-contained HTML file of a sweep or of the jobs given: tables, Pareto fronts,
    per-layer and crossover charts, the sweep's spec and the environment of every measurement.
    Opens offline."""
    from farm import db
    from farm.report.document import write_report

    ids = filters.jobs_or_sweep("farm report", jobs, sweep)
    if max_layer_charts < 0:
        raise FarmError(f"--max-layer-charts must be 0 or more, got {max_layer_charts}")
    with db.session() as s:
        result = write_report(s, sweep, out, batch=batch, max_layer_charts=max_layer_charts,
                              image_format=images.value, job_ids=ids)
    _notes(result.notes)
    err.print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {result.figures} figure{'' if result.figures == 1 else 's'})",
              highlight=False, markup=False)
