"""A user compresses their own model: a Python file that builds it, and their trained weights.

The job runs end to end in this process (embedded default) from the file's stored copy; its
identity follows the file's content, not its path; and every way the file or the checkpoint can
be wrong is one line at submit, before anything is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

QUICK = ["--dataset", "synthetic", "--device", "cpu", "--recipe", "quick", "--subset", "128",
         "--retrain-epochs", "1", "--finetune-epochs", "1", "--format", "json"]

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """Two convs and a linear head; its classes follow the dataset."""

    def __init__(self, in_channels=3, num_classes=10, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def build(num_classes):
    return Net(3, num_classes)


def thousand_classes():
    return Net(3, 1000)


def broken(in_channels, num_classes):
    raise RuntimeError("no such backbone: convnext_pico")


def shallow(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture
def net_file(tmp_path) -> Path:
    path = tmp_path / "mine" / "net.py"
    path.parent.mkdir()
    path.write_text(NET)
    return path


def _one_error_line(result, *words: str) -> str:
    code, out, err = result
    assert code == 1 and out == "", (code, out, err)
    assert err.startswith("farm: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def _job_count() -> int:
    from farm import db
    from farm.db.models import Job

    with db.session() as s:
        return s.query(Job).count()


def test_a_model_file_runs_end_to_end_from_its_stored_copy(farm, net_file, tmp_path):
    from farm.compress import load_compressed
    from farm.models.user import build_from_source
    from farm.scheduler.inputs import stored

    code, out, err = farm("submit", f"{net_file}:build", *QUICK, "--scheme", "kmeans", "--bits", "4")
    assert code == 0, err
    detail = json.loads(out)
    job = detail["job"]
    assert job["status"] == "succeeded" and job["model"] == "net.py:build", job
    spec = detail["spec"]
    copy = stored(spec["model_file"])
    assert copy.read_text() == NET and copy.parent.name == "inputs"  # the text the workers run

    # the file may go now: the job's model comes from the store (a resubmit finds the job)
    net_file.unlink()
    code, out, err = farm("export", job["job_id"], "--out", tmp_path / "mine.farm")
    assert code == 0 and "model = build(in_channels=3, num_classes=10) from your net.py" in err, err
    model = build_from_source(copy.read_text(), "net.py:build", in_channels=3, num_classes=10)
    stored_model = load_compressed(tmp_path / "mine.farm")
    stored_model.load_into(model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    zeros = sum(int((c.weight == 0).sum()) for c in convs[1:])  # the first conv is kept dense
    assert zeros / sum(c.weight.numel() for c in convs[1:]) == pytest.approx(0.9, abs=0.02)


def test_the_jobs_identity_is_the_files_content_not_its_path(farm, net_file, tmp_path):
    args = [*QUICK, "--epochs", "0", "--retrain-epochs", "0", "--finetune-epochs", "0"]
    code, out, err = farm("submit", f"{net_file}:build", *args)
    assert code == 0, err
    first = json.loads(out)["job"]["job_id"]

    moved = tmp_path / "copy" / "net.py"
    moved.parent.mkdir()
    moved.write_text(NET)  # same text in another folder: the same job
    code, out, err = farm("submit", f"{moved}:build", *args)
    assert code == 0 and json.loads(out)["job"]["job_id"] == first, err
    assert "already succeeded" in err

    net_file.write_text(NET.replace("width=16", "width=8"))  # edited: a new job
    code, out, err = farm("submit", f"{net_file}:build", *args)
    assert code == 0, err
    assert json.loads(out)["job"]["job_id"] != first and _job_count() == 2


def test_a_relative_model_file_is_found_from_the_current_folder(farm, net_file, monkeypatch):
    monkeypatch.chdir(net_file.parent)
    code, out, err = farm("submit", "net.py:Net", *QUICK, "--epochs", "0", "--retrain-epochs", "0")
    assert code == 0, err
    assert json.loads(out)["job"]["model"] == "net.py:Net"


@pytest.mark.parametrize("ref, words", [
    ("{file}", ["say which builder in", "net.py:NAME", "Net, build, thousand_classes, broken, shallow"]),
    ("{file}:nope", ["has no function or class 'nope'", "Net, build"]),
    ("{file}:thousand_classes", ["gives (2, 1000) for 2 images, not (2, 10)"]),
    ("{file}:broken", ["raised RuntimeError: no such backbone: convnext_pico"]),
    ("{file}:shallow", ["net.py:shallow has no layer to prune", "weights: 0.weight, 3.weight"]),
    ("{dir}/absent.py:build", ["model file", "absent.py not found"]),
])
def test_a_model_file_that_cannot_build_the_model_is_one_line_and_no_job(farm, net_file, ref, words):
    result = farm("submit", ref.format(file=net_file, dir=net_file.parent), *QUICK)
    _one_error_line(result, *words)
    assert _job_count() == 0


def test_a_model_file_that_fails_to_import_names_the_file(farm, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise ImportError('needs timm')\n")
    _one_error_line(farm("submit", f"{bad}:build", *QUICK), "bad.py failed to run", "ImportError: needs timm")


def test_a_model_for_rgb_on_grey_images_is_refused_at_submit(farm, net_file):
    # fashion-mnist is one channel; build() always makes a 3-channel stem
    result = farm("submit", f"{net_file}:build", *QUICK[2:], "--dataset", "fashion-mnist")
    _one_error_line(result, "cannot take the dataset's images (1 channel, 28x28)", "take in_channels as a parameter")


def _trained_checkpoint(tmp_path: Path, wrap) -> tuple[Path, float]:
    """A Net trained for real on the synthetic data, saved as a training script would save it."""
    from farm.compress import TrainConfig, evaluate, train
    from farm.models import load_dataset
    from farm.models.user import build_from_source

    data = load_dataset("synthetic", subset=256)
    torch.manual_seed(1)  # the initial weights too: the accuracy below must not vary run to run
    model = build_from_source(NET, "net.py:build", in_channels=3, num_classes=10)
    train(model, data, TrainConfig(epochs=8, batch_size=32, seed=1), device="cpu")
    path = tmp_path / "trained.pth"
    torch.save(wrap(model.state_dict()), path)
    return path, evaluate(model, data, device="cpu")


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"epoch": 3, "state_dict": sd},  # a training script's wrapper
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DataParallel
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}},  # a Lightning module's self.model
], ids=["plain", "wrapped", "dataparallel", "lightning"])
def test_a_checkpoint_is_the_dense_model_as_trained(farm, net_file, tmp_path, wrap):
    path, accuracy = _trained_checkpoint(tmp_path, wrap)
    code, out, err = farm("submit", f"{net_file}:build", *QUICK, "--subset", "256", "--checkpoint", path,
                          "--retrain-epochs", "0")
    assert code == 0, err
    detail = json.loads(out)
    train = next(s for s in detail["stages"] if s["name"] == "train")
    assert detail["spec"]["epochs"] == 0  # measured as it is, not trained again
    assert train["result"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert accuracy > 0.3, accuracy  # trained: not chance (10 classes), so the equality above means something


def test_a_checkpoint_is_part_of_the_jobs_identity(farm, net_file, tmp_path):
    path, _ = _trained_checkpoint(tmp_path, lambda sd: sd)
    args = [f"{net_file}:build", *QUICK, "--retrain-epochs", "0", "--finetune-epochs", "0"]
    ids = []
    for extra in ([], ["--checkpoint", path]):
        code, out, err = farm("submit", *args, *extra)
        assert code == 0, err
        ids.append(json.loads(out)["job"]["job_id"])
    assert ids[0] != ids[1]
    # the table tells them apart: the setup column of the user's inputs, where they differ
    code, out, err = farm("results", "--format", "csv")
    header, *rows = out.strip().splitlines()
    assert code == 0 and "inputs" in header.split(","), out
    assert sum("ckpt " in row for row in rows) == 1, out


def test_a_checkpoint_of_a_registry_model_works_too(farm, tmp_path):
    from farm.models import get_model

    model = get_model("tiny", in_channels=3, num_classes=10)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    code, out, err = farm("submit", "tiny", *QUICK, "--checkpoint", tmp_path / "tiny.pt", "--retrain-epochs", "0")
    assert code == 0, err


def test_a_checkpoint_that_does_not_fit_is_one_line_and_no_job(farm, net_file, tmp_path):
    from farm.models.user import build_from_source

    other = build_from_source(NET.replace("width=16", "width=8"), "n.py:build", in_channels=3, num_classes=10)
    torch.save(other.state_dict(), tmp_path / "narrow.pt")
    _one_error_line(farm("submit", f"{net_file}:build", *QUICK, "--checkpoint", tmp_path / "narrow.pt"),
                    "checkpoint narrow.pt (for net.py:build) does not fit the model",
                    "shapes differ: features.0.weight (8, 3, 3, 3) vs (16, 3, 3, 3)")

    (tmp_path / "notes.pt").write_text("not weights")
    _one_error_line(farm("submit", f"{net_file}:build", *QUICK, "--checkpoint", tmp_path / "notes.pt"),
                    "checkpoint notes.pt (for net.py:build) cannot be read as torch weights (not a file torch.save wrote)")
    import numpy as np  # a training script's wrapper: a numpy number beside the weights is code to torch

    torch.save({"state_dict": {}, "best": np.float64(0.9)}, tmp_path / "wrapped.pt")
    _one_error_line(farm("submit", f"{net_file}:build", *QUICK, "--checkpoint", tmp_path / "wrapped.pt"),
                    "checkpoint wrapped.pt (for net.py:build) cannot be read as torch weights (it holds a numpy",
                    "scalar object: a whole pickled model, or objects besides tensors")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    _one_error_line(farm("submit", f"{net_file}:build", *QUICK, "--checkpoint", tmp_path / "list.pt"),
                    "holds no state_dict")
    _one_error_line(farm("submit", f"{net_file}:build", *QUICK, "--checkpoint", tmp_path / "absent.pt"),
                    "checkpoint", "absent.pt not found")
    assert _job_count() == 0


def test_a_stored_spec_without_its_file_is_refused_not_guessed(tmp_path):
    from farm.errors import InvalidSpec
    from farm.scheduler.spec import JobSpec

    with pytest.raises(InvalidSpec, match="model file is read at submit"):
        JobSpec(model="net.py:build", dataset="synthetic").resolve()
    with pytest.raises(InvalidSpec, match="was not read"):
        JobSpec(model="tiny", dataset="synthetic", checkpoint="weights.pt").resolve()
    with pytest.raises(InvalidSpec, match="image_size scales a folder"):
        JobSpec(model="tiny", dataset="synthetic", image_size=64).resolve()


def test_specs_without_own_inputs_keep_their_hashes():
    from farm.scheduler.spec import JobSpec

    # hashes from before the new fields (code at ff66f03): a changed one would orphan every stored
    # job and stage artifact, and the next submit of an old job would run it again
    spec = JobSpec().resolve()
    assert spec.hash == "fd3c4faf567907b8bda5f46fcf98669289323805c9865a41f9a66bd7fdfca043"
    assert spec.stage_key("train") == "e2f7933fd024018c7e5d8ef9b216e13d5f7d5758186b229288f84e76de829279"
    guarded = JobSpec(model="vgg16", sparsity=0.98, scheme="kmeans", bits=4, max_drop=1.0).resolve()
    assert guarded.stage_key("quantize") == "c7eeab917594c39c43dad9fdc9554a24fe20f3b8932dafa761a92123ba3af8b5"


SCRIPT = """
import argparse
import dataclasses
import sys

from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()  # a training script's: it must not read farm's command line


@dataclasses.dataclass
class Width:
    channels: int = 8


def build(num_classes: int):
    w = Width().channels
    return nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, num_classes))


def gives_up():
    sys.exit("needs a GPU")
"""


def test_a_training_scripts_file_with_argparse_and_dataclasses_works(farm, tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    code, out, err = farm("submit", f"{tmp_path / 'train.py'}:build", *QUICK, "--epochs", "0", "--retrain-epochs", "0")
    assert code == 0, err
    _one_error_line(farm("submit", f"{tmp_path / 'train.py'}:gives_up", *QUICK),
                    "train.py:gives_up() raised it exited (sys.exit('needs a GPU'))")


def test_stored_inputs_are_readable_by_workers_of_another_user(farm, net_file):
    from farm.scheduler.inputs import stored

    code, out, err = farm("submit", f"{net_file}:build", *QUICK, "--epochs", "0", "--retrain-epochs", "0")
    assert code == 0, err
    assert stored(json.loads(out)["spec"]["model_file"]).stat().st_mode & 0o777 == 0o644


def test_results_filter_by_the_model_file_as_typed(farm, net_file, monkeypatch):
    code, out, err = farm("submit", f"{net_file}:build", *QUICK, "--epochs", "0", "--retrain-epochs", "0")
    assert code == 0, err
    for typed in (f"{net_file}:build", "net.py:build"):
        code, out, err = farm("results", "--model", typed, "--format", "json")
        assert code == 0 and len(json.loads(out)) == 1, (typed, out, err)
    code, out, err = farm("results", "--model", "net.py:Net", "--format", "json")
    assert code == 0 and json.loads(out) == [], err


def test_a_symlinked_model_file_keeps_the_name_it_was_given(farm, net_file, tmp_path):
    link = tmp_path / "mynet.py"
    link.symlink_to(net_file)
    code, out, err = farm("submit", f"{link}:build", *QUICK, "--epochs", "0", "--retrain-epochs", "0")
    assert code == 0 and json.loads(out)["job"]["model"] == "mynet.py:build", err
