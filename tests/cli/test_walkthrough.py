"""What a new user meets on a machine without a GPU, through the real `farm` command: mistakes
come back as the one line on stderr, listings name their columns, a CPU sweep's report says plainly
that nothing was timed."""

import json
import os
import subprocess
import sys

import pytest
import torch

SWEEP = """\
name: cpu-walkthrough
grid:
  sparsity: [0.5, 0.9]
fixed:
  model: tiny
  dataset: synthetic
  device: cpu
  recipe: quick
  subset: 512
  epochs: 1
  retrain_epochs: 1
  finetune_epochs: 1
"""


def _farm(home, *args, data_dir=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_HOME"] = str(home)
    if data_dir is not None:
        env["FARM_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "farm.cli.app", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def corrupt_fashion_mnist(data_dir):
    """A data folder whose Fashion-MNIST files are there but unreadable: found at submit, the job
    fails when it loads them (a failure of a run, not of the spec)."""
    folder = data_dir / "fashion-mnist"
    folder.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").write_bytes(b"not gzip")
    return data_dir


def _only_error_line(r, expected: str):
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("farm: error: ") and r.stderr.count("\n") == 1, repr(r.stderr)
    assert expected in r.stderr


def test_upgrade_to_unknown_revision_is_one_line(tmp_path):
    _only_error_line(_farm(tmp_path, "db", "upgrade", "--revision", "9999"),
                     "cannot upgrade to revision '9999'")


def test_sweep_at_without_broker_prints_only_the_error(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(SWEEP)
    _only_error_line(_farm(tmp_path, "sweep", "submit", grid, "--at", "23:59"), "--at needs a broker")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_gpu_without_gpu_or_broker_is_refused(tmp_path):
    _only_error_line(_farm(tmp_path, "submit", "tiny", "--dataset", "synthetic", "--device", "gpu"),
                     "--device gpu: this machine has no CUDA GPU")
    assert "nothing to show" in _farm(tmp_path, "status").stdout  # no job recorded


@pytest.mark.parametrize("command, first", [("results", "job_id,model,dataset,target_sparsity"),
                                            ("status", "job_id,status,model,dataset")])
def test_empty_listing_as_csv_still_has_its_header(tmp_path, command, first):
    r = _farm(tmp_path, command, "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(first) and r.stdout.count("\n") == 1, repr(r.stdout)


def test_report_of_cpu_sweep_says_nothing_was_timed(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(SWEEP)
    assert _farm(tmp_path, "sweep", "submit", grid).returncode == 0
    out = tmp_path / "report.html"
    r = _farm(tmp_path, "report", "--sweep", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "KiB, 1 figure)" in r.stderr, r.stderr  # the accuracy-vs-size front, which needs no GPU
    text = out.read_text()
    assert "No whole-model timings: no job here has benchmark results" in text
    assert "no batch" not in text and "on the card named in column gpu" not in text


def test_resubmitting_a_finished_job_says_nothing_about_running_it(tmp_path):
    job = ["submit", "tiny", "--dataset", "synthetic", "--device", "cpu", "--subset", 512, "--epochs", 1,
           "--retrain-epochs", 1, "--finetune-epochs", 1]
    first = _farm(tmp_path, *job)
    assert first.returncode == 0 and "quick CPU recipe" in first.stderr, first.stderr
    again = _farm(tmp_path, *job)
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith("job 1 already succeeded for this spec"), repr(again.stderr)
    assert "quick CPU recipe" not in again.stderr and "tiny/synthetic" not in again.stderr


def test_a_failed_job_ends_with_an_error_line(tmp_path):
    r = _farm(tmp_path / "home", "submit", "tiny", "--dataset", "fashion-mnist", "--device", "cpu", "--format", "json",
              data_dir=corrupt_fashion_mnist(tmp_path / "data"))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("farm: error: job 1 failed: Fashion-MNIST file ") and "is corrupt" in last, r.stderr


def test_a_dataset_not_on_this_machine_is_refused_before_the_job_is_recorded(tmp_path):
    """Run here, a job needs its data here: one line at submit (it was a job that failed in its
    first stage), for a sweep too; nothing recorded."""
    home, no_data = tmp_path / "home", tmp_path / "no-data"
    _only_error_line(_farm(home, "submit", "tiny", "--dataset", "cifar10", "--device", "cpu", data_dir=no_data),
                     f"CIFAR-10 not found in {no_data}/cifar-10-batches-py")
    grid = tmp_path / "grid.yaml"
    grid.write_text(SWEEP.replace("  dataset: synthetic\n", "  dataset: cifar10\n"))
    _only_error_line(_farm(home, "sweep", "submit", grid, data_dir=no_data), "CIFAR-10 not found")
    assert "nothing to show" in _farm(home, "status").stdout


def test_resubmitting_a_finished_sweep_prints_no_blank_line(tmp_path):
    grid = tmp_path / "grid.yaml"  # no device or recipe: the sweep says which it chose here
    grid.write_text(SWEEP.replace("  device: cpu\n", "").replace("  recipe: quick\n", ""))
    assert _farm(tmp_path, "sweep", "submit", grid).returncode == 0
    again = _farm(tmp_path, "sweep", "submit", grid)
    assert again.returncode == 0, again.stderr
    assert "0 new, 0 run here" in again.stderr and "\n\n" not in again.stderr, repr(again.stderr)


def test_a_sweep_run_here_says_how_its_jobs_ended_and_fails_when_one_did(tmp_path):
    grid = tmp_path / "grid.yaml"  # Fashion-MNIST's files are corrupt: that job fails when it runs
    grid.write_text(SWEEP.replace("  sparsity: [0.5, 0.9]\n", "  dataset: [synthetic, fashion-mnist]\n")
                    .replace("  dataset: synthetic\n", "  sparsity: 0.5\n").replace("subset: 512", "subset: 64"))
    data = corrupt_fashion_mnist(tmp_path / "data")
    r = _farm(tmp_path, "sweep", "submit", grid, "--format", "json", data_dir=data)
    assert r.returncode == 1 and json.loads(r.stdout)[0]["sent"] == 2, r.stderr  # the row, then the error
    assert "2 jobs, 2 new, 2 run here" in r.stderr and "sweep 1: 1 succeeded, 1 failed" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("farm: error: sweep 1: 1 job did not succeed (farm status --sweep 1; log: ") and \
        "Traceback" not in r.stderr, r.stderr
    again = _farm(tmp_path, "sweep", "resume", "1", data_dir=data)  # runs the failed one here again, with its progress
    assert again.returncode == 1 and "1 of 2 jobs run again here" in again.stderr
    assert "tiny/fashion-mnist" in again.stderr and "train" in again.stderr, again.stderr
    _only_error_line(_farm(tmp_path, "sweep", "cancel", "1"), "nothing to cancel: every job of sweep 1 has finished")
    status = json.loads(_farm(tmp_path, "sweep", "status", "1", "--format", "json").stdout)[0]
    assert status["cancel_requested"] is False  # nothing was cancelled
    table = _farm(tmp_path, "sweep", "status", "1")  # counts: it says where the jobs are
    assert "note: `farm status --sweep 1` lists the jobs, `farm results --sweep 1` their results" in table.stderr
