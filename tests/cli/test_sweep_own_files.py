"""A sweep over the user's own model file and checkpoint: paths in the file are from the file's
folder, not from wherever `farm sweep submit` runs, and `farm sweep resume` finds them again from
anywhere (the stored grid holds them absolute). Jobs run for real in this process."""

from __future__ import annotations

import json

import torch

from tests.cli.test_own_model import NET


def _sweep_folder(tmp_path):
    from farm.models.user import build_from_source

    folder = tmp_path / "project"
    (folder / "weights").mkdir(parents=True)
    (folder / "net.py").write_text(NET)
    model = build_from_source(NET, "net.py:build", in_channels=3, num_classes=10)
    torch.save(model.state_dict(), folder / "weights" / "net.pt")
    (folder / "sweep.yaml").write_text(
        "name: mine\n"
        "grid:\n  sparsity: [0.5, 0.8]\n  scheme: [fp32, kmeans]\n"
        "fixed:\n  model: net.py:build\n  checkpoint: weights/net.pt\n  dataset: synthetic\n"
        "  bits: 4\n  device: cpu\n  subset: 64\n  retrain_epochs: 1\n  finetune_epochs: 0\n")
    return folder


def test_a_sweep_reads_its_files_from_its_own_folder_and_resumes_from_anywhere(farm, tmp_path, monkeypatch):
    folder = _sweep_folder(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = farm("sweep", "submit", folder / "sweep.yaml", "--format", "json")
    assert code == 0, err
    code, out, err = farm("results", "--sweep", "1", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 4 and {r["model"] for r in rows} == {"net.py:build"}, (out, err)

    from farm import db
    from farm.db.models import Sweep
    from farm.scheduler.inputs import stored as stored_copy

    with db.session() as s:
        stored = s.get(Sweep, 1).grid["fixed"]
    # the files as submitted, by their stored copies: resume re-sends those jobs, whatever happens
    # to the files afterwards
    name, digest = stored["model"].split("@")
    assert name == "net.py:build" and stored_copy(digest).read_text() == NET
    name, digest = stored["checkpoint"].split("@")
    assert name == "net.pt" and stored_copy(digest).read_bytes() == (folder / "weights" / "net.pt").read_bytes()

    (folder / "net.py").unlink()
    (folder / "weights" / "net.pt").unlink()
    code, out, err = farm("sweep", "resume", "1")
    assert code == 0, err


def test_a_sweep_file_submitted_again_after_its_model_changed_is_a_new_sweep(farm, tmp_path):
    folder = _sweep_folder(tmp_path)
    code, out, err = farm("sweep", "submit", folder / "sweep.yaml", "--format", "json")
    assert code == 0, err
    (folder / "net.py").write_text(NET + "\n# tried a new initialisation\n")  # same shapes: the checkpoint fits
    code, out, err = farm("sweep", "submit", folder / "sweep.yaml", "--format", "json")
    assert code == 0, err
    code, out, err = farm("results", "--format", "json")
    by_sweep = {}
    for row in json.loads(out):
        by_sweep.setdefault(row["job_id"] <= 4, []).append(row)
    assert len(json.loads(out)) == 8 and len(by_sweep[True]) == len(by_sweep[False]) == 4
    code, out, err = farm("sweep", "status", "--format", "json")
    assert len(json.loads(out)) == 2, out  # two sweeps, four jobs each


def test_a_sweep_whose_checkpoint_is_missing_names_the_file(farm, tmp_path):
    folder = _sweep_folder(tmp_path)
    (folder / "weights" / "net.pt").unlink()
    code, out, err = farm("sweep", "submit", folder / "sweep.yaml")
    assert code == 1 and err.count("\n") == 1, err
    assert "sweep.yaml: checkpoint weights/net.pt not found" in err


def test_a_sweep_file_cannot_name_the_fields_farm_sets(farm, tmp_path):
    folder = _sweep_folder(tmp_path)
    text = (folder / "sweep.yaml").read_text()
    (folder / "sweep.yaml").write_text(text + "  model_file: " + "0" * 64 + "\n")
    code, out, err = farm("sweep", "submit", folder / "sweep.yaml")
    assert code == 1 and "has model_file, which is not a job field: give the file as the model" in err, err
