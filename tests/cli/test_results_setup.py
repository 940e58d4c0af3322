"""`farm results` and `farm compare` tell apart jobs that differ only in their pruning scope, their
--max-drop or their --force run: the CSV had `method` but no `scope`, `max_drop` or `run`, so a
lamp and a global job of one sparsity read as one job twice (a new-user walkthrough). The tables
show those columns only where the rows differ in them."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from farm import db
from farm.cli import render
from farm.cli.app import app
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import record
from farm.worker.results import write_results

PLAIN = {"model": "tiny", "dataset": "synthetic", "device": "cpu", "sparsity": 0.9}
# alike but for one field each: the scope, the accuracy guard, a second run of the first, and
# the training setup (fewer images; more dense epochs)
LAMP, GUARDED, RERUN = {"scope": "lamp"}, {"max_drop": 1.0}, {"run": 1}
SUBSET, EPOCHS = {"subset": 1000}, {"epochs": 3}
SETUP = {"scope", "max_drop", "run", "method", "seed", "recipe", "subset", "epochs", "batch_size"}


def _finish(**fields) -> int:
    spec = JobSpec(**{**PLAIN, **fields}).resolve()
    with db.session() as s:
        [sub] = record(s, [spec])
    results = {"train": {"accuracy": 0.91}, "prune": {"accuracy": 0.9, "sparsity": 0.9},
               "quantize": {"size": {"dense_bytes": 40_000, "compressed_bytes": 4_000}}}
    with db.session() as s:
        write_results(s, s.get(db.models.Job, sub.job_id), spec, results, {}, fresh=True)
    return sub.job_id


def _farm(monkeypatch, *args: str, width: int = 200) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    monkeypatch.setattr(render, "out", console)
    monkeypatch.setattr(render, "err", Console(width=width, file=io.StringIO()))
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return console.export_text() + result.stdout


def _headers(table: str) -> list[str]:
    """Column names of a rendered table, its wrapped header lines joined."""
    rows = [line.split("┃")[1:-1] for line in table.splitlines() if line.startswith("┃")]
    return [" ".join(w for w in (r[i].strip() for r in rows) if w).replace(" ", "_") for i in range(len(rows[0]))]


def test_json_and_csv_rows_have_scope_max_drop_and_run(monkeypatch):
    ids = [_finish(), _finish(**LAMP), _finish(**GUARDED), _finish(**RERUN)]
    rows = {r["job_id"]: r for r in json.loads(_farm(monkeypatch, "results", "--format", "json"))}
    assert [(rows[i]["scope"], rows[i]["max_drop"], rows[i]["run"]) for i in ids] == [
        ("global", None, 0), ("lamp", None, 0), ("global", 1.0, 0), ("global", None, 1)]
    table = list(csv.DictReader(io.StringIO(_farm(monkeypatch, "results", "--format", "csv"))))
    assert {(r["scope"], r["max_drop"], r["run"]) for r in table} == {
        ("global", "", "0"), ("lamp", "", "0"), ("global", "1.0", "0"), ("global", "", "1")}
    compared = json.loads(_farm(monkeypatch, "compare", *map(str, ids), "--format", "json"))
    assert [(r["scope"], r["max_drop"], r["run"]) for r in compared] == [
        ("global", None, 0), ("lamp", None, 0), ("global", 1.0, 0), ("global", None, 1)]


@pytest.mark.parametrize("other, column, value", [(LAMP, "scope", "lamp"), (GUARDED, "max_drop", "1"),
                                                  (RERUN, "run", "1"), (SUBSET, "subset", "1000"),
                                                  (EPOCHS, "epochs", "3+60+0")],
                         ids=["scope", "max_drop", "run", "subset", "epochs"])
def test_the_results_table_shows_a_setup_column_where_rows_differ(monkeypatch, other, column, value):
    _finish(), _finish(**other)
    for width in (200, 80):  # kept at 80 columns too, with the dataset, as the last to go
        names = _headers(_farm(monkeypatch, "results", width=width))
        assert column in names, (width, names)
        assert not SETUP - {column} & set(names), names
    table = _farm(monkeypatch, "results")
    cells = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│")]
    assert value in {r[_headers(table).index(column)].strip() for r in cells}


def test_alike_rows_show_no_setup_column(monkeypatch):
    _finish(), _finish(sparsity=0.5)
    names = _headers(_farm(monkeypatch, "results"))
    assert not SETUP & set(names), names


@pytest.mark.parametrize("other, field", [(LAMP, "scope"), (GUARDED, "max_drop"), (RERUN, "run"),
                                          (SUBSET, "subset"), (EPOCHS, "epochs")],
                         ids=["scope", "max_drop", "run", "subset", "epochs"])
def test_the_compare_table_shows_a_setup_field_where_jobs_differ(monkeypatch, other, field):
    first, second = _finish(), _finish(**other)
    shown = _farm(monkeypatch, "compare", str(first), str(second))
    fields = [line.split("│")[1].strip() for line in shown.splitlines() if line.startswith("│")]
    assert field in fields and not SETUP - {field} & set(fields), fields
    alike = _farm(monkeypatch, "compare", str(first), str(_finish(sparsity=0.5)))
    assert not any(f"│ {name} " in alike for name in ("scope", "max_drop", "run ")), alike


def test_json_rows_carry_the_training_setup(monkeypatch):
    first, second = _finish(), _finish(**SUBSET, batch_size=32)
    rows = {r["job_id"]: r for r in json.loads(_farm(monkeypatch, "results", "--format", "json"))}
    assert [(rows[i]["recipe"], rows[i]["subset"], rows[i]["epochs"], rows[i]["batch_size"]) for i in (first, second)] == [
        ("full", None, "40+60+0", 512), ("full", 1000, "40+60+0", 32)]


def test_a_narrow_table_keeps_the_scheme_the_rows_differ_in(monkeypatch):
    """Rows differing in dataset, seed, scheme and bits: at 80 columns the scheme that tells an
    fp32 job from a 4-bit one stays, with the dataset (the seed and bits went before them; the
    scheme and bits used to go before the seed), and a column alike in every row goes before any
    that differs."""
    _finish(), _finish(scheme="linear", bits=4, seed=1), _finish(dataset="fashion-mnist", seed=2)
    names = _headers(_farm(monkeypatch, "results", width=80))
    assert {"scheme", "dataset"} <= set(names) and "seed" not in names, names
    assert "compressed_bytes" not in names  # one value in every row


def test_the_epochs_show_a_quantized_jobs_fine_tuning_beside_an_fp32_one(monkeypatch):
    """fp32 weights are not fine-tuned: their epochs end in 0, a 4-bit job's in its fine-tune
    epochs, so the extra training behind a quantized job's accuracy is in the table."""
    _finish(), _finish(scheme="kmeans", bits=4)
    table = _farm(monkeypatch, "results")
    cells = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│")]
    assert {r[_headers(table).index("epochs")].strip() for r in cells} == {"40+60+0", "40+60+6"}


def test_markdown_has_the_tables_columns_not_every_field(monkeypatch):
    """JSON and CSV have every field (a layer_sparsity dict a row); markdown is the table to paste."""
    _finish(), _finish(**LAMP)
    text = _farm(monkeypatch, "results", "--format", "markdown")
    header = next(line for line in text.splitlines() if line.startswith("| job_id"))
    assert "| scope |" in header and "layer_sparsity" not in header and "pruned_accuracy" not in header
    status = _farm(monkeypatch, "status", "--format", "markdown")
    assert "| job_id | status |" in status and "spec_hash" not in status


def test_a_pareto_of_jobs_of_two_datasets_says_their_accuracies_do_not_compare(tmp_path):
    from farm.report.charts import pareto_chart
    from farm.report.pareto import XAxis

    ids = [_finish(), _finish(dataset="fashion-mnist")]
    with db.session() as s:
        chart = pareto_chart(s, None, XAxis.size, job_ids=ids)
    assert any("jobs of 2 datasets on one front (fashion-mnist, synthetic)" in n for n in chart.notes), chart.notes
    with db.session() as s:
        assert not any("datasets on one front" in n for n in pareto_chart(s, None, XAxis.size, job_ids=ids[:1]).notes)


def test_results_filter_by_method_scope_and_seed_and_sort(monkeypatch):
    plain, lamp, oneshot, seeded = _finish(), _finish(**LAMP), _finish(method="oneshot"), _finish(seed=7)

    def ids(*args):
        return [r["job_id"] for r in json.loads(_farm(monkeypatch, "results", *args, "--format", "json"))]

    assert ids("--scope", "lamp") == [lamp]
    assert ids("--method", "oneshot") == [oneshot]
    assert ids("--seed", "7") == [seeded]
    assert sorted(ids("--scope", "global", "--method", "gradual")) == [plain, seeded]
    assert ids("--sort", "job_id", "--desc") == [seeded, oneshot, lamp, plain]
    assert ids("--sort", "max_drop") == [plain, lamp, oneshot, seeded]  # all empty: as they came
    table = _headers(_farm(monkeypatch, "results", "--sort", "pruned_accuracy", width=80))
    assert table[-1] == "pruned_accuracy"  # the order shows
    for bad, says in ((["--scope", "nope"], "unknown scope 'nope'"), (["--sort", "nope"], "--sort takes a result field"),
                      (["--desc"], "--desc orders by --sort FIELD")):
        result = CliRunner().invoke(app, ["results", *bad])
        assert says in str(result.exception), (bad, result.exception)
