"""The report of a sweep or of jobs given by id: one self-contained HTML file. Images are inlined
as data URIs and a Content Security Policy forbids every fetch, so the page opens the same
offline, mailed or archived."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from farm.db import queries
from farm.errors import FarmError
from farm.report import plots
from farm.report.charts import CROSSOVER_COLUMNS
from farm.report.compare import Comparison, compare_jobs, compare_sweep, jobs_named
from farm.report.crossover import crossovers
from farm.report.pareto import XAxis, panels
from farm.report.provenance import ENV_COLUMNS, MeasuredOn, SweepInfo, environments, jobs_info, sweep_info
from farm.report.tables import COMPARE_COLUMNS, html_table, with_setup

MAX_LAYER_CHARTS = 6  # per-layer charts in one report; `farm plot layers JOB` draws any other

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta, figcaption, .caption { color: #555; } .notes li { color: #8a4b00; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { font-size: 12px; } pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class Report:
    html: str
    notes: list[str]  # what could not be shown, and why
    figures: int


@dataclass
class Part:
    """One section of the page, with the figures it drew and what it had to leave out."""

    html: str = ""
    figures: int = 0
    notes: list[str] = field(default_factory=list)


def _figure(fig, caption: str, image_format: str) -> str:
    uri = plots.data_uri(fig, image_format)
    return (f'<figure><img alt="{html.escape(caption)}" src="{uri}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _section(anchor: str, title: str, body: str) -> str:
    return f'<h2 id="{anchor}">{html.escape(title)}</h2>{body}' if body else ""


def _pareto(comp: Comparison, image_format: str) -> Part:
    part = Part()
    for x in XAxis:
        ps = panels(comp.rows, x)
        if not ps:
            what = "whole-model timings" if x.is_timing else "a compressed size"
            part.notes.append(f"no Pareto plot of accuracy vs {x.value}: no finished job has {what}")
            continue
        fig = plots.pareto_figure(ps, x, batch=comp.batch, title=f"accuracy vs {x.value}")
        front = ", ".join(map(str, sorted({p.row.job_id for pn in ps for p in pn.front})))
        part.html += _figure(fig, f"accuracy vs {x.value}: non-dominated jobs {front}", image_format)
        part.figures += 1
    return part


def _layer_jobs(comp: Comparison, timed: dict[int, list]) -> list[int]:
    """Jobs on the speedup fronts first, then the others, fastest first."""
    front = [p.row.job_id for pn in panels(comp.rows, XAxis.speedup) for p in pn.front]
    rest = sorted((r for r in comp.rows if r.job_id in timed), key=lambda r: -(r.speedup_fp32 or 0.0))
    return list(dict.fromkeys([j for j in front if j in timed] + [r.job_id for r in rest]))


def _layers(comp: Comparison, layer_rows: list, image_format: str, limit: int) -> Part:
    timed: dict[int, list] = {}
    for r in layer_rows:
        timed.setdefault(r.job_id, []).append(r)
    if not timed:
        return Part(notes=["no per-layer charts: no job here has per-layer benchmark results"])
    jobs = _layer_jobs(comp, timed)
    part = Part()
    if len(jobs) > limit:
        part.notes.append(f"per-layer charts for {limit} of {len(jobs)} timed jobs (Pareto-front jobs "
                          f"first); `farm plot layers JOB` draws any other")
    by_id = {r.job_id: r for r in comp.rows}
    for j in jobs[:limit]:
        r = by_id[j]
        label = f"job {j}: {r.model} {r.scheme_label} at {r.target_sparsity:g} sparsity"
        part.html += _figure(plots.layers_figure(timed[j], title=label), label, image_format)
        part.figures += 1
    return part


def _crossover(layer_rows: list, image_format: str) -> Part:
    items = crossovers(layer_rows)
    if not items:
        return Part(notes=["no crossover map: no per-layer timings across sparsities"])
    rows = [{**c.to_dict(), "layer_shape": plots.shape_label(c.shape), "crossover": c.label}
            for c in items]
    caption = "sparsity from which our kernel beats cuDNN, per layer shape and batch"
    return Part(_figure(plots.crossover_figure(items), caption, image_format)
                + f"<details><summary>crossover table ({len(items)} rows)</summary>"
                + html_table(rows, CROSSOVER_COLUMNS) + "</details>", 1)


def _results(comp: Comparison) -> str:
    if not comp.rows:
        return "<p>No jobs.</p>"
    size = "compressed_bytes: the compressed file on disk."
    if comp.batch is None:
        caption = ("No whole-model timings: no job here has benchmark results (see the notes), so "
                   f"the timing columns are empty. {size}")
    else:
        caption = (f"Whole-model timings at batch {comp.batch}, on the card named in column gpu. "
                   f"latency_ms: our sparse model with activations in dtype; dense_X_ms: the fastest "
                   f"dense model measured in precision X (as given, BN folded, cuDNN-fused or "
                   f"channels_last; jobs benchmarked before 2026-11-26 only as given); speedup_X: "
                   f"dense_X_ms over our time (for tf32, with our kept-dense layers in TF32). {size}")
    # every column (the caption explains empty timings), and the setup fields the jobs differ in
    # (scope, run, ...) after their bits, as `farm compare` shows them
    return f'<p class="caption">{html.escape(caption)}</p>' + html_table(
        comp.rows, with_setup(COMPARE_COLUMNS, comp.rows), css="results")


STEP_COLUMNS = ["job_id", "sparsity", "epochs", "accuracy", "train_seconds", "reused", "from_job"]


def _prune_steps(rows: list) -> str:
    caption = ("Jobs above 95% prune through the lower levels (90%, 95%, 98%), retraining after each; "
               "accuracy is each step's after its retraining. A reused step was taken from the job "
               "in from_job, which trained it, not retrained.")
    return f'<p class="caption">{html.escape(caption)}</p>' + html_table(rows, STEP_COLUMNS)


def _spec(info: SweepInfo) -> str:
    grid = html.escape(json.dumps(info.grid, indent=2, default=str))
    return (f"<pre>{html.escape(info.source)}</pre>"
            f"<details><summary>parsed grid</summary><pre>{grid}</pre></details>")


def _environments(envs: list[MeasuredOn]) -> str:
    if not envs:
        return ("<p>No job here has timings, so no environment was recorded for them: the "
                "benchmark stage runs only on a GPU (the notes above say why each job has none).</p>")
    cols = ["environment_id", *ENV_COLUMNS, "jobs", "model_timings", "layer_timings", "extra"]
    return html_table([e.to_dict() for e in envs], cols)


def _header(info: SweepInfo, comp: Comparison, notes: list[str]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info.counts.items())) or "no jobs"
    cards = comp.cards
    timed_on = (f" Timings come from {len(cards)} cards: {', '.join(cards)}; plots give each card "
                f"its own panel." if len(cards) > 1 else f" Timed on {cards[0]}." if cards else "")
    created = f"{info.created_at:%Y-%m-%d %H:%M} UTC" if info.created_at else "unknown"
    made = f"Created {created}; report" if info.sweep_id is not None else "Report"
    meta = (f"{made} generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
            f"{info.jobs} jobs: {counts}.{timed_on}")
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (f"<h1>farm report: {html.escape(_title(info))}</h1>"
            f'<p class="meta">{html.escape(meta)}</p>' + (f'<ul class="notes">{items}</ul>' if items else ""))


def _title(info: SweepInfo) -> str:
    return f"sweep {info.sweep_id} ({info.name})" if info.sweep_id is not None else info.name


def build_report(session: Session, sweep_id: int | None, *, batch: int | None = None,
                 max_layer_charts: int = MAX_LAYER_CHARTS, image_format: str = "svg",
                 job_ids: Sequence[int] | None = None) -> Report:
    """The whole report for one sweep, or for the jobs given (sweep_id None: no spec section);
    NotFound for an unknown sweep or job. Whatever exists is shown: a sweep with no finished job
    still gets its spec, job statuses and notes."""
    if sweep_id is None:
        if not job_ids:
            raise FarmError("a report is of a sweep or of job ids; neither was given")
        comp = compare_jobs(session, job_ids, batch=batch)
        info = jobs_info(comp.rows, jobs_named([r.job_id for r in comp.rows]))
    else:
        info, comp = sweep_info(session, sweep_id), compare_sweep(session, sweep_id, batch=batch)
    job_ids = [r.job_id for r in comp.rows]
    layer_rows = queries.layer_timings(session, job_ids=job_ids) if job_ids else []
    steps = queries.prune_steps(session, job_ids) if job_ids else []
    notes = list(comp.notes)
    if comp.finished:
        parts = [_pareto(comp, image_format), _layers(comp, layer_rows, image_format, max_layer_charts),
                 _crossover(layer_rows, image_format)]
    else:
        notes.append(f"{_title(info)}: no finished job with results yet, so only "
                     f"{'its spec and ' if sweep_id is not None else ''}job statuses are shown")
        parts = [Part(), Part(), Part()]
    for p in parts:
        notes += p.notes
    pareto, layers, cross = (p.html for p in parts)
    body = "".join([
        _header(info, comp, notes),
        _section("results", "Results", _results(comp)),
        _section("steps", "Prune steps", _prune_steps(steps)) if steps else "",
        _section("pareto", "Pareto fronts", pareto),
        _section("layers", "Per-layer speedups", layers),
        _section("crossover", "Crossover sparsity", cross),
        _section("spec", "Sweep spec", _spec(info)) if sweep_id is not None else "",
        _section("environments", "Environments of the measurements",
                 _environments(environments(session, job_ids))),
    ])
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>farm report: {html.escape(_title(info))}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")
    return Report(html=page, notes=notes, figures=sum(p.figures for p in parts))


def write_report(session: Session, sweep_id: int | None, out: str | Path, **options: Any) -> Report:
    """build_report, written to `out` (its folder is created)."""
    report = build_report(session, sweep_id, **options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.html, encoding="utf-8")
    return report
