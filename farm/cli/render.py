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


def rows(items: list[Any], fmt: Format, *, columns: list[str] | None = None, title: str | None = None,
         optional: tuple[str, ...] = ()) -> None:
    """`optional`: table columns to leave out, in this order, while the table is wider than the
    terminal (a note on stderr names them); JSON and CSV keep every column."""
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
        table = _table(data, columns, title)
        if len(data) == 1 and columns != ["field", "value"] and _natural_width(table) > out.width:
            # One row too wide for the terminal would fold its numbers ("0.9" over "8"): a
            # field/value table instead, as `farm submit`'s result row in 80 columns.
            return record({c: data[0].get(c) for c in columns}, fmt, title=title)
        shown, left_out = list(columns), []
        for c in optional:  # several rows: fewer columns rather than every cell folded to 3 characters
            if _narrowest(table) <= out.width:  # fits with no word broken
                break
            if c in shown:
                shown.remove(c)
                left_out.append(c)
                table = _table(data, shown, title)
        out.print(table if data else f"[dim]{title + ': ' if title else ''}nothing to show[/dim]")
        if left_out and data:
            err.print(f"[dim]left out for the terminal's width: {', '.join(left_out)} (--format csv has "
                      f"every column)[/dim]")


def _table(data: list[dict], columns: list[str], title: str | None) -> Table:
    table = Table(title=title, title_justify="left")
    for c in columns:
        cells = [_cell(d.get(c)) for d in data]
        numeric = all(isinstance(d.get(c), (int, float)) or d.get(c) is None for d in data)
        # a number is never folded (1156 over 4 reads as 1156); text folds where it must
        table.add_column(c, overflow="fold", min_width=max(map(len, cells), default=0) if numeric else None)
    for d in data:
        table.add_row(*(_cell(d.get(c)) for c in columns))
    return table


def _natural_width(table: Table) -> int:
    """The table's width with no cell folded (rich measures within the console's width)."""
    return out.measure(table, options=out.options.update_width(100_000)).maximum


def _narrowest(table: Table) -> int:
    """The table's width with text folded between words but no word (or number) broken."""
    return out.measure(table, options=out.options.update_width(100_000)).minimum


def record(item: Any, fmt: Format, *, title: str | None = None) -> None:
    """One object: JSON as it is, otherwise a two-column field/value table."""
    data = _dict(item)
    if fmt == Format.json:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
        return
    rows([{"field": k, "value": v} for k, v in data.items()], fmt, columns=["field", "value"], title=title)
