"""`farm compare` over the filled results database."""

import csv
import io
import json

import pytest

from farm import db
from farm.errors import FarmError, NotFound
from farm.report import compare_jobs, compare_sweep

from .cli import invoke


def test_sweep_rows_hold_metrics_and_timings_at_the_common_batch(results_db):
    with db.session() as s:
        comp = compare_sweep(s, results_db.grid_sweep)
    assert comp.batch == 32  # both batches are on every job: ties go to the larger
    assert len(comp.rows) == len(results_db.timed_jobs) + 3
    for row in comp.rows:
        truth = results_db.jobs.get(row.job_id)
        if truth:
            assert row.gpu == truth["gpu"]
            assert row.latency_ms == pytest.approx(truth["latency"][32])
            assert row.speedup_fp16 == pytest.approx(truth["speedup"][32]["fp16"])
            assert row.compressed_bytes == truth["bytes"] and row.note is None
            assert row.dtype == ("fp16" if row.scheme == "kmeans" else "fp32")
    by_id = {r.job_id: r for r in comp.rows}
    assert "out of memory" in by_id[results_db.failed_job].note
    assert "skipped: no GPU" in by_id[results_db.untimed_job].note
    assert by_id[results_db.untimed_job].accuracy is not None  # shown, only without timings
    assert any("2 different cards" in n for n in comp.notes)


def test_unknown_ids_and_batches_are_named(results_db):
    with db.session() as s:
        with pytest.raises(NotFound, match="no job 999"):
            compare_jobs(s, [1, 999])
        with pytest.raises(NotFound, match="no sweep 77"):
            compare_sweep(s, 77)
        with pytest.raises(FarmError, match="batch 7"):
            compare_jobs(s, [1], batch=7)


def test_compare_jobs_json_and_markdown(results_db):
    a, b = results_db.timed_jobs[:2]
    out = invoke("compare", a, b, "--batch", 1, "--format", "json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["job_id"] for r in rows] == [a, b]
    assert rows[0]["speedup_tf32"] == pytest.approx(results_db.jobs[a]["speedup"][1]["tf32"])
    assert rows[0]["batch"] == 1

    md = invoke("compare", a, b, "--format", "markdown")
    lines = md.stdout.splitlines()
    assert lines[0] == f"| field | job {a} | job {b} |" and lines[1].startswith("|---")
    assert any(line.startswith("| speedup_fp32 |") and "×" in line for line in lines)


def test_compare_sweep_csv_and_table(results_db):
    out = invoke("compare", "--sweep", results_db.grid_sweep, "--format", "csv")
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == len(results_db.timed_jobs) + 3 and "speedup_fp16" in rows[0]
    assert "no result yet or failed" in out.stderr  # notes go to stderr, not into the CSV

    table = invoke("compare", "--sweep", results_db.grid_sweep)
    assert table.exit_code == 0 and "compare (timings at batch 32)" in table.stdout


def test_compare_needs_jobs_or_a_sweep(results_db):
    assert isinstance(invoke("compare").exception, FarmError)
    assert isinstance(invoke("compare", 1, "--sweep", 1).exception, FarmError)
    assert isinstance(invoke("compare", 4242).exception, NotFound)


def test_sweep_with_no_finished_job_still_lists_its_jobs(results_db):
    out = invoke("compare", "--sweep", results_db.pending_sweep, "--format", "json")
    assert out.exit_code == 0
    assert {r["status"] for r in json.loads(out.stdout)} == {"queued", "failed"}


def test_jobs_with_no_timings_leave_the_timing_fields_out_of_the_table_not_the_csv(results_db):
    table = invoke("compare", "--sweep", results_db.untimed_sweep).output
    assert "accuracy" in table and "no benchmark results" in table
    assert "latency_ms" not in table and "speedup_fp16" not in table and "–" not in table, table
    csv = invoke("compare", "--sweep", results_db.untimed_sweep, "--format", "csv").output
    assert any(line.startswith("job_id,") and "latency_ms" in line for line in csv.splitlines())


def test_a_compare_of_many_jobs_fits_a_narrow_terminal(filled):
    """One row a job: at 100 columns the least needed columns go, and a note names them (all
    were kept, every header broken into syllables, a note cell 25 lines tall)."""
    import os
    import subprocess
    import sys

    url, truth = filled
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FARM_")}, "FARM_DB_URL": url, "COLUMNS": "100"}
    r = subprocess.run([sys.executable, "-m", "farm.cli.app", "compare", "--sweep", str(truth.grid_sweep)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "left out for the terminal's width: " in r.stderr and "dense_fp16_ms" in r.stderr
    assert max(map(len, r.stdout.splitlines())) <= 100
    assert "accuracy" in r.stdout and "job" in r.stdout
