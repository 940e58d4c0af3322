"""The sweep report: one self-contained HTML file. Images are inlined as data URIs and a Content
Security Policy forbids every fetch, so the page opens the same offline, mailed or archived."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from farm.db import queries
from farm.report import plots
from farm.report.charts import CROSSOVER_COLUMNS
from farm.report.compare import Comparison, compare_sweep
from farm.report.crossover import crossovers
from farm.report.pareto import XAxis, panels
from farm.report.provenance import ENV_COLUMNS, MeasuredOn, SweepInfo, environments, sweep_info
from farm.report.tables import COMPARE_COLUMNS, html_table

MAX_LAYER_CHARTS = 6  # per-layer charts in one report; `farm plot layers JOB` draws any other

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px; padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .notes li { color: #8a4b00; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; } pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class Report:
    html: str
    notes: list[str]  # what could not be shown, and why
    figures: int


def _figure(fig, caption: str, image_format: str) -> str:
    uri = plots.data_uri(fig, image_format)
    return (f'<figure><img alt="{html.escape(caption)}" src="{uri}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _pareto_section(comp: Comparison, image_format: str) -> tuple[str, int, list[str]]:
    parts, notes, count = [], [], 0
    for x in XAxis:
        ps = panels(comp.rows, x)
        if not ps:
            notes.append(f"no Pareto plot of accuracy vs {x.value}: no finished job has "
                         + ("whole-model timings" if x.is_timing else "a compressed size"))
            continue
        fig = plots.pareto_figure(ps, x, batch=comp.batch, title=f"accuracy vs {x.value}")
        front = sorted({p.row.job_id for pn in ps for p in pn.front})
        parts.append(_figure(fig, f"accuracy vs {x.value}: non-dominated jobs {', '.join(map(str, front))}",
                             image_format))
        count += 1
    return "".join(parts), count, notes


def _layer_jobs(comp: Comparison, timed: dict[int, list]) -> list[int]:
    """Jobs on the speedup front first, then the fastest others."""
    front = [p.row.job_id for pn in panels(comp.rows, XAxis.speedup) for p in pn.front]
    rest = sorted((r for r in comp.rows if r.job_id in timed),
                  key=lambda r: -(r.speedup_fp32 or 0.0))
    order = list(dict.fromkeys([j for j in front if j in timed] + [r.job_id for r in rest]))
    return order


def _layers_section(comp: Comparison, layer_rows: list, image_format: str, limit: int) -> tuple[str, int, list[str]]:
    timed: dict[int, list] = {}
    for r in layer_rows:
        timed.setdefault(r.job_id, []).append(r)
    if not timed:
        return "", 0, ["no per-layer charts: no job of this sweep has per-layer benchmark results"]
    jobs = _layer_jobs(comp, timed)
    shown = jobs[:limit]
    notes = [] if len(jobs) <= limit else [
        f"per-layer charts for {limit} of {len(jobs)} timed jobs (Pareto-front jobs first); "
        f"`farm plot layers JOB` draws any other"]
    by_id = {r.job_id: r for r in comp.rows}
    parts = []
    for j in shown:
        r = by_id[j]
        label = f"job {j}: {r.model} {r.scheme_label} at {r.target_sparsity:g} sparsity"
        parts.append(_figure(plots.layers_figure(timed[j], title=label), label, image_format))
    return "".join(parts), len(shown), notes


def _crossover_section(layer_rows: list, image_format: str) -> tuple[str, int, list[str]]:
    items = crossovers(layer_rows)
    if not items:
        return "", 0, ["no crossover map: no per-layer timings across sparsities"]
    fig = plots.crossover_figure(items)
    rows = [{**c.to_dict(), "layer_shape": plots.shape_label(c.shape), "crossover": c.label} for c in items]
    table = html_table(rows, CROSSOVER_COLUMNS, raw=False)
    return (_figure(fig, "sparsity from which our kernel beats cuDNN, per layer shape and batch", image_format)
            + f"<details><summary>crossover table ({len(items)} rows)</summary>{table}</details>"), 1, []


def _env_section(envs: list[MeasuredOn]) -> str:
    if not envs:
        return "<p>No timing of this sweep was measured yet, so no environment was recorded.</p>"
    cols = ["environment_id", *ENV_COLUMNS, "jobs", "model_timings", "layer_timings", "extra"]
    return html_table([e.to_dict() for e in envs], cols)


def _header(info: SweepInfo, comp: Comparison) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info.counts.items())) or "no jobs"
    batch = (f"Whole-model timings are shown at batch {comp.batch}." if comp.batch is not None
             else "No whole-model timings yet.")
    cards = comp.cards
    card_line = (f" Timings come from {len(cards)} cards: {', '.join(cards)}; plots give each card "
                 f"its own panel." if len(cards) > 1 else f" Timed on {cards[0]}." if cards else "")
    created = f"{info.created_at:%Y-%m-%d %H:%M} UTC" if info.created_at else "unknown"
    return (f"<h1>farm report: sweep {info.sweep_id} ({html.escape(info.name)})</h1>"
            f'<p class="meta">Created {created}; report generated '
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {info.jobs} jobs: {html.escape(counts)}. "
            f"{html.escape(batch + card_line)}</p>")


def build_report(session: Session, sweep_id: int, *, batch: int | None = None,
                 max_layer_charts: int = MAX_LAYER_CHARTS, image_format: str = "svg") -> Report:
    """The whole report for one sweep; NotFound for an unknown sweep. Whatever exists is shown:
    a sweep with no finished job still gets its spec, statuses and notes."""
    info = sweep_info(session, sweep_id)
    comp = compare_sweep(session, sweep_id, batch=batch)
    job_ids = [r.job_id for r in comp.rows]
    layer_rows = queries.layer_timings(session, sweep=sweep_id) if job_ids else []
    envs = environments(session, job_ids)
    notes = list(comp.notes)
    if not comp.finished:
        notes.append(f"sweep {sweep_id} has no finished job with results yet: only its spec and "
                     f"job statuses are shown")
    pareto, n1, more = _pareto_section(comp, image_format) if comp.finished else ("", 0, [])
    notes += more
    layers, n2, more = _layers_section(comp, layer_rows, image_format, max_layer_charts)
    notes += more if comp.finished else []
    cross, n3, more = _crossover_section(layer_rows, image_format)
    notes += more if comp.finished else []
    sections = [
        _header(info, comp),
        "<ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else "",
        "<h2 id=\"results\">Results</h2>", html_table(comp.rows, COMPARE_COLUMNS, css="results") if comp.rows
        else "<p>No jobs.</p>",
        "<h2 id=\"pareto\">Pareto fronts</h2>" + pareto if pareto else "",
        "<h2 id=\"layers\">Per-layer speedups</h2>" + layers if layers else "",
        "<h2 id=\"crossover\">Crossover sparsity</h2>" + cross if cross else "",
        "<h2 id=\"spec\">Sweep spec</h2>", f"<pre>{html.escape(info.source)}</pre>",
        f"<details><summary>parsed grid</summary><pre>{html.escape(json.dumps(info.grid, indent=2, default=str))}</pre></details>",
        "<h2 id=\"environments\">Environments of the measurements</h2>", _env_section(envs),
    ]
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>farm sweep {info.sweep_id}: {html.escape(info.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")
    return Report(html=page, notes=notes, figures=n1 + n2 + n3)


def write_report(session: Session, sweep_id: int, out: str | Path, **options: Any) -> Report:
    report = build_report(session, sweep_id, **options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.html, encoding="utf-8")
    return report
