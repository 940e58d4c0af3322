"""One rendering path for every command: rows -> rich table, JSON or CSV on stdout.

Diagnostics go to stderr (`err`), so `farm results --format csv > out.csv` stays clean.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output gets wide tables rather than 80 columns of wrapped cells.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _dict(row: Any) -> dict[str, Any]:
    return row.to_dict() if hasattr(row, "to_dict") else dict(row)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def rows(items: list[Any], fmt: Format, *, columns: list[str] | None = None, title: str | None = None) -> None:
    data = [_dict(r) for r in items]
    columns = columns or (list(data[0]) if data else [])
    if fmt == Format.json:
        sys.stdout.write(json.dumps([{c: d.get(c) for c in columns} for d in data], indent=2, default=_default) + "\n")
    elif fmt == Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for d in data:
            writer.writerow(["" if d.get(c) is None else
                             json.dumps(d[c]) if isinstance(d.get(c), (list, dict)) else d[c] for c in columns])
    else:
        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c, overflow="fold")
        for d in data:
            table.add_row(*(_cell(d.get(c)) for c in columns))
        out.print(table if data else f"[dim]{title + ': ' if title else ''}nothing to show[/dim]")


def record(item: Any, fmt: Format, *, title: str | None = None) -> None:
    """One object: JSON as it is, otherwise a two-column field/value table."""
    data = _dict(item)
    if fmt == Format.json:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
        return
    rows([{"field": k, "value": v} for k, v in data.items()], fmt, columns=["field", "value"], title=title)
