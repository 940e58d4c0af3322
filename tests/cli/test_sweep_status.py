"""`farm sweep status` in a narrow terminal: fewer columns, each header whole, as `farm status`
and `farm results` do (13 columns in 80 broke every header into syllables: "swe ep id")."""

import io

from rich.console import Console
from typer.testing import CliRunner

from farm.cli import render
from farm.cli.app import app
from farm.db.queries import SweepSummary


def _summary(i: int, **counts) -> SweepSummary:
    return SweepSummary(sweep_id=i, name=f"fmnist-sparsity-{i}", priority=0, start_at=None, created_at=None,
                        cancel_requested=False, jobs=sum(counts.values()), counts=counts)


def _status(monkeypatch, width: int, summaries: list[SweepSummary]) -> tuple[str, str]:
    from farm.db import queries

    shown, notes = (Console(width=width, record=True, file=io.StringIO()) for _ in range(2))
    monkeypatch.setattr(render, "out", shown)
    monkeypatch.setattr(render, "err", notes)
    monkeypatch.setattr(queries, "sweeps", lambda s: summaries)
    result = CliRunner().invoke(app, ["sweep", "status"])
    assert result.exit_code == 0, result.output
    return shown.export_text(), notes.export_text()


def test_several_sweeps_in_80_columns_leave_out_columns_and_say_so(monkeypatch):
    sweeps = [_summary(2, running=1, succeeded=3, queued=4), _summary(1, succeeded=7, failed=1)]
    table, notes = _status(monkeypatch, 80, sweeps)
    header = table.splitlines()[2]
    for words in ("sweep id", "name", "jobs", "running", "succeeded", "failed", "queued"):
        assert f" {words} " in header, table  # each header on one line, none broken
    assert "fmnist-sparsity-2" in table and max(len(line) for line in table.splitlines()) <= 80
    assert "left out for the terminal's width: start_at, cancel_requested, scheduled" in notes.replace("\n", " ")
    assert "--format csv has every column" in notes


def test_a_wide_terminal_shows_every_column(monkeypatch):
    table, notes = _status(monkeypatch, 200, [_summary(2, succeeded=3), _summary(1, failed=1)])
    assert "cancel requested" in table and "start at" in table and notes == ""
