"""Datasets held as whole tensors (normalised, NCHW float32), so training can keep them on the GPU.

- fashion-mnist: the IDX .gz files in `root`, else settings.data_dir/fashion-mnist, else
  /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
- cifar10: torchvision's CIFAR-10 from `root` or settings.data_dir (cifar-10-batches-py/);
  downloaded only when the caller passes download=True.
- synthetic: generated from a fixed seed, no files; small and learnable, for tests.
- folder:PATH: the user's own images in class folders (farm.models.folder), scaled to
  `image_size` pixels a side.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from farm import settings
from farm.errors import DatasetMissing, InvalidSpec, UnknownDataset
# SYSTEM_FASHION_MNIST and require_files re-exported: where a notebook (and the tests) look for them
from farm.models.files import (FASHION_FILES, SYSTEM_FASHION_MNIST, cifar_folder, fashion_dir,  # noqa: F401
                               idx_file, require_files)
from farm.models.idx import read_idx
from farm.models.sizes import IMAGE_SIZES, SHAPES

# Per-channel mean/std of the training images, the usual normalisation.
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass
class Dataset:
    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    # (mean, std) per channel, in 0..1 pixel units, that the images were normalised with: what a
    # deployed model's inputs need too (torchvision's Normalize takes them as they are)
    normalise: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    classes: tuple[str, ...] | None = None  # a folder's class names, label i is classes[i]

    def to(self, device: str | torch.device) -> "Dataset":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, train_x=move(self.train_x), train_y=move(self.train_y), test_x=move(self.test_x),
                       test_y=move(self.test_y))

    def subset(self, n: int) -> "Dataset":
        """The first n examples of each split (both splits are shuffled at source)."""
        return replace(self, train_x=self.train_x[:n], train_y=self.train_y[:n], test_x=self.test_x[:n],
                       test_y=self.test_y[:n])


def list_datasets() -> list[str]:
    return sorted(LOADERS)


def load_dataset(name: str, *, root: str | Path | None = None, subset: int | None = None,
                 device: str | torch.device = "cpu", download: bool = False,
                 image_size: int | None = None, normalise=None) -> Dataset:
    """Load a dataset whole; `subset` keeps the first n train and the first n test examples."""
    if name.lower().startswith("folder:"):
        from farm.models import folder  # it builds Datasets: imported here, not in a cycle

        if subset is not None and subset < 1:
            raise InvalidSpec(f"subset must be a positive number of examples, got {subset}")
        # decoded once per folder, size and subset: a job's later stages and other jobs load it at once
        cache = settings.load().home / "cache" / "folders"
        data = folder.load_folder(folder.folder_path(name), image_size or folder.DEFAULT_IMAGE_SIZE,
                                  subset=subset, cache_dir=cache, normalise=normalise)
        return data.to(device)
    if name.lower() not in LOADERS:
        raise UnknownDataset(f"unknown dataset {name!r}; choose from {', '.join(list_datasets())}")
    if subset is not None and subset < 1:
        raise InvalidSpec(f"subset must be a positive number of examples, got {subset}")
    data = LOADERS[name.lower()](Path(root).expanduser() if root else None, download)
    if subset is not None:
        data = data.subset(subset)
    return data.to(device)


def dataset_shape(name: str, image_size: int | None = None) -> tuple[int, int, int]:
    """(image channels, classes, pixels a side) without loading the images: a model can be built
    for a dataset before it is read (a worker's job that waits for another's artifact)."""
    if name.lower().startswith("folder:"):
        from farm.models import folder

        info = folder.scan(folder.folder_path(name))
        return folder.channels(info), info.num_classes, image_size or folder.DEFAULT_IMAGE_SIZE
    channels, classes = SHAPES[name]
    return channels, classes, min(IMAGE_SIZES[name])


def _normalise(images: np.ndarray, stats: tuple) -> Tensor:
    """uint8 NHWC/NHW -> float32 NCHW, normalised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    return ((x - mean) / std).contiguous()


def _read_fashion(path: Path) -> np.ndarray:
    try:
        return read_idx(path)
    except (ValueError, EOFError, OSError, zlib.error) as e:  # bad magic, cut gzip, not gzip at all
        reason = str(e).replace(str(path), "").strip(" :").removeprefix("is ") or type(e).__name__
        raise DatasetMissing(
            f"Fashion-MNIST file {path} is corrupt ({reason}); reinstall it with `apt-get install "
            f"--reinstall dataset-fashion-mnist`, or set FARM_DATA_DIR to a folder holding a good "
            f"fashion-mnist/") from None


def _fashion_mnist(root: Path | None, download: bool) -> Dataset:
    folder = fashion_dir(root)
    raw = {k: _read_fashion(idx_file(folder, stem)) for k, stem in FASHION_FILES.items()}
    return Dataset(
        "fashion-mnist",
        _normalise(raw["train_x"], FASHION_STATS), torch.from_numpy(raw["train_y"].astype(np.int64)),
        _normalise(raw["test_x"], FASHION_STATS), torch.from_numpy(raw["test_y"].astype(np.int64)),
        num_classes=SHAPES["fashion-mnist"][1], in_channels=SHAPES["fashion-mnist"][0],
        input_size=IMAGE_SIZES["fashion-mnist"], normalise=FASHION_STATS)


def _cifar10(root: Path | None, download: bool) -> Dataset:
    import torchvision  # only this loader needs it

    folder = cifar_folder(root, download)
    try:
        train = torchvision.datasets.CIFAR10(str(folder), train=True, download=download)
        test = torchvision.datasets.CIFAR10(str(folder), train=False, download=download)
    except RuntimeError as e:  # torchvision's word for a missing or corrupt copy
        raise DatasetMissing(f"CIFAR-10 in {folder} cannot be read: {e}") from None
    return Dataset(
        "cifar10",
        _normalise(train.data, CIFAR_STATS), torch.tensor(train.targets, dtype=torch.int64),
        _normalise(test.data, CIFAR_STATS), torch.tensor(test.targets, dtype=torch.int64),
        num_classes=SHAPES["cifar10"][1], in_channels=SHAPES["cifar10"][0], input_size=IMAGE_SIZES["cifar10"],
        normalise=CIFAR_STATS)


def _synthetic(root: Path | None, download: bool, *, n_train: int = 1024, n_test: int = 256,
               size: int = IMAGE_SIZES["synthetic"][0], channels: int = SHAPES["synthetic"][0],
               classes: int = SHAPES["synthetic"][1]) -> Dataset:
    """Each class is a fixed random smooth pattern; an example is its pattern, randomly shifted by
    up to 2 px, scaled, plus noise. Learnable by a tiny CNN in a few epochs, not trivially."""
    g = torch.Generator().manual_seed(1234)
    coarse = torch.randn(classes, channels, size // 4, size // 4, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % classes
        y = y[torch.randperm(n, generator=g)]
        x = patterns[y] * (0.5 + torch.rand(n, 1, 1, 1, generator=g))
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        x = torch.stack([torch.roll(xi, (int(s[0]), int(s[1])), dims=(1, 2)) for xi, s in zip(x, shifts)])
        return (x + 0.8 * torch.randn(x.shape, generator=g)).contiguous(), y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, classes, channels, (size, size))


LOADERS = {"fashion-mnist": _fashion_mnist, "cifar10": _cifar10, "synthetic": _synthetic}
