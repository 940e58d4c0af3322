"""`farm results` in a narrow terminal: the rows read in the order of the columns it shows.

At 80 columns the table left the dataset out but still sorted by it, so two datasets' rows came
as two runs of sparsities (0.5, 0.9, 0.5, 0.9) that looked shuffled and alike."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from farm import db
from farm.cli import render
from farm.cli.app import app
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import record
from farm.worker.results import write_results

# Submitted out of order, so the job ids do not happen to give the sorted order.
JOBS = [("cifar10", 0.9, "fp32"), ("fashion-mnist", 0.5, "kmeans"), ("cifar10", 0.5, "fp32"),
        ("fashion-mnist", 0.9, "fp32"), ("fashion-mnist", 0.5, "fp32"), ("cifar10", 0.5, "kmeans")]


def _finish(dataset: str, sparsity: float, scheme: str) -> None:
    spec = JobSpec(model="tiny", dataset=dataset, device="cpu", sparsity=sparsity, scheme=scheme,
                   bits=4 if scheme == "kmeans" else None).resolve()
    with db.session() as s:
        [sub] = record(s, [spec])
    results = {"train": {"accuracy": 0.91 if dataset == "fashion-mnist" else 0.62},
               "prune": {"accuracy": 0.9 - sparsity / 10, "sparsity": sparsity},
               "quantize": {"size": {"dense_bytes": 40_000, "compressed_bytes": 4_000}}}
    with db.session() as s:
        write_results(s, s.get(db.models.Job, sub.job_id), spec, results, {}, fresh=True)


def _table(monkeypatch, width: int, jobs=JOBS) -> tuple[list[str], list[list[str]]]:
    """The shown headers and each row's cells, from `farm results` at this width."""
    for job in jobs:
        _finish(*job)
    console = Console(width=width, record=True, file=io.StringIO())
    monkeypatch.setattr(render, "out", console)
    monkeypatch.setattr(render, "err", Console(width=width, file=io.StringIO()))
    result = CliRunner().invoke(app, ["results"])
    assert result.exit_code == 0, result.output
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= width
    header = [line.split("┃")[1:-1] for line in lines if line.startswith("┃")]
    names = [" ".join(w for w in (h[i].strip() for h in header) if w).replace(" ", "_")
             for i in range(len(header[0]))]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    return names, cells


def _key(names: list[str], row: list[str]) -> list:
    shown = {"dataset": str, "sparsity": float, "scheme": str, "job_id": int}
    return [kind(row[names.index(c)]) for c, kind in shown.items() if c in names]


@pytest.mark.parametrize("width", [80, 60])
def test_rows_are_in_the_order_of_the_columns_shown(monkeypatch, width):
    names, cells = _table(monkeypatch, width)
    assert "target_sparsity" not in names and len(cells) == len(JOBS)
    assert [_key(names, r) for r in cells] == sorted(_key(names, r) for r in cells), cells


def test_rows_of_several_datasets_keep_the_dataset_at_80_columns(monkeypatch):
    names, cells = _table(monkeypatch, 80)
    assert "dataset" in names
    shown = [(r[names.index("dataset")], r[names.index("sparsity")]) for r in cells]
    assert shown[:3] == [("cifar10", "0.500")] * 2 + [("cifar10", "0.900")]


def test_one_dataset_leaves_it_out_first(monkeypatch):
    names, cells = _table(monkeypatch, 80, [j for j in JOBS if j[0] == "fashion-mnist"])
    assert "dataset" not in names and "scheme" in names and len(cells) == 3
