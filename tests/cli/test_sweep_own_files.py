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

    with db.session() as s:
        stored = s.get(Sweep, 1).grid["fixed"]
    assert stored["model"] == f"{folder / 'net.py'}:build"
    assert stored["checkpoint"] == str(folder / "weights" / "net.pt")

    monkeypatch.chdir(tmp_path)  # resume from another folder still finds the files
    code, out, err = farm("sweep", "resume", "1")
    assert code == 0, err


def test_a_sweep_whose_checkpoint_is_missing_names_the_job_and_the_file(farm, tmp_path):
    folder = _sweep_folder(tmp_path)
    (folder / "weights" / "net.pt").unlink()
    code, out, err = farm("sweep", "submit", folder / "sweep.yaml")
    assert code == 1 and err.count("\n") == 1, err
    assert "job (sparsity=0.5, scheme=fp32): checkpoint" in err and "net.pt not found" in err
