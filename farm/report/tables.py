"""Rows as Markdown or HTML tables, with cells written for people: 91.2%, 2.31×, 1.4 MiB."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from farm.units import BYTES, TIMES, in_unit

# Columns of farm.units are shown in their unit; any other float gets 4 significant digits.

COMPARE_COLUMNS = ["job_id", "status", "model", "dataset", "scheme", "bits", "target_sparsity",
                   "sparsity", "accuracy", "dense_accuracy", "compressed_bytes", "compression_ratio",
                   "gpu", "batch", "dtype", "latency_ms", "dense_fp32_ms", "dense_tf32_ms",
                   "dense_fp16_ms", "speedup_fp32", "speedup_tf32", "speedup_fp16", "note"]
# How jobs may differ beyond the columns above: shown only where they do (a column of "global",
# "-", "0" in every job is noise), else two jobs alike but for their scope, or trained on 1,000
# images against 4,000, read as one job twice
SETUP_COLUMNS = ("method", "scope", "max_drop", "seed", "run", "recipe", "subset", "epochs", "batch_size", "inputs")


def differing(rows: Sequence[Any], columns: Sequence[str] = SETUP_COLUMNS) -> list[str]:
    """Those of `columns` in which the rows do not all agree."""
    data = _dicts(rows)
    return [c for c in columns if len({json.dumps(d.get(c)) for d in data}) > 1]


def with_setup(columns: Sequence[str], rows: Sequence[Any]) -> list[str]:
    """`columns` with the setup fields the rows differ in after "bits" (at the end without it)."""
    columns = list(columns)
    at = columns.index("bits") + 1 if "bits" in columns else len(columns)
    return columns[:at] + differing(rows) + columns[at:]


def compare_columns(rows: Sequence[Any]) -> list[str]:
    """The compare table's fields: those some job has (CPU jobs have no timings: ten rows of
    dashes, which a note explains), with the setup fields the jobs differ in after their bits."""
    shown = [c for c in COMPARE_COLUMNS if any(d.get(c) is not None for d in _dicts(rows))] or COMPARE_COLUMNS
    return with_setup(shown, rows)


def human_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def cell(value: Any, column: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and (shown := in_unit(value, column)) is not None:
        return shown
    if column in BYTES and isinstance(value, (int, float)):
        return human_bytes(value)
    if column in TIMES and isinstance(value, (int, float)):
        return f"{value:.2f}×"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rows]


def transpose(rows: Sequence[Any], columns: Sequence[str], *, key: str = "job_id",
              prefix: str = "job ") -> tuple[list[dict], list[str]]:
    """One row per field, one column per item: the side-by-side view of a few jobs."""
    data = _dicts(rows)
    heads = [f"{prefix}{d[key]}" for d in data]
    out = [{"field": c, **{h: cell(d.get(c), c) for h, d in zip(heads, data)}} for c in columns if c != key]
    return out, ["field", *heads]


def markdown(rows: Sequence[Any], columns: Sequence[str], *, raw: bool = False) -> str:
    """A GitHub-flavoured Markdown table; `raw` when the cells are already formatted."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for d in _dicts(rows):
        cells = (esc(str(d.get(c, "")) if raw else cell(d.get(c), c)) for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[Any], columns: Sequence[str], *, css: str = "", raw: bool = False) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for d in _dicts(rows):
        tds = []
        for c in columns:
            text = str(d.get(c, "")) if raw else cell(d.get(c), c)
            number = isinstance(d.get(c), (int, float)) and not isinstance(d.get(c), bool)
            klass = ' class="num"' if number else ""
            tds.append(f"<td{klass}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    klass = f' class="{css}"' if css else ""
    return (f"<div class=\"scroll\"><table{klass}><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")
