"""The `farm` command as a user runs it: embedded default, dedupe, and every bad input giving one
line on stderr, exit 1 and nothing written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from .conftest import TINY, run_farm

BAD_SUBMITS = [
    (["submit", "nosuchnet"], "unknown model 'nosuchnet'"),
    (["submit", "tiny", "--dataset", "imagenet-1m"], "unknown dataset 'imagenet-1m'"),
    (["submit", "tiny", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["submit", "tiny", "--sparsity", "-0.2"], "sparsity must be in [0, 1)"),
    (["submit", "tiny", "--scheme", "kmeans", "--bits", "9"], "bits must be from 2 to 8"),
    (["submit", "tiny", "--scheme", "fp32", "--bits", "4"], "needs a quantized scheme"),
    (["submit", "tiny", "--scheme", "kmeans"], "needs bits (--bits; in a sweep file, bits:)"),
    (["submit", "tiny", "--priority", "12"], "--priority must be from 0 to 9"),
    (["submit", "tiny", "--max-drop", "-1"], "max_drop is accuracy points in [0, 100)"),
    (["submit", "tiny", "--max-drop", "0.5", "--method", "oneshot"], "needs method gradual and scope global"),
    (["submit", "inception_v3", "--dataset", "fashion-mnist"],  # was queued, then failed in torch
     "model inception_v3 needs images of at least 75x75 pixels, but fashion-mnist's are 28x28"),
    (["show", "999"], "no job 999"),
    (["sweep", "status", "77"], "no sweep 77"),
]


def _jobs_in(home) -> int:
    db = home / "farm.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from jobs").fetchone()[0]


def _one_error_line(result, words: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: error: "), result.stderr
    assert words in lines[0], lines[0]


@pytest.mark.parametrize("args, words", BAD_SUBMITS, ids=[" ".join(a) for a, _ in BAD_SUBMITS])
def test_bad_input_is_one_line_and_writes_nothing(args, words, farm_env, farm_home, farm_cli):
    _one_error_line(farm_cli(args, farm_env), words)
    assert _jobs_in(farm_home) == 0


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("grid: [1, 2\n", "not valid YAML"),
    ("grid:\n  model: tiny\n  sparsity: [0.5, 2.0]\n", "sparsity must be in [0, 1)"),
    ("grid:\n  model: [tiny, inception_v3]\nfixed:\n  dataset: fashion-mnist\n",
     "job (model=inception_v3): model inception_v3 needs images of at least 75x75 pixels, but fashion-mnist's "
     "are 28x28"),
])
def test_bad_sweep_file_is_one_line_and_writes_nothing(text, words, farm_env, farm_home, tmp_path, farm_cli):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    _one_error_line(farm_cli(["sweep", "submit", str(path)], farm_env), words)
    assert _jobs_in(farm_home) == 0


def test_missing_sweep_file(farm_env, tmp_path, farm_cli):
    _one_error_line(farm_cli(["sweep", "submit", str(tmp_path / "nope.yaml")], farm_env), "cannot read sweep file")


def test_unreachable_broker_writes_nothing(farm_env, farm_home):  # the real console script
    env = {**farm_env, "FARM_BROKER_URL": "redis://127.0.0.1:1/0"}
    _one_error_line(run_farm(["submit", "tiny", *TINY], env), "cannot reach the broker")
    assert _jobs_in(farm_home) == 0


def test_unreachable_database(farm_env, farm_cli):
    env = {**farm_env, "FARM_DB_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/none"}
    _one_error_line(farm_cli(["submit", "tiny", *TINY], env), "cannot reach the database")
    _one_error_line(farm_cli(["results"], env), "cannot reach the database")


def test_worker_without_broker_says_so(farm_env, farm_cli):
    _one_error_line(farm_cli(["worker"], farm_env), "needs a broker")


@pytest.mark.skipif(any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/dxg").exists(), reason="a GPU is here")
def test_gpu_worker_without_a_gpu_says_so(farm_env, farm_cli):
    # it would take GPU jobs off the queue and run them on the CPU
    env = {**farm_env, "FARM_BROKER_URL": "redis://127.0.0.1:1/0"}
    _one_error_line(farm_cli(["worker", "--gpu", "0"], env), "this machine has no NVIDIA GPU")


def test_embedded_submit_runs_here_dedupes_and_reuses_the_baseline(farm_env, farm_home, farm_cli):
    first = run_farm(["submit", "tiny", *TINY, "--sparsity", "0.5", "--format", "json"], farm_env)
    assert first.returncode == 0, first.stderr
    detail = json.loads(first.stdout)
    assert detail["job"]["status"] == "succeeded" and detail["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert [s["status"] for s in detail["stages"]] == ["succeeded", "succeeded", "succeeded", "skipped"]
    assert detail["stages"][3]["message"].startswith("skipped: no GPU")
    assert detail["job"]["message"].startswith("benchmark skipped: no GPU")  # not the job that was skipped
    # no timings, and still where it ran: the metrics row names this machine's environment
    import torch

    [env] = detail["environments"]
    assert env["environment_id"] == detail["metrics"]["environment_id"] and env["torch"] == torch.__version__
    assert "quick CPU recipe" in first.stderr or "--recipe quick" in " ".join(TINY)

    again = farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.5", "--format", "json"], farm_env)
    assert json.loads(again.stdout)["job"]["job_id"] == detail["job"]["job_id"]
    assert "already succeeded" in again.stderr

    other = json.loads(farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.8", "--format", "json"],
                                farm_env).stdout)
    assert [s["status"] for s in other["stages"]][:2] == ["reused", "succeeded"]
    assert other["stages"][0]["artifact_key"] == detail["stages"][0]["artifact_key"]
    assert other["stages"][0]["from_job"] == detail["job"]["job_id"]  # whose dense model it took
    assert other["stages"][1]["from_job"] is None

    forced = json.loads(farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.5", "--force", "--format",
                                  "json"], farm_env).stdout)
    assert forced["job"]["job_id"] not in (detail["job"]["job_id"], other["job"]["job_id"])
    assert forced["spec"]["run"] == 1 and forced["stages"][0]["status"] == "succeeded"
    assert _jobs_in(farm_home) == 3

    table = farm_cli(["results", "--sparsity-min", "0.5", "--sparsity-max", "0.5", "--format", "csv"], farm_env)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 1 + 2
    compare = farm_cli(["compare", str(detail["job"]["job_id"]), str(other["job"]["job_id"])], farm_env)
    assert compare.returncode == 0 and "accuracy" in compare.stdout
    shown = farm_cli(["show", str(other["job"]["job_id"])], farm_env)
    assert shown.returncode == 0 and "stages" in shown.stdout


def test_embedded_guarded_job_reports_what_it_found(farm_env, farm_home, farm_cli):
    """--max-drop runs the accuracy-guarded search as the prune stage; the job keeps its target
    and records the sparsity the search reached within the drop, with its trials."""
    run = farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.6", "--max-drop", "50", "--format", "json"],
                   farm_env)
    detail = json.loads(run.stdout)
    assert detail["job"]["status"] == "succeeded", run.stderr
    assert detail["spec"]["max_drop"] == 50.0 and "drop <= 50 pt" in run.stderr
    assert detail["metrics"]["sparsity"] == pytest.approx(0.6, abs=0.01)  # 50 points: reached at once
    search = detail["stages"][1]["result"]  # the guarded search's own record, not plain pruning's
    assert search["target_sparsity"] == 0.6 and search["reached"] and search["trials"][0]["within_drop"]
    # the drop in points, as the spec has it (50.0), named so: the fraction 0.5 read as half a point
    assert search["max_drop_points"] == 50.0 and "max_drop" not in search
    assert len(search["sensitivity"]["layers"]) == len(search["layers"]) - 2  # first conv, classifier dense
    plain = json.loads(farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.6", "--format", "json"], farm_env).stdout)
    assert plain["job"]["job_id"] != detail["job"]["job_id"]  # a different job, not a dedupe hit
    assert plain["stages"][1]["artifact_key"] != detail["stages"][1]["artifact_key"]
    assert plain["stages"][0]["status"] == "reused"  # the same dense baseline
    assert "trials" not in plain["stages"][1]["result"]


def test_embedded_stepped_job_shows_its_steps(farm_env, farm_home, farm_cli):
    """Above 95% the prune goes through 90% and 95%: `farm show` lists each step's accuracy."""
    run = farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.98", "--format", "json"], farm_env)
    detail = json.loads(run.stdout)
    assert detail["job"]["status"] == "succeeded", run.stderr
    assert [s["sparsity"] for s in detail["stages"][1]["result"]["steps"]] == [0.9, 0.95, 0.98]
    shown = farm_cli(["show", str(detail["job"]["job_id"])], farm_env)
    table = shown.stdout[shown.stdout.index("prune steps"):]
    assert shown.returncode == 0 and all(f"│ {level} " in table for level in ("0.900", "0.950", "0.980")), shown.stdout
    assert "│ yes " not in table and table.count("│ no ") == 3  # every step trained here
    quantized = json.loads(farm_cli(["submit", "tiny", *TINY, "--sparsity", "0.98", "--scheme", "kmeans", "--bits",
                                     "4", "--format", "json"], farm_env).stdout)
    assert quantized["stages"][1]["status"] == "reused"  # the same prune, taken whole
    again = farm_cli(["show", str(quantized["job"]["job_id"])], farm_env).stdout
    assert again[again.index("prune steps"):].count("│ yes ") == 3
    steps = json.loads(farm_cli(["show", str(quantized["job"]["job_id"]), "--format", "json"], farm_env).stdout)
    assert steps["stages"][1]["from_job"] == detail["job"]["job_id"]  # the 98% job's prune
    assert [(s["reused"], s["from_job"]) for s in steps["prune_steps"]] == [(True, detail["job"]["job_id"])] * 3
    assert [(s["reused"], s["from_job"]) for s in detail["prune_steps"]] == [(False, None)] * 3


def test_every_command_has_help():
    from typer.main import get_command

    from farm.cli.app import app

    def walk(cmd, path):
        assert cmd.help or cmd.short_help, f"`farm {' '.join(path)}` has no help text"
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])


def test_embedded_sweep_summary_says_run_here_not_sent(farm_env, tmp_path, farm_cli):
    """Without a broker nothing is sent: the summary under "2 run here" had a column `sent 2`."""
    path = tmp_path / "here.yaml"
    path.write_text("grid:\n  sparsity: [0.5, 0.6]\nfixed:\n  model: tiny\n  dataset: synthetic\n  device: cpu\n"
                    "  recipe: quick\n  subset: 64\n  epochs: 1\n  retrain_epochs: 1\n")
    submitted = farm_cli(["sweep", "submit", str(path)], farm_env)
    assert submitted.returncode == 0, submitted.stderr
    assert "2 run here" in submitted.stderr and "run here" in submitted.stdout, submitted.stdout
    assert "sent" not in submitted.stdout
    again = farm_cli(["sweep", "resume", "1"], farm_env)
    assert again.returncode == 0 and "run here" in again.stdout and "sent" not in again.stdout, again.stdout
    data = farm_cli(["sweep", "resume", "1", "--format", "json"], farm_env)  # one key for scripts, broker or not
    assert json.loads(data.stdout) == [{"sweep_id": 1, "jobs": 2, "new": 0, "sent": 0}]
