"""Figures: Pareto fronts, per-layer speedups, crossover maps. Matplotlib without pyplot (the Agg
canvas, no global state, no display), saved as PNG and SVG or inlined as data URIs.

Every timing axis names its unit and the card that measured it; figures never put two cards on
one timing axis: they draw one panel per card and say so.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from farm.report.crossover import BASELINES, Crossover
from farm.report.pareto import ParetoPanel, XAxis

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
BASELINE_COLORS = {"fp32": "#4c72b0", "tf32": "#55a868", "fp16": "#c44e52"}
LOSS_COLOR = "#d62728"  # where cuDNN is faster
DPI = 110
SVG_RC = {"svg.hashsalt": "farm", "svg.fonttype": "path"}  # stable ids; no font needed to view


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(SVG_RC):
        # No date in the metadata: the same data gives the same file.
        meta = {"Date": None} if fmt == "svg" else {"Software": "farm"}
        fig.savefig(buf, format=fmt, metadata=meta)
    return buf.getvalue()


def save(fig: Figure, stem: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write stem.png and stem.svg (a suffix on stem is replaced); returns the paths."""
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        path.write_bytes(figure_bytes(fig, fmt))
        paths.append(path)
    return paths


def data_uri(fig: Figure, fmt: str = "svg") -> str:
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(figure_bytes(fig, fmt)).decode('ascii')}"


# --- Pareto ---------------------------------------------------------------------------------

def _x_label(x: XAxis, baseline: str, batch: int | None, unit: str) -> str:
    at = f", whole model, batch {batch}" if batch is not None else ", whole model"
    if x is XAxis.speedup:
        return f"speedup over cuDNN {_name(baseline)} (×{at})"
    if x is XAxis.latency:
        return f"latency of the sparse model (ms{at})"
    return f"size on disk ({unit})"


def _size_unit(values: Sequence[float]) -> tuple[str, float]:
    top = max(values)
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if top >= scale:
            return unit, scale
    return "bytes", 1.0


def pareto_figure(panels: Sequence[ParetoPanel], x: XAxis, *, baseline: str = "fp32",
                  batch: int | None = None, color_by: str = "scheme", title: str = "") -> Figure:
    """One panel per card (timing axes) and dataset; colour per scheme (or model), marker per
    the other; non-dominated points ringed in black, joined by the front's step line."""
    rows = [p.row for panel in panels for p in panel.points]
    key_c = (lambda r: r.scheme_label) if color_by == "scheme" else (lambda r: r.model)
    key_m = (lambda r: r.model) if color_by == "scheme" else (lambda r: r.scheme_label)
    colors = {k: COLORS[i % len(COLORS)] for i, k in enumerate(sorted({key_c(r) for r in rows}))}
    markers = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(sorted({key_m(r) for r in rows}))}
    unit, scale = _size_unit([p.x for pn in panels for p in pn.points]) if x is XAxis.size else ("", 1.0)
    n = max(1, len(panels))
    fig = new_figure(5.2 * n + 2.2, 4.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for p in panel.points:
            ax.scatter(p.x / scale, p.y, c=colors[key_c(p.row)], marker=markers[key_m(p.row)],
                       s=70 if p.on_front else 36, alpha=1.0 if p.on_front else 0.45,
                       edgecolors="black" if p.on_front else "none", linewidths=1.3, zorder=3,
                       gid=f"{'front' if p.on_front else 'point'}-job-{p.row.job_id}")
        front = panel.front
        if front:
            ax.step([p.x / scale for p in front], [p.y for p in front], color="black", lw=1,
                    ls="--", where="post" if x.higher_is_better else "pre", zorder=2)
            for p in front:
                ax.annotate(f"#{p.row.job_id}", (p.x / scale, p.y), textcoords="offset points",
                            xytext=(5, 4), fontsize=7)
        if x is XAxis.size and max(p.x for p in panel.points) > 20 * min(p.x for p in panel.points):
            ax.set_xscale("log")
        ax.set_xlabel(_x_label(x, baseline, batch, unit))
        ax.set_ylabel("test accuracy (%)")
        where = f"timed on {panel.card}" if panel.card else "size on disk (no GPU timing)"
        ax.set_title(f"{panel.dataset}: {where}", fontsize=9)
        ax.grid(alpha=0.3)
    handles = [Patch(color=c, label=k) for k, c in colors.items()]
    handles += [Line2D([], [], marker=m, ls="", color="grey", label=k) for k, m in markers.items()]
    handles.append(Line2D([], [], marker="o", ls="--", color="black", mfc="white", label="Pareto front"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    cards = {pn.card for pn in panels if pn.card}
    note = f" (timings from {len(cards)} cards: one panel each, fronts per card)" if len(cards) > 1 else ""
    fig.suptitle((title or f"accuracy vs {x.value}") + note, fontsize=10)
    return fig


# --- per-layer speedups ---------------------------------------------------------------------

def _panel_key(r: Any) -> tuple:
    return (r.gpu or "unknown card", r.batch, r.dtype)


def layers_figure(rows: Sequence[Any], *, title: str = "") -> Figure:
    """Bars of our kernel's speedup over cuDNN fp32 / TF32 / fp16 per layer, on a log scale from
    1×: wins rise, losses (cuDNN faster) hang down hatched in red. A layer where cuDNN in our own
    precision wins (fp32 for an fp32 kernel, fp16 for fp16) is named in red. Diamonds on the right
    axis give each layer's sparsity. One panel per card, batch and dtype."""
    keys = sorted({_panel_key(r) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    layers = list(dict.fromkeys(r.layer for r in rows))
    fig = new_figure(max(7.5, 0.55 * len(layers) + 3.0), 3.6 * len(keys) + 0.9)
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    width = 0.8 / len(BASELINES)
    for ax, key in zip(axes, keys):
        card, batch, dtype = key
        same = dtype if dtype in BASELINES else "fp32"  # cuDNN in our own precision
        by_layer = {r.layer: r for r in rows if _panel_key(r) == key}
        names = [n for n in layers if n in by_layer]
        for j, b in enumerate(BASELINES):
            for i, name in enumerate(names):
                s = getattr(by_layer[name], f"speedup_{b}")
                if s is None or s <= 0:
                    continue
                loss = s < 1.0
                ax.bar(i + (j - 1) * width, s - 1.0, bottom=1.0, width=width,
                       color=BASELINE_COLORS[b], edgecolor=LOSS_COLOR if loss else "none",
                       hatch="///" if loss else None, linewidth=1.2 if loss else 0, zorder=3)
        lost = {n for n in names if (getattr(by_layer[n], f"speedup_{same}") or 1.0) < 1.0}
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.axhline(1.0, color="black", lw=1, zorder=4)
        lo, hi = ax.get_ylim()
        ax.axhspan(min(lo, 0.5), 1.0, color=LOSS_COLOR, alpha=0.06, zorder=0)
        ax.set_ylim(min(lo, 0.5), max(hi, 2.0))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        for tick, name in zip(ax.get_xticklabels(), names):
            if name in lost:
                tick.set_color(LOSS_COLOR)
                tick.set_fontweight("bold")
        ax.set_ylabel("speedup over cuDNN (×, log scale)")
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_title(f"timed on {card}, batch {batch}, our kernel in {dtype}; cuDNN {_name(same)} "
                     f"faster on {len(lost)} of {len(names)} layers" + (" (named in red)" if lost else ""),
                     fontsize=9)
        sp = ax.twinx()
        vals = [(i, 100.0 * by_layer[n].sparsity) for i, n in enumerate(names)
                if by_layer[n].sparsity is not None]
        if vals:
            sp.plot([i for i, _ in vals], [v for _, v in vals], ls="", marker="D", color="black", ms=4)
        sp.set_ylim(0, 100)
        sp.set_ylabel("layer sparsity (%, ◆)")
    handles = [Patch(color=BASELINE_COLORS[b], label=f"vs cuDNN {_name(b)}") for b in BASELINES]
    handles += [Patch(facecolor="white", edgecolor=LOSS_COLOR, hatch="///", label="cuDNN faster"),
                Line2D([], [], ls="", marker="D", color="black", ms=4, label="layer sparsity")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    cards = {k[0] for k in keys}
    if title or len(cards) > 1:
        note = f" (timings from {len(cards)} cards, one panel each)" if len(cards) > 1 else ""
        fig.suptitle(title + note, fontsize=10)
    return fig


def _name(precision: str) -> str:
    return "TF32" if precision == "tf32" else precision


# --- crossover map --------------------------------------------------------------------------

def shape_label(shape: Sequence[int]) -> str:
    """'64×64×3×3 @56×56' for (Cout, Cin, kh, kw, H, W)."""
    w = "×".join(str(s) for s in shape[:4])
    return w + (f" @{shape[4]}×{shape[5]}" if len(shape) >= 6 else "")


def crossover_figure(items: Sequence[Crossover], *, title: str = "") -> Figure:
    """Heat maps, one per card, our dtype and cuDNN precision: rows are layer shapes (and weight
    schemes), columns batch sizes, each cell the sparsity from which our kernel beats cuDNN."""
    from matplotlib import colormaps

    panels: dict[tuple, list[Crossover]] = {}
    for c in items:
        panels.setdefault((c.gpu or "unknown card", c.dtype, c.baseline), []).append(c)
    keys = sorted(panels, key=lambda k: (k[0], k[1] or "", BASELINES.index(k[2]) if k[2] in BASELINES else 9))
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    row_counts = [len({(c.shape, c.weight_scheme) for c in panels[k]}) for k in keys]
    fig = new_figure(4.6 * ncols + 1.2, (0.32 * max(row_counts) + 1.6) * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    cmap = colormaps["viridis_r"].with_extremes(bad="#dddddd")
    # The colour range starts where the measurements do: crossovers bunch in 0.5..1.
    vmin = min(0.9, math.floor(10 * min(c.min_sparsity for c in items)) / 10)
    image = None
    for ax, key in zip(axes, keys):
        cells = panels[key]
        schemes = {c.weight_scheme for c in cells}
        rows = sorted({(c.shape, c.weight_scheme) for c in cells})
        batches = sorted({c.batch for c in cells})
        grid = [[math.nan] * len(batches) for _ in rows]
        for c in cells:
            i, j = rows.index((c.shape, c.weight_scheme)), batches.index(c.batch)
            value = c.sparsity if c.bound == "at" else c.min_sparsity if c.bound == "below" else math.nan
            grid[i][j] = value
            ax.text(j, i, c.label, ha="center", va="center", fontsize=7,
                    color="black" if c.bound == "never" or (value - vmin) / (1 - vmin) < 0.45 else "white")
        image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_yticks(range(len(rows)), [shape_label(s) + (f" {w}" if len(schemes) > 1 else "")
                                         for s, w in rows], fontsize=7)
        ax.set_xlabel("batch size")
        card, dtype, baseline = key
        ax.set_title(f"{card}\nours {dtype} vs cuDNN {_name(baseline)}",
                     fontsize=8)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(keys)]), shrink=0.8,
                     label="crossover sparsity (fraction of weights pruned)")
    fig.suptitle((title or "sparsity from which our kernel beats cuDNN")
                 + "  (≤: wins at every sparsity measured; >: never, grey)", fontsize=9)
    return fig
