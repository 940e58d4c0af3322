"""One rendering path for every command: rows -> rich table, JSON or CSV on stdout.

Diagnostics go to stderr (`err`), so `farm results --format csv > out.csv` stays clean.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from datetime import datetime
from enum import Enum
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from farm.units import in_unit


def _width(stream, piped: int) -> int | None:
    """Piped output gets wide tables rather than 80 columns of wrapped cells, unless COLUMNS
    says how wide (`COLUMNS=80 farm status | less`)."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else piped


out = Console(width=_width(sys.stdout, 200))
err = Console(stderr=True, width=_width(sys.stderr, 120))


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"  # the table's columns, cells as the table writes them: to paste into a PR or notes

    @property
    def tabular(self) -> bool:
        """Shown as the table shows it (its columns, its notes); JSON and CSV have every field."""
        return self in (Format.table, Format.markdown)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _dict(row: Any) -> dict[str, Any]:
    return row.to_dict() if hasattr(row, "to_dict") else dict(row)


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):  # as the report writes them
        return "yes" if value else "no"
    if column == "progress" and isinstance(value, (int, float)):
        return f"{math.floor(100 * value)}%"  # rounded down: a running job at 99.6% is not done
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (shown := in_unit(value, column)):
        return shown  # as farm compare and the report write it
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, (list, dict)):  # spaced, so a narrow cell wraps between items, not inside a number
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def rows(items: list[Any], fmt: Format, *, columns: list[str] | None = None, title: str | None = None,
         optional: tuple[str, ...] = (), clip: tuple[str, ...] = (), order: tuple[str, ...] = ()) -> None:
    """`optional`: table columns to leave out while the table is wider than the terminal (a note
    on stderr names them), those empty in every row first, then in this order. `clip`: text
    columns cut to one line with "…" when the table is too wide (a long message took four lines
    a row). `order`: the columns `items` are sorted by; a table sorts its rows again by those it
    shows, so no column left out decides the order. JSON and CSV keep every column whole."""
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
    elif fmt == Format.markdown and data:  # no rows: the table's "nothing to show", not an empty table
        from farm.report.tables import markdown

        if title:
            sys.stdout.write(f"**{title}**\n\n")
        sys.stdout.write(markdown([{c: _cell(d.get(c), c) for c in columns} for d in data], columns, raw=True) + "\n")
    else:
        _print_table(data, columns, title, optional, clip, fmt, order)


def _print_table(data: list[dict], columns: list[str], title: str | None, optional: tuple[str, ...],
                 clip: tuple[str, ...], fmt: Format, order: tuple[str, ...] = ()) -> None:
    if len(data) == 1 and columns != ["field", "value"] and _span(_sizes(data, columns, ())[1]) > out.width:
        # One row too wide for the terminal would fold its numbers ("0.9" over "8"): a
        # field/value table instead, as `farm submit`'s result row in 80 columns.
        return record({c: data[0].get(c) for c in columns}, fmt, title=title)
    shown, left_out = list(columns), []
    empty = [c for c in optional if all(d.get(c) is None for d in data)]
    for c in empty + [c for c in optional if c not in empty]:
        # several rows: fewer columns rather than every cell folded to 3 characters
        if _span(_sizes(data, shown, clip)[0]) <= out.width:  # fits with no word broken
            break
        if c in shown:
            shown.remove(c)
            left_out.append(c)
    if set(left_out) & set(order):  # sorted by a column not shown, the rows would look shuffled
        data = _sorted(data, [c for c in order if c in shown])
    if not data:
        out.print(f"[dim]{title + ': ' if title else ''}nothing to show[/dim]")
    else:
        if title:  # a line of its own: rich pads a table's title with spaces to the table's width
            out.print(title, style="table.title", highlight=False, markup=False)
        out.print(_table(data, shown, clip))
    if left_out and data:
        err.print(f"[dim]left out for the terminal's width: {', '.join(left_out)} (--format csv has "
                  f"every column)[/dim]")


def _sorted(data: list[dict], keys: list[str]) -> list[dict]:
    """Stable, so rows equal in every shown key keep the caller's order; empty cells last."""
    return sorted(data, key=lambda d: [(d.get(k) is None, d.get(k) if d.get(k) is not None else 0) for k in keys])


CLIP_MIN = 16  # a clipped column is cut to no fewer characters while optional columns can go
CLIP_LAST = 8  # ... and to no fewer than these when none is left to go


def _sizes(data: list[dict], columns: list[str], clip: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Each column's narrowest width with no word (nor number) broken, and its natural width.
    Headers count word by word: they wrap at their underscores, shown as spaces."""
    low, high = [], []
    for c in columns:
        cells = [_cut(_cell(d.get(c), c)) if c in clip else _cell(d.get(c), c) for d in data]
        texts = [c.replace("_", " "), *cells]
        natural = max(cell_len(line) for text in texts for line in text.splitlines() or [""])
        high.append(natural)
        if c in clip:
            low.append(min(natural, CLIP_MIN))
        else:
            numeric = all(isinstance(d.get(c), (int, float)) or d.get(c) is None for d in data)
            words = [cell_len(w) for text in texts for w in text.split()] + [cell_len(x) for x in cells if numeric]
            low.append(max(words, default=1))
    return low, high


def _cut(text: str) -> str:
    """A clipped cell's first line (one line a row)."""
    lines = text.splitlines()
    return lines[0] + "…" if len(lines) > 1 else text


def _share(low: list[int], high: list[int], headers: list[int], room: int) -> list[int]:
    """Widths from the narrowest, `room` more in all: first each header on one line (smallest
    first: "job id" wrapped for want of 3 characters), then the rest in proportion to how much
    wider each column would be whole."""
    widths = list(low)
    for i in sorted(range(len(low)), key=lambda i: headers[i]):
        more = min(high[i], max(low[i], headers[i])) - widths[i]
        if 0 < more <= room:
            widths[i] += more
            room -= more
    want = [h - w for w, h in zip(widths, high)]
    return [w + room * x // max(1, sum(want)) for w, x in zip(widths, want)]


def _span(widths: list[int]) -> int:
    """A table's width: each column padded by a space each side, with a rule between and around."""
    return sum(widths) + 3 * len(widths) + 1


def _table(data: list[dict], columns: list[str], clip: tuple[str, ...] = ()) -> Table:
    """Widths chosen here: rich shrinks a too-wide table by breaking words ("succee" over "ded")
    or cropping it. Each column gets its narrowest width plus a share of the room left, in
    proportion to how much wider it would be whole; `clip` columns stay one line, cut with "…"."""
    low, high = _sizes(data, columns, clip)
    headers = [cell_len(c) for c in columns]
    room = out.width - _span(low)
    for i, c in enumerate(columns):  # too wide: the clipped columns give up their room first
        if room < 0 and c in clip:
            give = min(-room, low[i] - CLIP_LAST)
            low[i], room = low[i] - max(give, 0), room + max(give, 0)
    if _span(high) <= out.width:
        widths = high
    elif room < 0:  # even the narrowest is too wide: rich folds the rest as it can
        widths = [CLIP_LAST if c in clip else None for c in columns]
    else:
        widths = _share(low, high, headers, room)
    table = Table()
    for c, width in zip(columns, widths):
        if c in clip:
            table.add_column(c.replace("_", " "), width=width, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(c.replace("_", " "), width=width, overflow="fold")
    for d in data:
        table.add_row(*(_cut(_cell(d.get(c), c)) if c in clip else _cell(d.get(c), c) for c in columns))
    return table


def record(item: Any, fmt: Format, *, title: str | None = None) -> None:
    """One object: JSON as it is, otherwise a two-column field/value table."""
    data = _dict(item)
    if fmt == Format.json:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
        return
    rows([{"field": k, "value": _cell(v, k) if isinstance(v, (int, float)) and not isinstance(v, bool) else v}
          for k, v in data.items()], fmt,
         columns=["field", "value"], title=title)
