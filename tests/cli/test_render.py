"""Tables in a narrow terminal: one result row must not fold its numbers."""

import io

from rich.console import Console

from farm.cli import render
from farm.cli.render import Format

ROW = {"job_id": 1, "model": "resnet20", "dataset": "fashion-mnist", "target_sparsity": 0.98, "sparsity": 0.98,
       "scheme": "fp32", "bits": 32, "accuracy": 0.9381, "dense_accuracy": 0.9456, "compression_ratio": 27.27,
       "compressed_bytes": 41033, "best_speedup_fp32": 3.144}


def _render(monkeypatch, width: int, rows: list[dict]) -> str:
    console = Console(width=width, record=True, file=io.StringIO())  # utf-8 borders whatever the locale
    monkeypatch.setattr(render, "out", console)
    render.rows(rows, Format.table)
    return console.export_text()


def test_one_row_too_wide_for_the_terminal_is_shown_as_fields(monkeypatch):
    narrow = _render(monkeypatch, 80, [ROW])
    assert "│ target_sparsity   │ 0.98          │" in narrow and "0.9381" in narrow and "41033" in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 80


def test_a_row_that_fits_stays_a_table(monkeypatch):
    wide = _render(monkeypatch, 200, [ROW])
    assert "target_sparsity" in wide.splitlines()[1] and "field" not in wide
    several = _render(monkeypatch, 80, [ROW, {**ROW, "job_id": 2}])  # several rows: a table still
    assert "field" not in several
