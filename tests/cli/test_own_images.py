"""A user's own images: `farm submit ... --dataset folder:PATH`, on real Fashion-MNIST pictures
written out as PNG files in class folders. The job runs end to end in this process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from farm.models.files import FASHION_FILES, SYSTEM_FASHION_MNIST
from farm.models.idx import read_idx

pytestmark = pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")

CLASSES = {"bag": 8, "sneaker": 7, "trouser": 1}  # easy to tell apart: a few epochs learn them
QUICK = ["--device", "cpu", "--recipe", "quick", "--epochs", "6", "--batch-size", "16",
         "--retrain-epochs", "1", "--finetune-epochs", "0", "--format", "json"]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """parts/train/<class>/*.png (60 each) and parts/val/<class>/*.png (20 each), real images."""
    x = read_idx(SYSTEM_FASHION_MNIST / f"{FASHION_FILES['train_x']}.gz")
    y = read_idx(SYSTEM_FASHION_MNIST / f"{FASHION_FILES['train_y']}.gz")
    root = tmp_path_factory.mktemp("images") / "parts"
    for name, label in CLASSES.items():
        images = x[y == label][:80]
        for split, part in (("train", images[:60]), ("val", images[60:])):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, pixels in enumerate(part):
                Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def images(pictures, tmp_path) -> Path:
    """A copy this test may change."""
    return Path(shutil.copytree(pictures, tmp_path / "parts"))


def _submit(farm, *args):
    code, out, err = farm("submit", *args, *QUICK)
    assert code == 0, err
    return json.loads(out)


def test_a_job_on_a_folder_of_images_learns_them(farm, images):
    detail = _submit(farm, "tiny", "--dataset", f"folder:{images}", "--image-size", "28")
    job, spec = detail["job"], detail["spec"]
    assert job["status"] == "succeeded" and job["dataset"] == f"folder:{images}"
    assert spec["image_size"] == 28 and len(spec["data_hash"]) == 64
    train = next(s for s in detail["stages"] if s["name"] == "train")
    assert train["result"]["accuracy"] > 0.6, train["result"]["accuracy"]  # three classes: chance is a third
    seen = train["result"]["input"]  # what a deployed model's inputs need: the folder's own statistics
    assert seen["channels"] == 1 and seen["size"] == [28, 28] and len(seen["mean"]) == len(seen["std"]) == 1
    pixels = np.concatenate([np.asarray(Image.open(f)) for f in sorted(images.glob("train/*/*.png"))]) / 255
    assert seen["mean"][0] == pytest.approx(pixels.mean(), abs=1e-5)
    assert seen["std"][0] == pytest.approx(pixels.std(), abs=1e-5)
    cached = list((Path(job_home()) / "cache" / "folders").glob("*.pt"))
    assert len(cached) == 1  # decoded once; the prune and quantize stages read the cache


def job_home() -> str:
    from farm import settings

    return str(settings.load().home)


def test_the_default_size_is_32_and_the_model_gets_the_folders_classes(farm, images, tmp_path):
    net = tmp_path / "net.py"
    net.write_text("from torch import nn\n\n"
                   "def build(in_channels, num_classes):\n"
                   "    assert (in_channels, num_classes) == (1, 3), (in_channels, num_classes)\n"
                   "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),\n"
                   "                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),\n"
                   "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")
    detail = _submit(farm, f"{net}:build", "--dataset", f"folder:{images}")
    assert detail["job"]["status"] == "succeeded" and detail["spec"]["image_size"] == 32


def test_a_folder_changed_after_submit_is_not_run_as_if_it_were_the_same(images):
    from farm.errors import FarmError
    from farm.scheduler.inputs import ingest
    from farm.scheduler.spec import JobSpec
    from farm.worker.stages import StageContext

    spec = ingest(JobSpec(model="tiny", dataset=f"folder:{images}", device="cpu", recipe="quick"))
    shutil.copy(images / "train" / "bag" / "000.png", images / "train" / "bag" / "extra.png")
    ctx = StageContext(spec, "cpu", images, callback=lambda e: None)
    with pytest.raises(FarmError, match="changed since this job was submitted"):
        ctx.data


def test_the_same_images_elsewhere_are_the_same_data_but_another_job(farm, images, tmp_path):
    # the path is part of the job (workers read it there); the fingerprint says the data is equal
    a = _submit(farm, "tiny", "--dataset", f"folder:{images}", "--epochs", "0", "--retrain-epochs", "0")
    copy = Path(shutil.copytree(images, tmp_path / "copy"))
    b = _submit(farm, "tiny", "--dataset", f"folder:{copy}", "--epochs", "0", "--retrain-epochs", "0")
    assert a["spec"]["data_hash"] == b["spec"]["data_hash"] and a["job"]["job_id"] != b["job"]["job_id"]


@pytest.mark.parametrize("args, words", [
    (["--dataset", "folder:{images}/absent"], ["absent"]),
    (["--dataset", "folder:{images}", "--image-size", "4"], ["image_size must be from 8 to 1024 pixels, got 4"]),
    (["--dataset", "folder:{images}", "--image-size", "100000"], ["image_size must be from 8 to 1024 pixels"]),
    (["--dataset", "fashion-mnist", "--image-size", "64"], ["image_size scales a folder of images"]),
    (["--dataset", "folder:{images}/train/bag"], ["class"]),
])
def test_bad_folder_input_is_one_line_and_no_job(farm, images, args, words):
    code, out, err = farm("submit", "tiny", *[a.format(images=images) for a in args], *QUICK)
    assert code == 1 and out == "" and err.startswith("farm: error: ") and err.count("\n") == 1, (out, err)
    for w in words:
        assert w in err, err


def test_a_registry_model_too_large_for_the_image_size_is_refused(farm, images):
    code, out, err = farm("submit", "inception_v3", "--dataset", f"folder:{images}", "--image-size", "32", *QUICK)
    assert code == 1 and "needs images of at least 75x75 pixels, but --image-size is 32x32" in err, err


def test_a_folder_too_large_to_hold_is_refused_at_submit(farm, images, monkeypatch):
    from farm.models import folder

    monkeypatch.setattr(folder, "MAX_BYTES", 240 * 28 * 28 * 4 - 1)  # one byte short of the 240 images
    code, out, err = farm("submit", "tiny", "--dataset", f"folder:{images}", "--image-size", "28", *QUICK)
    assert code == 1 and "240 images" in err and "over the 0.0 GiB limit" in err, err
    assert err.count("\n") == 1


def test_a_symlinked_folder_is_kept_as_given(farm, images, tmp_path):
    link = tmp_path / "data"
    link.symlink_to(images)
    detail = _submit(farm, "tiny", "--dataset", f"folder:{link}", "--epochs", "0", "--retrain-epochs", "0")
    assert detail["job"]["dataset"] == f"folder:{link}"  # workers read the path given, not its target now
    code, out, err = farm("results", "--dataset", f"folder:{link}", "--format", "json")
    assert code == 0 and len(json.loads(out)) == 1, err


def _trained_on(images: Path, normalise) -> tuple[Path, float]:
    """A model trained by the user's own script on the folder's pixels as `normalise` maps them
    (a bare ToTensor when None), saved as pytorch-cifar saves it ({'net': ..., 'acc': ...})."""
    import torch

    from farm.compress import TrainConfig, evaluate, train
    from farm.models import get_model
    from farm.models.folder import load_folder

    data = load_folder(images, 28, normalise=normalise)
    torch.manual_seed(0)
    model = get_model("tiny", in_channels=1, num_classes=3)
    train(model, data, TrainConfig(epochs=4, batch_size=16, seed=0), device="cpu")
    path = images.parent / "ckpt.pth"
    torch.save({"net": model.state_dict(), "acc": 0.9, "epoch": 4}, path)
    return path, evaluate(model, data, device="cpu")


def test_a_checkpoint_is_measured_on_images_normalised_as_it_was_trained(farm, images):
    path, accuracy = _trained_on(images, ((0.0,), (1.0,)))  # ToTensor() alone: pixels in 0..1
    args = ["tiny", "--dataset", f"folder:{images}", "--image-size", "28", "--checkpoint", path,
            "--device", "cpu", "--recipe", "quick", "--retrain-epochs", "0", "--format", "json"]  # no --epochs: 0
    code, out, err = farm("submit", *args, "--normalise", "none")
    assert code == 0, err
    detail = json.loads(out)
    train = next(s for s in detail["stages"] if s["name"] == "train")
    assert detail["spec"]["normalise"] == "none" and train["result"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert train["result"]["input"]["mean"] == [0.0] and train["result"]["input"]["classes"] == ["bag", "sneaker", "trouser"]
    # without saying so, the folder's own statistics are used, and the command says so
    code, out, err = farm("submit", *args)
    assert code == 0 and "normalised by the folder's own mean and std" in err, err
    assert json.loads(out)["spec"].get("normalise") is None  # auto: the folder's own statistics


@pytest.mark.parametrize("value, words", [
    ("imagenet", "normalise imagenet gives 3 values, but the folder's images have 1 channel"),
    ("0.5/0", "every std above 0"),
    ("nan/1", "finite"),
    ("lots", "normalise takes auto, none, imagenet or MEAN/STD"),
])
def test_a_bad_normalise_is_one_line(farm, images, value, words):
    code, out, err = farm("submit", "tiny", "--dataset", f"folder:{images}", "--normalise", value, *QUICK)
    assert code == 1 and err.count("\n") == 1 and words in err, err


def test_export_says_how_to_build_and_feed_the_model(farm, images, tmp_path):
    detail = _submit(farm, "tiny", "--dataset", f"folder:{images}", "--image-size", "28", "--epochs", "0",
                     "--retrain-epochs", "0")
    code, out, err = farm("export", detail["job"]["job_id"], "--out", tmp_path / "m.farm")
    assert code == 0, err
    assert "get_model('tiny', in_channels=1, num_classes=3)" in err
    assert "its inputs: 1x28x28, normalised as Normalize(mean=[" in err
    assert "output i is class folder i of bag, sneaker, trouser" in err


def test_every_unreadable_image_is_named_at_once(images):
    from farm.errors import DatasetMissing
    from farm.models.folder import load_folder

    for name in ("train/bag/001.png", "val/trouser/002.png"):
        (images / name).write_bytes(b"not a png")
    with pytest.raises(DatasetMissing, match=r"2 images cannot be read; fix or delete them.*bag/001.png.*trouser/002.png"):
        load_folder(images, 28)


def test_a_folder_given_as_a_dataset_name_is_pointed_at(farm, images):
    code, out, err = farm("submit", "tiny", "--dataset", str(images), *QUICK)
    assert code == 1 and f"(a folder of your images: folder:{images})" in err, err


def test_a_normalise_is_one_spelling_a_meaning(images):
    from farm.scheduler.inputs import ingest
    from farm.scheduler.spec import JobSpec

    def spec(value):
        return ingest(JobSpec(model="tiny", dataset=f"folder:{images}", device="cpu", recipe="quick", normalise=value))

    assert spec("0/1").hash == spec("NONE").hash == spec("none").hash
    assert spec("0.5,0.5,0.5/0.25,0.25,0.25").normalise == "0.5/0.25"
    assert spec(" Auto ").hash == spec(None).hash and spec("auto").normalise is None


def test_images_whose_names_have_brackets_are_named_whole(images):
    from farm.errors import DatasetMissing
    from farm.models.folder import load_folder

    for name in ("train/bag/photo (1).png", "train/bag/photo (2).png"):
        (images / name).write_bytes(b"not a png")
    with pytest.raises(DatasetMissing, match="2 images cannot be read") as e:
        load_folder(images, 28)
    assert "photo (1).png" in str(e.value) and "photo (2).png" in str(e.value)
